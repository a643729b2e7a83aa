"""Learning from decisions: what people decided on the same fault before shapes the proposal an agent submits.

The shared tail runs `heed` on every drafted proposal, whichever agent drafted it, just before `submit`:

1. Precedents: every earlier proposal for the same fault signature (`pipewarden.fault_signature`: dataset, kind,
   drifted schema fingerprint or failing checks), read from the state DB (`StateStore.proposals_for_fault`) with its
   outcome (`knowledge.decisions.record_for`: accepted, rejected with its reason, rolled back). An exact match in
   the store, not a similarity guess: this is what refusals rest on.
2. Citations: each precedent the agents' role may read is cited (its decision chunk, score 1.0, indexed now if
   it was not yet), and similar past decisions on the same dataset are retrieved from the knowledge index (kind
   `decision`, read as the agents' role, under access and freshness) and cited too.
3. Never the same rejected change again: a change identical (`change_identity`: the change without what belongs
   to one load, such as a quarantine's load id and row counts) to one a person rejected for this fault is not
   proposed (unless people accepted the same change for it later: a change's latest outcome counts). The agent's next alternative is (its `alternatives` hook: proven proposals in the planner's order);
   with none left, the proposal becomes "needs a human" and names the rejected proposal that blocked it.
4. Prefer what was accepted: among the drafted change and the alternatives, one identical to a change people
   accepted for this fault comes first; one that was rolled back comes last (a rollback is not an acceptance).
   Only proven changes are chosen: an accepted change the agent did not draft again for this batch is cited, not
   reused unproven.

Public names: `change_identity`, `precedents_for`, `precedent_citation`, `heed`, `make_heed`, `Alternatives`,
`READER_ROLE`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from pipewarden.fault_signature import fault_signature
from pipewarden.knowledge.decisions import DecisionRecord, decision_chunk, index_records, record_for
from pipewarden.models import Citation, DryRun, NoChange, Proposal, ProposalStatus, Risk
from pipewarden.store import StateStore

log = logging.getLogger(__name__)

READER_ROLE = "engineer"  # the role agents read the knowledge index as
SIMILAR_LIMIT = 3

# What a change carries that belongs to the one load it was drafted for, not to the change a person judged.
PER_LOAD_FIELDS: dict[str, frozenset[str]] = {
    "column_mapping": frozenset(),
    "sql_model_patch": frozenset({"base_sql", "reason"}),
    "quarantine": frozenset({"load_id", "rows", "batch_rows", "reason"}),
    "reingest": frozenset({"load_id", "source", "reason"}),
    "dedupe_rule": frozenset(),
    "contract_change": frozenset({"summary"}),
    "model_promotion": frozenset({"from_version", "run_id"}),
}

Alternatives = Callable[[dict[str, Any]], list[Proposal]]
"""An agent's hook: given the graph state, its other proven proposals for the fault, in the planner's order."""


def _identity_of(change: dict[str, Any]) -> Any:
    kind = change.get("kind")
    if kind == "change_set":
        return ["change_set", [_identity_of(c) for c in change.get("changes", [])]]
    body = {k: v for k, v in change.items() if k not in PER_LOAD_FIELDS.get(str(kind), frozenset())}
    if kind == "contract_change":
        body["contract"] = {k: v for k, v in (body.get("contract") or {}).items() if k != "version"}
    if kind == "sql_model_patch":
        body["sql"] = " ".join(str(body.get("sql", "")).split()).rstrip(";").lower()
    if kind == "quarantine":
        body["predicate"] = " ".join(str(body.get("predicate", "")).split())
    return body


def change_identity(change: Any) -> str | None:
    """What makes two changes the same change for a person: its JSON without the fields of one load (None for
    `no_change`, which is never the same as anything)."""
    if change is None or change.kind == "no_change":
        return None
    return json.dumps(_identity_of(change.model_dump(mode="json")), sort_keys=True)


def precedents_for(event: Any, *, exclude: Any = None, state: StateStore | None = None) -> list[DecisionRecord]:
    """The decided proposals for the same fault signature as `event`, oldest first (none for an event whose kind
    names no fault)."""
    sig = fault_signature(event)
    if sig is None:
        return []
    state = state or StateStore()
    records = [record_for(p.id, state=state) for p in state.proposals_for_fault(sig, exclude=exclude)]
    return [r for r in records if r is not None]


def precedent_citation(record: DecisionRecord, role: str = READER_ROLE) -> Citation | None:
    """The citation of a precedent: its decision chunk, as the index holds it, at score 1.0 (an exact match); None
    when `role` may not read the dataset's decisions (a precedent still counts, it is just not cited)."""
    from pipewarden.knowledge.retrieval import to_citation
    from pipewarden.knowledge.store import Hit

    chunk = decision_chunk(record)
    return to_citation(Hit(chunk=chunk, score=1.0)) if role in chunk.allowed_roles else None


def _similar(drafted: Proposal, fault: str | None) -> list[Citation]:
    """Similar past decisions on the dataset from the index (none when no index was built)."""
    from pipewarden.knowledge.retrieval import cite

    query = f"{drafted.dataset} {fault or ''} {drafted.title}"
    return cite(query, role=READER_ROLE, limit=SIMILAR_LIMIT, kinds=["decision"], dataset=drafted.dataset)


def _line(r: DecisionRecord) -> str:
    return f"proposal {r.proposal.short_id} ({r.proposal.title}): {r.describe()}"


def _needs_human(drafted: Proposal, blocker: DecisionRecord) -> Proposal:
    why = (f"the change it found ({drafted.title}) was rejected for this fault on proposal "
           f"{blocker.proposal.short_id} by {blocker.actor}: {blocker.reason}; no other proven change is left")
    dry = drafted.dry_run
    return drafted.model_copy(update={
        "change": NoChange(reason=why),
        "status": ProposalStatus.needs_human, "risk": Risk.high,
        "title": f"{drafted.dataset}: needs a human: the only change found was rejected before "
                 f"(proposal {blocker.proposal.short_id})"[:200],
        "dry_run": DryRun(before=dry.before, after=dry.before, notes=[why]) if dry is not None else None,
        "tried": [*drafted.tried, f"{drafted.title}: rejected on proposal {blocker.proposal.short_id} by "
                                  f"{blocker.actor}: {blocker.reason}"],
    })


def heed(drafted: Proposal, records: list[DecisionRecord], alternatives: Callable[[], list[Proposal]],
         similar: list[Citation] | None = None) -> Proposal:
    """The proposal to submit, given what people decided on this fault before (see the module docstring).

    `alternatives` is called only when the drafted change is not the one to submit as it is (rejected before, or
    an accepted or rolled-back change may rank differently)."""
    latest: dict[str, DecisionRecord] = {}  # per change, its latest outcome: people may change their minds
    for r in sorted(records, key=lambda r: r.decided_at):
        if (k := change_identity(r.proposal.change)) is not None:
            latest[k] = r
    rejected = {k: r for k, r in latest.items() if r.outcome == "rejected"}
    accepted = {k: r for k, r in latest.items() if r.outcome == "accepted"}
    failed = {k: r for k, r in latest.items() if r.outcome == "rolled_back"}
    chosen, note = drafted, ""
    key = change_identity(drafted.change)
    if key is not None and (key in rejected or key in failed or (accepted and key not in accepted)):
        candidates: dict[str, Proposal] = {key: drafted}
        for alt in alternatives():
            if (k := change_identity(alt.change)) is not None:
                candidates.setdefault(k, alt)
        admissible = [(k, p) for k, p in candidates.items() if k not in rejected]
        if not admissible:
            chosen = _needs_human(drafted, rejected[key])
        else:
            k, chosen = min(admissible, key=lambda kp: 0 if kp[0] in accepted else 2 if kp[0] in failed else 1)
            first = f"The planner's first choice ({drafted.title})"
            if k != key and k in accepted:
                note = (f"The change accepted for this fault on proposal {accepted[k].proposal.short_id} is "
                        f"preferred to the planner's first choice ({drafted.title}).")
            elif k != key and key in rejected:
                r = rejected[key]
                note = (f"{first} was rejected for this fault on proposal {r.proposal.short_id} by {r.actor}: "
                        f"{r.reason}; this is its next alternative.")
            elif k != key:
                note = (f"{first} was rolled back on proposal {failed[key].proposal.short_id} "
                        f"({failed[key].reason}); this is its next alternative.")
            elif k in failed:
                note = (f"The same change was rolled back on proposal {failed[k].proposal.short_id} "
                        f"({failed[k].reason}); no other proven change was found.")
    cites: dict[str, Citation] = {}
    exact = [c for r in records if (c := precedent_citation(r)) is not None]
    for c in [*exact, *(similar or []), *chosen.citations]:
        cites.setdefault(c.chunk_id, c)
    if not records:
        return chosen.model_copy(update={"citations": list(cites.values())})
    history = "\n".join(f"- {_line(r)}" for r in records)
    diagnosis = f"{chosen.diagnosis}\n\nPast decisions on this fault:\n{history}" + (f"\n\n{note}" if note else "")
    return chosen.model_copy(update={"citations": list(cites.values()), "diagnosis": diagnosis})


def make_heed(alternatives: Alternatives | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The graph node between an agent's last step and `submit` (see the module docstring). Pure over the store
    and the state, so re-running it after a crash gives the same proposal."""

    def heed_node(state: dict[str, Any]) -> dict[str, Any]:
        if not state.get("proposal"):
            return {}
        drafted = Proposal.model_validate(state["proposal"])
        store = StateStore()
        event = store.get_event(state["event_id"])
        records = precedents_for(event, exclude=drafted.id, state=store)
        index_records(records)  # what it cites is in the index (a decision whose indexing failed is added now)
        sig = fault_signature(event)
        similar = _similar(drafted, sig.label if sig else None)
        proposal = heed(drafted, records, lambda: alternatives(state) if alternatives else [], similar)
        if records:
            log.info("proposal %s: %d past decision(s) on fault %s", proposal.short_id, len(records),
                     sig.label if sig else "?")
        return {"proposal": proposal.model_dump(mode="json")}

    return heed_node
