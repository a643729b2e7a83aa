"""A fake Resumer port for the inbox tests: it plays the agent graph that applies and verifies a change.

Install `resume` as the runtime's Resumer (it moves the proposal approved -> applying -> applied -> verified) or
`fail` (it raises, as a crashed graph would) with `tests.fakes.runtimes.swap(monkeypatch, resumer=resume)`; a child
process gets `resume` with `PIPEWARDEN_RUNTIME=tests.fakes.runtimes:fake_resumer`. Every call is recorded in
`CALLS`.
"""

from __future__ import annotations

from uuid import UUID

from pipewarden.models import Proposal, ProposalStatus
from pipewarden.store import StateStore

CALLS: list[str] = []
# For each call: whether an approving decision was already stored when the graph resumed (invariant 5).
DECIDED_AT_CALL: list[bool] = []
ACTOR = "supervisor"


def resume(proposal_id: UUID | str) -> Proposal:
    CALLS.append(str(proposal_id))
    store = StateStore()
    DECIDED_AT_CALL.append(store.approved_decision(proposal_id) is not None)
    current = store.get_proposal(proposal_id)
    if current.status in (ProposalStatus.rejected, ProposalStatus.expired):  # the real graph just ends
        return current
    store.transition(proposal_id, ProposalStatus.applying, ACTOR, "applying the approved change")
    store.transition(proposal_id, ProposalStatus.applied, ACTOR, "new mapping version active")
    return store.transition(proposal_id, ProposalStatus.verified, ACTOR, "the re-run passed the contract")


def fail(proposal_id: UUID | str) -> Proposal:
    CALLS.append(str(proposal_id))
    DECIDED_AT_CALL.append(StateStore().approved_decision(proposal_id) is not None)
    raise RuntimeError("checkpoint database is locked")
