"""Recorded scenarios: a team's decided incidents become its regression suite.

`record(ref, project)` (`pipewarden eval record PROPOSAL_ID`) turns a decided proposal (its event, its batch and
the decision people made) into a scenario of the project: the batch is copied to `<project>/evals/batches/`, the
scenario is written to `<project>/evals/scenarios/recorded.yaml` (recording the same proposal again replaces its
entry), and the expected outcome is the decision's: an approved change is expected again (its kind and the fields
that say what it does), a rejected one must not come back (`outcome: not_change`).

`replay(scenario, home)` is the runner's half: in a fresh home bound to the scenario's project, index the project's
knowledge and hand back the batch to run, as it came.

Public names: `record`, `Recorded`, `replay`, `expected_change`, `RECORDED_FILE`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipewarden.errors import UnknownNameError, UserError
from pipewarden.evals.scenarios import ChangeMatch, Scenario, eval_agents, recorded_dir
from pipewarden.models import ProposalStatus, Verdict, leaf_changes

RECORDED_FILE = "recorded.yaml"
DECIDED = frozenset({ProposalStatus.approved, ProposalStatus.applying, ProposalStatus.applied,
                     ProposalStatus.verified, ProposalStatus.rejected})
# What says what a change does, per kind: the fields an expectation names (the rest is evidence or wording).
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "column_mapping": ("dataset", "renames", "casts"),
    "quarantine": ("dataset", "predicate"),
    "dedupe_rule": ("dataset", "keys"),
    "reingest": ("dataset",),
    "contract_change": ("dataset",),
    "sql_model_patch": ("model",),
    "model_promotion": ("model_name",),
    "no_change": (),
}


class Recorded(BaseModel):
    """What `record` wrote: the scenario (as in the file), the file and the batch's copy."""

    scenario: Scenario
    file: Path
    batch: Path


def expected_change(change: Any) -> ChangeMatch:
    """The change as an expectation: its kind and the fields that say what it does (a change set: its first
    member, which a change set's proposal matches through)."""
    leaf = leaf_changes(change)[0] if getattr(change, "kind", "") == "change_set" else change
    data = leaf.model_dump(mode="json")
    fields = {k: data[k] for k in KEY_FIELDS.get(leaf.kind, ()) if data.get(k) not in (None, {}, [])}
    return ChangeMatch(kind=leaf.kind, fields=fields)


def _copy(source: str, dest: Path) -> None:
    from pipewarden.tools.io import filesystem

    fs, path = filesystem(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with fs.open(path, "rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out)


def record(ref: str, project: Path, *, store: Any = None) -> Recorded:
    """Record decided proposal `ref` (an id or a 4+ character prefix) as a scenario of `project`.

    Raises UserError naming the id and what to do: an unknown id, a proposal nobody decided (or one rolled back and
    open again), an event without a batch, or a batch that is no longer where the event says."""
    import yaml

    from pipewarden.store import StateStore
    from pipewarden.tools.io import exists

    store = store or StateStore()
    try:
        p = store.get_proposal(ref)
    except UnknownNameError as exc:
        raise UserError(f"no proposal {ref!r} to record ({exc.message})",
                        hint="`pipewarden inbox list --all` prints the ids of decided proposals") from exc
    pid = p.short_id
    if p.status not in DECIDED:
        raise UserError(f"proposal {pid} is {p.status.value}: nobody decided it, so there is no decision to record",
                        hint=f"decide it first (`pipewarden inbox approve {pid}` or `pipewarden inbox reject {pid} "
                             "--reason ...`), then record it")
    decisions = [d for d in store.decisions_for(p.id) if d.round == p.round]
    decision = decisions[-1]
    if p.agent not in eval_agents():
        raise UserError(f"proposal {pid} was made by the {p.agent} agent, which the evals do not cover",
                        hint=f"record a proposal of one of: {', '.join(eval_agents())}")
    event = store.get_event(p.event_id)
    source = getattr(event, "batch_path", None)
    if not source:
        raise UserError(f"proposal {pid}'s {event.kind} event carries no batch, so there is nothing to replay",
                        hint="record a proposal whose event names its batch (schema drift, failed checks)")
    if not exists(source):
        raise UserError(f"proposal {pid}'s batch {source} is not there any more",
                        hint=f"restore the file (or the batch storage it was in), then run `pipewarden eval record "
                             f"{pid}` again")
    scenario_id = f"rec-{pid}"
    folder = recorded_dir(project)
    batch = folder / "batches" / f"{scenario_id}{Path(str(source)).suffix or '.parquet'}"
    _copy(str(source), batch)
    approved = decision.verdict == Verdict.approve
    reason = f": {decision.reason}" if decision.reason else ""
    entry: dict[str, Any] = {
        "id": scenario_id,
        "agent": p.agent,
        "description": f"{p.title} ({'approved' if approved else 'rejected'} by {decision.actor} "
                       f"{decision.decided_at:%Y-%m-%d}{reason})",
        "dataset": p.dataset,
        "batch": str(batch.relative_to(folder)),
        "recorded": {"proposal_id": str(p.id), "verdict": decision.verdict.value, "actor": decision.actor,
                     "reason": decision.reason, "decided_at": decision.decided_at.isoformat(),
                     "event_kind": event.kind},
        "expect": {"outcome": "change" if approved else "not_change",
                   "change": expected_change(p.change).model_dump(mode="json")},
        "tags": ["recorded", "approved" if approved else "rejected"],
    }
    scenario = Scenario.model_validate(entry)  # what the file will say is a valid scenario
    file = folder / "scenarios" / RECORDED_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else None
    entries = [e for e in (doc or {}).get("scenarios", []) if e.get("id") != scenario_id]
    header = ("# Scenarios recorded from this project's decided proposals (`pipewarden eval record ID`); "
              "`pipewarden eval` runs them\n# beside the built-in catalogue. Batches are under ../batches/.\n")
    file.write_text(header + yaml.safe_dump({"scenarios": [*entries, entry]}, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return Recorded(scenario=scenario, file=file, batch=batch)


def replay(scenario: Scenario, home: Path) -> tuple[Any, Path, dict[str, str]]:
    """In the recorded scenario's fresh `home`: the batch as it came (a DataFrame), its copy under the home's
    `incoming/`, and the settings that bind the home to the scenario's project. Indexes the project's knowledge."""
    from pipewarden.evals.prereqs import pipewarden_home
    from pipewarden.tools.io import read_table

    assert scenario.batch is not None and scenario.project is not None
    source = Path(scenario.batch)
    if not source.is_file():
        raise UserError(f"recorded scenario {scenario.id}: its batch {source} is missing",
                        hint="record the proposal again (`pipewarden eval record ID`) or restore the file")
    path = home / "incoming" / source.name
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    env = {"PIPEWARDEN_PROJECT": scenario.project}
    with pipewarden_home(home, env):
        from pipewarden.flows.knowledge_sync import sync_knowledge

        sync_knowledge()
        batch = read_table(path)
    return batch, path, env
