"""The effectful tools: apply an approved change as new active versions, and roll it back.

Invariant 1 is checked here, inside the tool: without a stored approving Decision for the proposal, nothing
is written and `NotApproved` is raised. Applying is idempotent (applying twice is applying once) and every
step is a compare-and-set on the proposal's status, audited in the same transaction.

Every single change becomes a new active version of its target (`mapping:flights@<fingerprint>`, `sql:route_daily`,
`contract:flights`, `model:delay_model@champion`...); the flows read the active versions. A change set applies
its members in order and rolls them back in reverse. Kinds whose effect lives outside the state DB (an MLflow
alias move, a re-ingest request) also run an `Effect`, registered by import path in `EFFECTS`; effects must be
idempotent, because a crash between the version and the effect re-runs both.

Public names: `ApplyResult`, `Effect`, `EFFECTS`, `apply_change`, `mark_verified`, `rollback_change`.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol
from uuid import UUID

from pydantic import BaseModel, Field

from pipewarden.errors import InvalidTransition, NotApproved, UserError
from pipewarden.models import Proposal, ProposalStatus, Version, leaf_changes
from pipewarden.store import StateStore

APPLIER = "supervisor"


class Effect(Protocol):
    """What applying one kind of change does outside the versions table. Both calls must be idempotent."""

    def apply(self, change: Any, proposal: Proposal) -> dict[str, Any]:
        ...

    def rollback(self, change: Any, proposal: Proposal) -> dict[str, Any]:
        ...


# change kind -> "module:attribute" of an Effect (loaded lazily: the tools it names may be heavy).
EFFECTS: dict[str, str] = {
    "model_promotion": "pipewarden.tools.model_registry:ALIAS_MOVE",
}


def _effect(kind: str) -> Effect | None:
    path = EFFECTS.get(kind)
    if path is None:
        return None
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


class ApplyResult(BaseModel):
    proposal: Proposal
    version: Version | None = Field(description="The first (usually only) version the change activated.")
    versions: list[Version] = Field(default_factory=list)
    already_applied: bool = False


def apply_change(proposal_id: UUID | str, *, store: StateStore | None = None) -> ApplyResult:
    """Activate a new version of each target the proposal's change touches. Refuses without an approved Decision."""
    store = store or StateStore()
    proposal = store.get_proposal(proposal_id)
    decision = store.approved_decision(proposal.id)
    if decision is None:
        raise NotApproved(
            f"proposal {proposal.short_id} has no approving decision; the apply tool refuses to run",
            hint=f"a person must run `pipewarden inbox approve {proposal.short_id}` first",
        )
    leaves = leaf_changes(proposal.change)
    if not leaves:
        raise UserError(f"proposal {proposal.short_id} carries no change to apply")
    if proposal.status in (ProposalStatus.applied, ProposalStatus.verified):
        active = [v for c in leaves if (v := store.active_version(c.target)) is not None]
        return ApplyResult(proposal=proposal, version=active[0] if active else None, versions=active,
                           already_applied=True)
    if proposal.status == ProposalStatus.approved:
        proposal = store.transition(proposal.id, ProposalStatus.applying, APPLIER, "applying the approved change",
                                    expect=ProposalStatus.approved)
    elif proposal.status != ProposalStatus.applying:  # applying: a crashed apply is resumed
        raise InvalidTransition(f"proposal {proposal.short_id} is {proposal.status.value}; it cannot be applied")
    versions: list[Version] = []
    effects: dict[str, Any] = {}
    for change in leaves:
        versions.append(store.activate_new_version(change.target, change.model_dump(mode="json"), proposal.id, APPLIER))
        effect = _effect(change.kind)
        if effect is not None:
            effects[change.target] = effect.apply(change, proposal)
    summary = ", ".join(f"{v.target} v{v.number}" for v in versions)
    proposal = store.transition(proposal.id, ProposalStatus.applied, APPLIER, f"{summary} active",
                                detail={"versions": {v.target: v.number for v in versions}, "effects": effects})
    return ApplyResult(proposal=proposal, version=versions[0], versions=versions)


def mark_verified(proposal_id: UUID | str, detail: dict, *, store: StateStore | None = None) -> Proposal:
    store = store or StateStore()
    return store.transition(proposal_id, ProposalStatus.verified, APPLIER, "the re-run passed its checks",
                            detail=detail, expect=ProposalStatus.applied)


def rollback_change(proposal_id: UUID | str, reason: str, *, store: StateStore | None = None) -> Proposal:
    """Re-activate the previous versions (and undo effects) in reverse order, then re-open the proposal (pending)."""
    store = store or StateStore()
    proposal = store.get_proposal(proposal_id)
    restored: dict[str, int | None] = {}
    for change in reversed(leaf_changes(proposal.change)):
        effect = _effect(change.kind)
        if effect is not None:
            effect.rollback(change, proposal)
        v = store.rollback_version(change.target, proposal.id, APPLIER)
        restored[change.target] = v.number if v else None
    store.transition(proposal.id, ProposalStatus.rolled_back, APPLIER, reason, detail={"restored_versions": restored})
    return store.transition(proposal.id, ProposalStatus.pending, APPLIER, f"re-opened: {reason}")
