"""The decision service: the one way the CLI, the web inbox and Slack approve or reject a proposal.

`decide` checks the decision against the approval rules (`policies.approval`: identity, role on the dataset,
separation of duties, expiry, the two-person rule) inside the store's transaction, stores it atomically with its
audit entry, and moves the proposal to approved only when the rule is satisfied. The stored decision is itself the
durable request to resume the agent's graph (the store marks it in the same transaction), so a crash after the
answer loses nothing: the supervisor's worker (`pipewarden supervise`) picks it up under a lease.

Two ways on from there. `hand_off` (the web inbox and Slack: answer at once) stores, audits, notifies and
returns; the worker applies, re-runs and verifies. `decide(..., resume=True)` (the CLI's `inbox approve`) also
resumes the graph in this process through the kernel's `Resumer` port (so the inbox never imports `agents/`),
under the same lease the worker would take: if a worker holds it already, nothing runs twice and the outcome says
`in_progress`. If resuming fails, the decision stays stored, the failure is audited, and the worker retries it
with backoff. After every decision and status change the `Notifier` port is called (Slack), guarded.

`on_proposal_created` (the kernel's ProposalHook port, run by an agent right after it stores a proposal) lets
policy approve the low-risk kinds its rules allow, as actor "policy" via "policy", audited, or earned autonomy
(`policies.autonomy`) approve a fault people approved N times running, as "pipewarden:autonomy"; `expire_stale` moves
open proposals past their `expires_at` to expired.
"""

from __future__ import annotations

import getpass
import logging
import os
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from pipewarden import faults
from pipewarden.audit import AuditEntry
from pipewarden.errors import Expired, Forbidden, InvalidTransition, NotApproved, UserError
from pipewarden.events import Event
from pipewarden.leases import LeaseHeld
from pipewarden.models import AUTONOMY_ACTOR, OPEN_STATUSES, POLICY_ACTOR, Decision, Proposal, ProposalStatus, Verdict
from pipewarden.policies.approval import Requirement, decision_gate, policy_may_approve, requirement, rule_for
from pipewarden.policies.approvers import Approvers
from pipewarden.policies.autonomy import autonomy_gate, earned
from pipewarden.ports import notify
from pipewarden.ports import resumer as load_resumer
from pipewarden.store import Occurrence, StateStore

log = logging.getLogger(__name__)

Via = Literal["cli", "web", "slack", "mcp"]
ResumeState = Literal["not_requested", "handed_off", "scheduled", "in_progress", "resumed", "failed"]

# The statuses in which an approved proposal still waits for its graph to finish applying it (rolled back: a crash
# between the rollback and the re-opening).
RESUMABLE_STATUSES = frozenset({ProposalStatus.approved, ProposalStatus.applying, ProposalStatus.applied,
                                ProposalStatus.rolled_back})
# The statuses in which the page shows "applying..." and refreshes itself.
IN_FLIGHT_STATUSES = frozenset({ProposalStatus.approved, ProposalStatus.applying, ProposalStatus.applied})
RESUME_FAILED_ACTION = "resume_failed"
INBOX_ACTOR = "inbox"
EDITED_ACTION = "edited"  # the audit action of a person editing a proposal's change


class DecisionOutcome(BaseModel):
    """What deciding (and possibly resuming) a proposal ended with."""

    decision: Decision = Field(description="The stored human decision.")
    proposal: Proposal = Field(description="The proposal as it ended: approved, rejected, verified, rolled_back...")
    resume: ResumeState = Field(
        default="not_requested",
        description="not_requested (still open, or resume=False), handed_off (stored; the worker resumes it), "
        "in_progress (a worker holds the lease and is resuming it), resumed (here, to its end) or failed.",
    )
    resume_error: str | None = Field(
        default=None, description="Why resuming failed; the decision stays stored and can be resumed again."
    )
    worker: str | None = Field(default=None, description="The worker resuming it, when resume is in_progress.")
    requirement: Requirement | None = Field(
        default=None, description="What the proposal still needs after this decision (e.g. a second approver)."
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
    requirement: Requirement | None = Field(default=None, description="Who must still approve, under which rule.")
    occurrences: list[Occurrence] = Field(
        default_factory=list, description="The events (loads) of its fault it covers: its own first, then repeats.")

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


def edited_entry(audit: list[Any]) -> Any | None:
    """The latest `edited` audit entry of a proposal, if a person edited it."""
    edits = [e for e in audit if e.action == EDITED_ACTION]
    return edits[-1] if edits else None


def edit_refusal(proposal: Any, audit: list[Any]) -> str | None:
    """Why an edited proposal cannot be approved yet (its new dry-run does not pass), or None."""
    if edited_entry(audit) is None or proposal.status != ProposalStatus.pending:
        return None
    dr = proposal.dry_run
    if dr is None or not dr.after.passed:
        return (f"proposal {proposal.short_id} was edited and its new dry-run does not pass on the failing batch, "
                "so it cannot be approved")
    return None


def _edit_gate(ref: str | UUID, store: StateStore) -> None:
    """Refuse (409) approving an edited proposal whose new dry-run does not pass. Reads the audit trail only when
    the dry-run does not pass (an agent's own proposals always pass theirs)."""
    p = store.get_proposal(ref)
    if p.status != ProposalStatus.pending or (p.dry_run is not None and p.dry_run.after.passed):
        return
    refusal = edit_refusal(p, store.audit_entries(str(p.id)))
    if refusal:
        raise InvalidTransition(refusal, hint="edit it again until the dry-run passes, or reject it with a reason")


class _DryRunNotPassing(Exception):
    """Raised inside the deciding transaction (rolling it back) when an approval meets a pending proposal whose
    dry-run does not pass: `decide` then runs the edit gate, which reads the audit trail, before deciding."""


def _passing_first(gate: Any) -> Any:
    """`gate`, run only for proposals whose dry-run passes (or that are no longer pending: the gate ignores those)."""

    def policy(proposal: Proposal, decisions: list[Decision], decision: Decision) -> bool:
        if proposal.status == ProposalStatus.pending and (proposal.dry_run is None or not proposal.dry_run.after.passed):
            raise _DryRunNotPassing
        return gate(proposal, decisions, decision)  # type: ignore[no-any-return]

    return policy


def decide(
    ref: str | UUID,
    verdict: Verdict | str,
    actor: str | None = None,
    reason: str = "",
    via: Via = "cli",
    *,
    resume: bool = True,
    store: StateStore | None = None,
    approvers: Approvers | None = None,
) -> DecisionOutcome:
    """Decide a proposal (full id or a 4+ character prefix) as `actor`: the one way every front end decides.

    Checks identity, role, separation of duties and expiry, and stores the decision atomically (of two
    concurrent approvers, one decides when one suffices; the other gets InvalidTransition). The proposal moves
    to approved only when its rule is satisfied (two-person rule: the first approval is stored and it stays
    pending; `outcome.requirement.missing` says who is still needed). Then, for a completed decision, the
    agent's graph is resumed (`resume=False`: the caller resumes later with `resume_decided`). The Notifier is
    called after the decision and after the resume.

    Raises Forbidden (403: system or agent identity, not an approver, no role, approving twice), Expired
    (409), InvalidTransition (409: not open), UnknownNameError (404), UserError (400: rejection without reason).
    """
    verdict = Verdict(verdict)
    store = store or StateStore()
    name = _actor(actor)
    if verdict == Verdict.reject and not reason.strip():
        raise UserError(f"rejecting proposal {str(ref)[:8]} needs a reason", hint="pass --reason 'why'")
    approvers = approvers or Approvers.load()
    gate = decision_gate(approvers)
    if verdict == Verdict.approve:
        # An edited proposal is approvable only once its new dry-run passes. A passing dry-run needs no more
        # reading (`_passing_first`); otherwise the gate reads the audit trail first, as it always did.
        try:
            done = store.decide_outcome(ref, verdict, name, reason, via=via, policy=_passing_first(gate))
        except _DryRunNotPassing:
            _edit_gate(ref, store)
            done = store.decide_outcome(ref, verdict, name, reason, via=via, policy=gate)
    else:
        done = store.decide_outcome(ref, verdict, name, reason, via=via, policy=gate)
    decision, proposal = done.decision, done.proposal  # as committed: no need to read them back
    pid = str(decision.proposal_id)
    need = requirement(proposal, done.decisions, approvers)
    if proposal.status in OPEN_STATUSES:  # an approval recorded; the rule wants more people
        notify("proposal_updated", pid)
        return DecisionOutcome(decision=decision, proposal=proposal, requirement=need)
    faults.point("decision_stored")
    notify("proposal_decided", pid)
    if not resume:
        return DecisionOutcome(decision=decision, proposal=proposal, requirement=need)
    # Resuming a rejected proposal only lets its graph end (no change is applied), so no thread stays waiting.
    return _resume(store, decision).model_copy(update={"requirement": need})


def hand_off(
    ref: str | UUID,
    verdict: Verdict | str,
    actor: str | None = None,
    reason: str = "",
    via: Via = "web",
    *,
    store: StateStore | None = None,
    approvers: Approvers | None = None,
) -> DecisionOutcome:
    """Decide a proposal and hand the rest to the supervisor's worker: what the web inbox and Slack call.

    Stores the decision with its audit entry and its resume request in one transaction, notifies, and returns
    without running anything: `resume` is `handed_off` when the decision completed the approval (or rejected it),
    `not_requested` while the rule still wants more approvals. A worker (`pipewarden supervise`, or the one
    `pipewarden serve` starts) applies it, re-runs the batch and verifies it, under a lease; pages follow it through
    `StateStore.proposal_lease`. Raises as `decide` does.
    """
    outcome = decide(ref, verdict, actor, reason, via, resume=False, store=store, approvers=approvers)
    if outcome.proposal.status in OPEN_STATUSES:
        return outcome
    return outcome.model_copy(update={"resume": "handed_off"})


def approve(
    ref: str | UUID,
    actor: str | None = None,
    *,
    via: Via = "cli",
    reason: str = "",
    resume: bool = True,
    store: StateStore | None = None,
) -> DecisionOutcome:
    """Approve a proposal as `actor`, then resume its agent's graph: `decide(ref, "approve", ...)`."""
    return decide(ref, Verdict.approve, actor, reason, via, resume=resume, store=store)


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
    return decide(ref, Verdict.reject, actor, reason, via, resume=resume, store=store)


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
    store.request_resume(proposal.id, actor=INBOX_ACTOR)  # durable first: the worker retries it if this fails
    return _resume(store, decision)


def _resume(store: StateStore, decision: Decision) -> DecisionOutcome:
    """Call the Resumer port for a stored decision; a failure is audited and returned, never raised. A live worker
    holding the proposal's lease is not a failure: it is resuming it (`in_progress`)."""
    pid = str(decision.proposal_id)
    try:
        load_resumer()(pid)
    except LeaseHeld as exc:  # the worker is on it: nothing runs twice
        return DecisionOutcome(decision=decision, proposal=store.get_proposal(pid), resume="in_progress",
                               worker=exc.owner)
    except Exception as exc:  # any failure of the graph must leave the stored decision usable
        error = f"{type(exc).__name__}: {exc}"
        log.exception("resuming proposal %s failed; the decision stays stored", pid[:8])
        audit = store.audit_entries(pid)
        if not audit or audit[-1].action != RESUME_FAILED_ACTION:  # the resumer records its own failures
            store.record(RESUME_FAILED_ACTION, INBOX_ACTOR, {"error": error[:2000]}, proposal_id=pid)
        return DecisionOutcome(
            decision=decision, proposal=store.get_proposal(pid), resume="failed", resume_error=error
        )
    notify("proposal_updated", pid)
    # Re-read: the store holds what was committed, whatever copy the resumer returned.
    return DecisionOutcome(decision=decision, proposal=store.get_proposal(pid), resume="resumed")


def proposal_view(ref: str | UUID, *, store: StateStore | None = None) -> ProposalView:
    """Load a proposal with its event, decisions, audit trail and what it still needs (`requirement`)."""
    store = store or StateStore()
    proposal = store.get_proposal(ref)
    pid = str(proposal.id)
    try:
        event: Event | None = store.get_event(proposal.event_id)
    except UserError:  # the outbox row is gone (pruned); the proposal is still worth showing
        event = None
    decisions = store.decisions_for(pid)
    return ProposalView(
        proposal=proposal, event=event, decisions=decisions, audit=store.audit_entries(pid),
        requirement=requirement(proposal, decisions), occurrences=store.occurrences(pid),
    )


view = proposal_view  # the earlier name


def on_proposal_created(proposal_id: UUID | str, *, store: StateStore | None = None) -> Proposal:
    """The kernel's ProposalHook: right after an agent stores a proposal, let policy approve it when a rule says
    so (actor "policy", via "policy", audited; the graph then applies it), or else earned autonomy when its fault's
    history earns it (`policies.autonomy`: actor "pipewarden:autonomy", via "autonomy", audited with the rule and
    the approvals relied on, and handed to the worker like a person's approval), and tell the Notifier.

    Safe to run twice: policy and autonomy approve only a pending proposal nobody has decided.
    """
    store = store or StateStore()
    pid = str(proposal_id)
    proposal = store.get_proposal(pid)
    decisions = store.decisions_for(pid)
    auto = proposal.status == ProposalStatus.pending and policy_may_approve(proposal, decisions)
    grant = None if auto or decisions else earned(proposal, store.fault_history(pid))
    notify("proposal_created", pid)
    if auto:
        rule = rule_for(proposal)
        store.decide(pid, Verdict.approve, POLICY_ACTOR, f"approved by rule {rule.name!r}: {rule.says}",
                     via="policy", policy=decision_gate())
        notify("proposal_decided", pid)
    elif grant is not None:
        try:  # the same transaction, audit and durable resume request as a person's approval
            store.decide(pid, Verdict.approve, AUTONOMY_ACTOR, grant.reason, via="autonomy",
                         policy=autonomy_gate(grant), detail=grant.audit())
        except (InvalidTransition, Forbidden, Expired) as exc:  # a person decided first: theirs stands
            log.info("earned autonomy left proposal %s to people: %s", pid[:8], exc)
        else:
            notify("proposal_decided", pid)
    return store.get_proposal(pid)


def expire_stale(*, store: StateStore | None = None, resume: bool = True) -> list[Proposal]:
    """Move open proposals past their `expires_at` to expired (audited, actor "policy"), tell the Notifier, and
    let their graphs end through the Resumer (a failure there is audited, never raised)."""
    store = store or StateStore()
    expired = store.expire_stale()
    for p in expired:
        notify("proposal_updated", str(p.id))
        if resume:
            try:
                load_resumer()(str(p.id))
            except LeaseHeld:
                pass  # a worker is ending its graph right now
            except Exception as exc:  # the proposal is expired whatever its graph does
                log.warning("ending the graph of expired proposal %s failed: %s", p.short_id, exc)
                store.record(RESUME_FAILED_ACTION, INBOX_ACTOR, {"error": f"{type(exc).__name__}: {exc}"[:2000]},
                             proposal_id=str(p.id))
    return [store.get_proposal(p.id) for p in expired]


def queue(*, store: StateStore | None = None, limit: int = 1000) -> list[Proposal]:
    """Proposals for an inbox: open ones (pending, needs a human) first, newest first, then the others."""
    store = store or StateStore()
    proposals = store.list_proposals(limit=limit)
    open_ = [p for p in proposals if p.status in OPEN_STATUSES]
    rest = sorted((p for p in proposals if p.status not in OPEN_STATUSES), key=lambda p: p.updated_at, reverse=True)
    return open_ + rest
