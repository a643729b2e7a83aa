"""Past decisions as knowledge: what people accepted, rejected or saw rolled back, read from the state DB.

The state DB is the truth: a decided proposal's outcome is derived from its status, its decisions and its audit
trail (`decision_record`), never stored twice. The index holds one chunk per decided proposal
(`decision_chunk`), so agents can retrieve similar past decisions and cite them; it is derived data, rebuilt from the
store at any time (`index_decisions`, run by `pipewarden knowledge index` and at the start of `supervise`), so an
indexing failure right after a decision (`index_decision`, called by the agents' shared tail) loses nothing.

Outcomes: `accepted` (approved, and not rolled back since: approved, applying, applied or verified), `rejected`
(a person rejected it, with a reason) and `rolled_back` (approved, applied, then rolled back because verification
failed; re-opened and not decided again). A rejection after a rollback is a rejection. An open or expired
proposal nobody decided has no record.

A chunk's provenance: `source` = `proposal:<id>`, `kind` = decision, `dataset` and `lineage` = the proposal's
dataset, `owner` = who decided, `allowed_roles` = the dataset's readers (its contract's `allowed_roles`; only
`owner` when the dataset has no contract), `updated_at` = when the outcome was decided (the decision, or the
rollback).

Public names: `Outcome`, `DecisionRecord`, `decision_record`, `record_for`, `decision_chunk`, `decision_chunks`,
`index_decision`, `index_records`, `index_decisions`, `index_exists`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import PipewardenError
from pipewarden.fault_signature import fault_signature
from pipewarden.ids import UtcDatetime
from pipewarden.knowledge.documents import Chunk
from pipewarden.knowledge.index import IndexReport, Progress, index_chunks
from pipewarden.knowledge.store import VectorStore
from pipewarden.models import Decision, Proposal, ProposalStatus, Verdict
from pipewarden.ports import Embedder
from pipewarden.settings import get_settings
from pipewarden.store import StateStore

log = logging.getLogger(__name__)

Outcome = Literal["accepted", "rejected", "rolled_back"]
ACCEPTED_STATUSES = frozenset({ProposalStatus.approved, ProposalStatus.applying, ProposalStatus.applied,
                               ProposalStatus.verified})
FALLBACK_READERS = ["owner"]  # a dataset without a contract: only its owners read its decisions


class DecisionRecord(BaseModel):
    """A decided proposal's outcome, as the store tells it."""

    model_config = ConfigDict(frozen=True)
    proposal: Proposal
    outcome: Outcome
    """accepted | rejected | rolled_back (see the module docstring)."""
    actor: str
    """Who decided: the rejecting person, or the (last) approver of an accepted or rolled-back change."""
    reason: str = ""
    """The rejection's reason, or why the change was rolled back; an approval's comment, if any."""
    decided_at: UtcDatetime
    """When the outcome was decided: the deciding decision, or the rollback."""
    verified: bool = False
    """Accepted and verified: the re-run passed."""
    rollbacks: list[str] = Field(default_factory=list)
    """Why each earlier round was rolled back, oldest first."""
    fault: str | None = None
    """The fault signature's label (`dataset kind: fault`), when its event names one."""

    @property
    def source(self) -> str:
        return f"proposal:{self.proposal.id}"

    def describe(self) -> str:
        """The outcome in words: 'rejected by bob: the feed reverts tomorrow'."""
        p = self.proposal
        if self.outcome == "rejected":
            return f"rejected by {self.actor}: {self.reason}"
        if self.outcome == "rolled_back":
            return f"approved by {self.actor}, then rolled back: {self.reason or 'verification failed'}"
        how = "approved and verified" if self.verified else f"approved ({p.status.value})"
        return f"{how} by {self.actor}" + (f": {self.reason}" if self.reason else "")


def decision_record(proposal: Proposal, decisions: list[Decision], audit: list[Any],
                    fault: str | None = None) -> DecisionRecord | None:
    """The outcome of a proposal from its status, decisions and audit trail (entries with `action`, `at` and
    `detail`); None while nobody decided it (open, or expired undecided)."""
    rollbacks = [e for e in audit if e.action == ProposalStatus.rolled_back.value]
    reasons = [str(e.detail.get("reason", "")) for e in rollbacks]
    last = decisions[-1] if decisions else None
    common: dict[str, Any] = {"proposal": proposal, "fault": fault}
    if proposal.status == ProposalStatus.rejected and last is not None and last.verdict == Verdict.reject:
        return DecisionRecord(outcome="rejected", actor=last.actor, reason=last.reason, decided_at=last.decided_at,
                              rollbacks=reasons, **common)
    approvals = [d for d in decisions if d.verdict == Verdict.approve]
    if proposal.status in ACCEPTED_STATUSES and approvals:
        approval = approvals[-1]
        return DecisionRecord(outcome="accepted", actor=approval.actor, reason=approval.reason,
                              decided_at=approval.decided_at, verified=proposal.status == ProposalStatus.verified,
                              rollbacks=reasons, **common)
    if rollbacks and approvals:  # rolled back (and re-opened, or expired since): not accepted
        return DecisionRecord(outcome="rolled_back", actor=approvals[-1].actor, reason=reasons[-1],
                              decided_at=rollbacks[-1].at, rollbacks=reasons, **common)
    return None


def record_for(ref: UUID | str, *, state: StateStore | None = None) -> DecisionRecord | None:
    """The decision record of one stored proposal (None while nobody decided it)."""
    state = state or StateStore()
    proposal = state.get_proposal(ref)
    pid = str(proposal.id)
    try:
        sig = fault_signature(state.get_event(proposal.event_id))
    except PipewardenError:  # the event was pruned: the record still stands, without its fault's label
        sig = None
    return decision_record(proposal, state.decisions_for(pid), state.audit_entries(pid),
                           fault=sig.label if sig else None)


def _readers(dataset: str) -> tuple[list[str], str | None]:
    """The roles that may read a dataset (its contract's `allowed_roles`) and its owner."""
    from pipewarden.policies.contract import load_contract

    try:
        contract = load_contract(dataset)
    except (PipewardenError, OSError):
        return list(FALLBACK_READERS), None
    return list(contract.allowed_roles) or list(FALLBACK_READERS), contract.owner


def decision_chunk(record: DecisionRecord, allowed_roles: list[str] | None = None) -> Chunk:
    """One chunk for a decided proposal: what was proposed for which fault, the outcome, who decided and why.

    `allowed_roles` defaults to the dataset's readers."""
    p = record.proposal
    roles = allowed_roles if allowed_roles is not None else _readers(p.dataset)[0]
    change = p.change.model_dump(mode="json", exclude={"kind"})
    text = (  # the outcome first: a citation's excerpt is the text's beginning
        f"Proposal {p.short_id} for dataset {p.dataset}, {record.describe()}. Proposed by agent {p.agent}"
        + (f" for fault {record.fault}" if record.fault else "") + f": {p.title}. "
        + (f"Rolled back before: {'; '.join(record.rollbacks)}. " if record.rollbacks and
           record.outcome != "rolled_back" else "")
        + f"Change ({p.change.kind}): {change}. Diagnosis: {p.diagnosis}"
    )
    return Chunk.make(
        text=text, source=record.source, kind="decision", key="outcome", dataset=p.dataset, owner=record.actor,
        allowed_roles=roles, updated_at=record.decided_at, lineage=[p.dataset],
        title=f"{record.outcome.replace('_', ' ')}: {p.title}"[:200],
    )


def decision_chunks(*, state: StateStore | None = None, limit: int = 100_000) -> list[Chunk]:
    """A chunk for every decided proposal in the store."""
    state = state or StateStore()
    readers: dict[str, list[str]] = {}
    chunks = []
    for p in state.list_proposals(limit=limit):
        record = record_for(p.id, state=state)
        if record is None:
            continue
        if p.dataset not in readers:
            readers[p.dataset] = _readers(p.dataset)[0]
        chunks.append(decision_chunk(record, readers[p.dataset]))
    return chunks


def index_exists() -> bool:
    """Whether a knowledge index is configured (a server URL) or was built (the local folder)."""
    settings = get_settings()
    return settings.qdrant_url is not None or settings.qdrant_path.exists()


def index_decisions(embedder: Embedder | None = None, store: VectorStore | None = None, *,
                    progress: Progress | None = None, state: StateStore | None = None) -> IndexReport:
    """Index every decided proposal of the store (unchanged ones are skipped): the index rebuilt from the truth."""
    return index_chunks(decision_chunks(state=state), embedder, store, progress=progress)


def index_decision(ref: UUID | str, embedder: Embedder | None = None, store: VectorStore | None = None, *,
                   state: StateStore | None = None) -> IndexReport | None:
    """Index one proposal's decision right after it was decided. Never raises: the decision is stored already and
    `index_decisions` (every `pipewarden knowledge index`, every `supervise` start) picks up what failed here.

    Skipped (None) when nobody decided it yet, or when no index was built and none is given (the next index build
    includes it)."""
    if store is None and not index_exists():
        return None
    try:
        record = record_for(ref, state=state)
    except PipewardenError as exc:
        log.warning("reading the decision on proposal %s failed: %s", str(ref)[:8], exc.message)
        return None
    return index_records([record], embedder, store) if record is not None else None


def index_records(records: list[DecisionRecord], embedder: Embedder | None = None,
                  store: VectorStore | None = None) -> IndexReport | None:
    """Index these decision records (unchanged ones are skipped). Never raises, and None when it failed or when no
    index was built and none is given: the store stays the truth, `index_decisions` adds them later."""
    if not records or (store is None and not index_exists()):
        return None
    try:
        return index_chunks([decision_chunk(r) for r in records], embedder, store)
    except Exception as exc:  # the index is derived data: a failure must never undo or block the decision
        log.warning("indexing the decision(s) on proposal(s) %s failed (the next `pipewarden knowledge index` adds "
                    "them): %s: %s", ", ".join(r.proposal.short_id for r in records), type(exc).__name__, exc)
        return None
