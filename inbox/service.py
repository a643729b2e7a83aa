"""The decision service: the one way the CLI and the web inbox approve or reject a proposal.

A decision is stored first, in one transaction with its audit entry (the kernel store does that); only then is
the agent's graph resumed, through the kernel's `Resumer` port, so the inbox never imports `agents/`. If resuming
fails, the decision stays stored, the failure is written to the audit log, and `resume_decided` (or the
supervisor) can resume it later.
"""

from __future__ import annotations

import getpass
import logging
import os
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from pipewarden.audit import AuditEntry
from pipewarden.errors import NotApproved, UserError
from pipewarden.events import Event
from pipewarden.models import OPEN_STATUSES, Decision, Proposal, ProposalStatus, Verdict
from pipewarden.ports import resumer as load_resumer
from pipewarden.store import StateStore

log = logging.getLogger(__name__)

Via = Literal["cli", "web", "slack"]
ResumeState = Literal["not_requested", "scheduled", "resumed", "failed"]

# The statuses in which an approved proposal still waits for its graph to finish applying it.
RESUMABLE_STATUSES = frozenset({ProposalStatus.approved, ProposalStatus.applying, ProposalStatus.applied})
# The statuses in which the page shows "applying..." and refreshes itself.
IN_FLIGHT_STATUSES = frozenset({ProposalStatus.approved, ProposalStatus.applying, ProposalStatus.applied})
RESUME_FAILED_ACTION = "resume_failed"
INBOX_ACTOR = "inbox"


class DecisionOutcome(BaseModel):
    """What deciding (and possibly resuming) a proposal ended with."""

    decision: Decision = Field(description="The stored human decision.")
    proposal: Proposal = Field(description="The proposal as it ended: approved, rejected, verified, rolled_back...")
    resume: ResumeState = Field(
        default="not_requested",
        description="not_requested (reject, or resume=False), scheduled (in the background), resumed or failed.",
    )
    resume_error: str | None = Field(
        default=None, description="Why resuming failed; the decision stays stored and can be resumed again."
    )

    @property
    def ok(self) -> bool:
        return self.resume != "failed"


class ProposalView(BaseModel):
    """Everything a page or `inbox show` displays about one proposal."""

    proposal: Proposal
    event: Event | None = None
    decisions: list[Decision] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)

    @property
    def resume_error(self) -> str | None:
        """The last resume failure, if nothing happened to the proposal since."""
        if self.proposal.status not in IN_FLIGHT_STATUSES or not self.audit:
            return None
        last = self.audit[-1]
        if last.action == RESUME_FAILED_ACTION:
            return str(last.detail.get("error", "unknown error"))
        return None


def default_actor() -> str:
    """Who is deciding from the command line: `PIPEWARDEN_USER`, or else the OS user name."""
    name = os.environ.get("PIPEWARDEN_USER", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:  # no passwd entry and no LOGNAME/USER in a bare container
        raise UserError(
            "cannot tell who is deciding: no PIPEWARDEN_USER and no OS user name",
            hint="set PIPEWARDEN_USER=your-name or pass --as YOUR_NAME",
        ) from exc


def _actor(actor: str | None) -> str:
    name = (actor if actor is not None else default_actor()).strip()
    if not name:
        raise UserError("the deciding person's name is empty", hint="give your name (--as YOUR_NAME)")
    return name


def approve(
    ref: str | UUID,
    actor: str | None = None,
    *,
    via: Via = "cli",
    reason: str = "",
    resume: bool = True,
    store: StateStore | None = None,
) -> DecisionOutcome:
    """Approve a proposal (full id or a 4+ character prefix) as `actor`, then resume its agent's graph.

    The decision is stored before anything resumes. With `resume=False` the caller resumes later
    (`resume_decided`), e.g. in a background task. Raises NotApproved for a system identity,
    InvalidTransition for a proposal that is not open, UnknownNameError for an unknown id.
    """
    store = store or StateStore()
    decision = store.decide(ref, Verdict.approve, _actor(actor), reason, via=via)
    if not resume:
        return DecisionOutcome(decision=decision, proposal=store.get_proposal(decision.proposal_id))
    return _resume(store, decision)


def reject(
    ref: str | UUID,
    actor: str | None = None,
    reason: str = "",
    *,
    via: Via = "cli",
    resume: bool = True,
    store: StateStore | None = None,
) -> DecisionOutcome:
    """Reject a proposal as `actor`; a rejection needs a reason (it teaches the next agent why).

    Then the agent's graph is resumed so it ends; nothing is applied.
    """
    store = store or StateStore()
    if not reason.strip():
        raise UserError(f"rejecting proposal {str(ref)[:8]} needs a reason", hint="pass --reason 'why'")
    decision = store.decide(ref, Verdict.reject, _actor(actor), reason, via=via)
    if not resume:
        return DecisionOutcome(decision=decision, proposal=store.get_proposal(decision.proposal_id))
    # Resuming a rejected proposal only lets its graph end (no change is applied), so no thread stays waiting.
    return _resume(store, decision)


def resume_decided(ref: str | UUID, *, store: StateStore | None = None) -> DecisionOutcome:
    """Resume the graph of an approved proposal whose resume has not finished (or failed earlier).

    Raises NotApproved if no human approved it, and UserError if it already ended (verified, rolled back...).
    """
    store = store or StateStore()
    proposal = store.get_proposal(ref)
    decision = store.approved_decision(proposal.id)
    if decision is None:
        raise NotApproved(
            f"proposal {proposal.short_id} has no approving decision; there is nothing to resume",
            hint="approve it first: pipewarden inbox approve ID",
        )
    if proposal.status not in RESUMABLE_STATUSES:
        raise UserError(
            f"proposal {proposal.short_id} is {proposal.status.value}; only approved proposals that have not "
            "finished applying can be resumed",
            hint="run `pipewarden inbox show ID` to see its history",
        )
    return _resume(store, decision)


def _resume(store: StateStore, decision: Decision) -> DecisionOutcome:
    """Call the Resumer port for a stored decision; a failure is audited and returned, never raised."""
    pid = str(decision.proposal_id)
    try:
        load_resumer()(pid)
    except Exception as exc:  # any failure of the graph must leave the stored decision usable
        error = f"{type(exc).__name__}: {exc}"
        log.exception("resuming proposal %s failed; the decision stays stored", pid[:8])
        store.record(RESUME_FAILED_ACTION, INBOX_ACTOR, {"error": error[:2000]}, proposal_id=pid)
        return DecisionOutcome(
            decision=decision, proposal=store.get_proposal(pid), resume="failed", resume_error=error
        )
    # Re-read: the store holds what was committed, whatever copy the resumer returned.
    return DecisionOutcome(decision=decision, proposal=store.get_proposal(pid), resume="resumed")


def view(ref: str | UUID, *, store: StateStore | None = None) -> ProposalView:
    """Load a proposal with its event, decisions and audit trail."""
    store = store or StateStore()
    proposal = store.get_proposal(ref)
    pid = str(proposal.id)
    try:
        event: Event | None = store.get_event(proposal.event_id)
    except UserError:  # the outbox row is gone (pruned); the proposal is still worth showing
        event = None
    return ProposalView(
        proposal=proposal, event=event, decisions=store.decisions_for(pid), audit=store.audit_entries(pid)
    )


def queue(*, store: StateStore | None = None, limit: int = 1000) -> list[Proposal]:
    """Proposals for an inbox: open ones (pending, needs a human) first, newest first, then the others."""
    store = store or StateStore()
    proposals = store.list_proposals(limit=limit)
    open_ = [p for p in proposals if p.status in OPEN_STATUSES]
    rest = sorted((p for p in proposals if p.status not in OPEN_STATUSES), key=lambda p: p.updated_at, reverse=True)
    return open_ + rest
