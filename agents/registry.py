"""Every agent, listed in one place: `AGENTS`, a tuple of specs (`agents.spec.AgentSpec`), read by the router, the
evals and the CLI. The order is the routing order: the first spec that handles an event's kind takes it; triage,
which handles any kind, comes last so no event is dropped.

Adding an agent is one module holding its spec and one line here (see docs/adding-an-agent.md).

Public names: `AGENTS`, `spec_for`.
"""

from __future__ import annotations

from typing import Any

from pipewarden.agents import cost, quality, retrain, schema_drift, triage
from pipewarden.agents.spec import AgentSpec
from pipewarden.errors import UnknownNameError

AGENTS: tuple[AgentSpec[Any, Any, Any], ...] = (
    schema_drift.SPEC,
    cost.SPEC,
    quality.SPEC,
    retrain.SPEC,
    triage.SPEC,  # handles any kind: last, so no event is dropped
)


def spec_for(name: str) -> AgentSpec[Any, Any, Any]:
    """The registered spec called `name` (UnknownNameError, with the names there are, when none is)."""
    for spec in AGENTS:
        if spec.name == name:
            return spec
    raise UnknownNameError("agent", name, [s.name for s in AGENTS])
