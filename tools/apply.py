"""The effectful tools: apply an approved change as a new active version, and roll it back.

Invariant 1 is checked here, inside the tool: without a stored approving Decision for the proposal, nothing
is written and `NotApproved` is raised. Applying is idempotent (applying twice is applying once) and every
step is a compare-and-set on the proposal's status, audited in the same transaction.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

from pipewarden.errors import InvalidTransition, NotApproved, UserError
from pipewarden.models import Proposal, ProposalStatus, Version
from pipewarden.store import StateStore

APPLIER = "supervisor"


class ApplyResult(BaseModel):
    proposal: Proposal
    version: Version | None
    already_applied: bool = False


def apply_change(proposal_id: UUID | str, *, store: StateStore | None = None) -> ApplyResult:
    """Activate a new version of the proposal's target. Refuses without an approved Decision."""
    store = store or StateStore()
    proposal = store.get_proposal(proposal_id)
    decision = store.approved_decision(proposal.id)
    if decision is None:
        raise NotApproved(
            f"proposal {proposal.short_id} has no approving decision; the apply tool refuses to run",
            hint=f"a person must run `pipewarden inbox approve {proposal.short_id}` first",
        )
    if proposal.change.kind == "no_change":
        raise UserError(f"proposal {proposal.short_id} carries no change to apply")
    if proposal.status in (ProposalStatus.applied, ProposalStatus.verified):
        return ApplyResult(proposal=proposal, version=store.active_version(proposal.change.target), already_applied=True)
    if proposal.status == ProposalStatus.approved:
        proposal = store.transition(proposal.id, ProposalStatus.applying, APPLIER, "applying the approved change",
                                    expect=ProposalStatus.approved)
    elif proposal.status != ProposalStatus.applying:  # applying: a crashed apply is resumed
        raise InvalidTransition(f"proposal {proposal.short_id} is {proposal.status.value}; it cannot be applied")
    content = proposal.change.model_dump(mode="json")
    version = store.activate_new_version(proposal.change.target, content, proposal.id, APPLIER)
    proposal = store.transition(proposal.id, ProposalStatus.applied, APPLIER,
                                f"{proposal.change.target} v{version.number} is active",
                                detail={"version": version.number})
    return ApplyResult(proposal=proposal, version=version)


def mark_verified(proposal_id: UUID | str, detail: dict, *, store: StateStore | None = None) -> Proposal:
    store = store or StateStore()
    return store.transition(proposal_id, ProposalStatus.verified, APPLIER, "the re-run passed its checks",
                            detail=detail, expect=ProposalStatus.applied)


def rollback_change(proposal_id: UUID | str, reason: str, *, store: StateStore | None = None) -> Proposal:
    """Re-activate the previous version and re-open the proposal (pending) with the reason."""
    store = store or StateStore()
    proposal = store.get_proposal(proposal_id)
    restored = store.rollback_version(proposal.change.target, proposal.id, APPLIER)
    store.transition(proposal.id, ProposalStatus.rolled_back, APPLIER, reason,
                     detail={"restored_version": restored.number if restored else None})
    return store.transition(proposal.id, ProposalStatus.pending, APPLIER, f"re-opened: {reason}")
