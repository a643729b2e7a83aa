"""Routing is data: an ordered tuple of routes, each an event kind and the agent graph that handles it, read from
the registry (`agents.registry.AGENTS`: one route per kind a spec handles, in the registry's order).

The first route whose kind matches wins; the triage agent catches the rest so no event is dropped.
`warm_up()` loads what every route's first event would otherwise pay for, once per process, before it claims.

Public names: `Route`, `ROUTES`, `routes`, `route`, `first_route`, `route_for_agent`, `warm_up`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from pipewarden.agents.graph import build_graph
from pipewarden.agents.registry import AGENTS
from pipewarden.agents.spec import AgentSpec
from pipewarden.errors import UnknownNameError
from pipewarden.events import Event


class Route(NamedTuple):
    kind: str  # an event kind, or "*" for any
    agent: str
    build: Callable[..., Any]  # build(checkpointer) -> the agent's compiled LangGraph graph


def routes(agents: tuple[AgentSpec[Any, Any, Any], ...]) -> tuple[Route, ...]:
    """One route per event kind each spec handles, in the specs' order; each builds the spec's graph."""
    return tuple(Route(kind, spec.name, functools.partial(build_graph, spec)) for spec in agents for kind in spec.handles)


ROUTES: tuple[Route, ...] = routes(AGENTS)


def first_route(event: Event, table: tuple[Route, ...]) -> Route:
    """The first route in `table` whose kind is the event's (or `*`)."""
    for r in table:
        if r.kind in (event.kind, "*"):
            return r
    raise UnknownNameError("event kind", event.kind, [r.kind for r in table])


def route(event: Event) -> Route:
    """The registered agent for the event: the first whose kinds include the event's; triage catches the rest."""
    return first_route(event, ROUTES)


def route_for_agent(agent: str) -> Route:
    for r in ROUTES:
        if r.agent == agent:
            return r
    raise UnknownNameError("agent", agent, [r.agent for r in ROUTES])


def warm_up(*, embedder: bool = True) -> dict[str, float]:
    """Load, once per process, what an agent's first event would otherwise wait for: every registered agent's graph
    and LangGraph (each graph compiled once, without a checkpointer), the knowledge index's and the OpenAI
    planner's client libraries, the MiniLM embedder and the schema matcher's solver. A worker calls it before it
    claims, so the first event costs what the later ones do.
    Returns the seconds each part took. Nothing here reads or writes the state DB, the index or the warehouse."""
    import time

    took: dict[str, float] = {}
    for r in ROUTES:
        if r.agent in took:
            continue
        t0 = time.perf_counter()
        r.build(None)
        took[r.agent] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    import qdrant_client  # noqa: F401  # the citations' store client: imported once here, not on the first event

    took["qdrant_client"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    import openai  # noqa: F401  # the OpenAI planner's client (an endpoint may be configured per event)

    took["openai"] = round(time.perf_counter() - t0, 3)
    if embedder:
        import pandas as pd

        from pipewarden.runtime import current
        from pipewarden.tools.schema_match import match_columns

        t0 = time.perf_counter()
        model = current().embedder()  # the runtime's: the one its agents will use
        model.embed(["warm up"])
        took["embedder"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()  # the schema matcher once on a one-column table: its assignment solver loads
        match_columns(pd.DataFrame({"warm": [1]}), pd.DataFrame({"up": [1]}), embedder=model)
        took["schema_match"] = round(time.perf_counter() - t0, 3)
    return took
