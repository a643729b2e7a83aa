"""Earned autonomy: approval rules that let a change kind on a dataset be approved without a person once people
approved the same fault's fix N times in a row and nothing went wrong. Off unless the project's approval policy
file (`policies/approval.yaml`, see `policies.defaults.policy_file`) has a rule for it:

```yaml
autonomy:
  - name: flights-mappings-earned
    says: A column mapping for a drift people approved three times running is approved by autonomy.
    datasets: [flights]            # shell patterns, as in approval.py's rules
    kinds: [column_mapping]        # change kinds; a change set matches when every member's kind is listed
    risks: [low, medium]           # optional; any risk when left out
    auto_approve: {after: 3}       # N consecutive verified approvals by people; `two_person: true` to cover them
```

How a new proposal earns it (`earned`): its event has a fault signature (`pipewarden.fault_signature`); walking the
earlier proposals of that signature (same dataset, same change kinds) from the newest back, each one verified
without ever being rolled back and approved by people counts; one approved by autonomy itself is passed over (it
neither counts nor breaks the run); anything else (rejected, rolled back even once, expired, still open or still on
its way to verified) stops the walk. N counted: earned, and the grant names the rule and the N proposals it relied
on. So one rejection or one rollback revokes it at once, and the count restarts from there.

What it never approves: a model promotion (a retrain's champion move) whatever the rule says (a rule naming
`model_promotion` is refused when the file is read); a proposal whose approval rule needs two people (the
two-person rules of `approval.py`) unless the rule says `two_person: true`; a proposal with no valid change
(needs a human); a proposal anyone has decided already, or one that was re-opened.

The decision is made as `pipewarden:autonomy` via `autonomy` through the same store transaction as a person's
(`StateStore.decide`), audited with the rule and the proposals relied on, and handed to the worker like a
person's approval; `autonomy_gate` re-checks inside that transaction that nobody decided first.

Public names: `AutonomyRule`, `Grant`, `load_autonomy_rules`, `earned`, `autonomy_gate`, `NEVER_AUTONOMOUS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import ConfigError, Forbidden
from pipewarden.models import (
    AUTONOMY_ACTOR,
    Decision,
    Proposal,
    ProposalStatus,
    Risk,
    Verdict,
    is_system_actor,
    leaf_changes,
)
from pipewarden.store import FaultHistory, PastProposal

__all__ = ["NEVER_AUTONOMOUS", "AutonomyRule", "Grant", "autonomy_gate", "earned", "load_autonomy_rules"]

NEVER_AUTONOMOUS = frozenset({"model_promotion", "no_change"})
"""Change kinds no autonomy rule may approve: a model promotion (two people, always) and 'no valid change'."""
POLICY_FILE = "approval.yaml"


@dataclass(frozen=True, kw_only=True)
class AutonomyRule:
    """One earned-autonomy rule: its triggers (as `approval.Rule`'s), then how many approvals earn it."""

    name: str
    """Short, stable name shown on the proposal page and in the audit log."""
    says: str
    """The rule in one sentence, for people."""
    kinds: frozenset[str]
    """Change kinds it covers; a change set is covered when every member's kind is."""
    after: int
    """How many consecutive verified approvals by people of the same fault earn it (at least 1)."""
    datasets: tuple[str, ...] = ("*",)
    """Dataset patterns."""
    risks: frozenset[Risk] | None = None
    """Risk levels it covers; None: any."""
    two_person: bool = False
    """Whether it may approve a proposal whose approval rule needs two people (off: such proposals always go to
    people). A model promotion is never covered."""

    def __post_init__(self) -> None:
        banned = self.kinds & NEVER_AUTONOMOUS
        if banned:
            raise ValueError(f"autonomy rule {self.name!r}: {', '.join(sorted(banned))} can never be approved by "
                             "autonomy (a model promotion always needs its two people)")
        if self.after < 1:
            raise ValueError(f"autonomy rule {self.name!r}: auto_approve.after must be at least 1")

    def matches(self, proposal: Proposal) -> bool:
        kinds = _kinds(proposal)
        if not kinds or not kinds <= self.kinds:
            return False
        if not any(fnmatchcase(proposal.dataset, pattern) for pattern in self.datasets):
            return False
        return self.risks is None or proposal.risk in self.risks


def _kinds(proposal: Proposal | PastProposal) -> frozenset[str]:
    p = proposal.proposal if isinstance(proposal, PastProposal) else proposal
    return frozenset(c.kind for c in leaf_changes(p.change))


class Grant(BaseModel):
    """Autonomy earned by a proposal: the rule, and the earlier proposals (people's approvals) it relied on."""

    rule: str
    says: str
    after: int
    fault: str = Field(description="The fault signature's label (dataset, event kind, what failed).")
    relied_on: list[str] = Field(description="Ids of the N verified proposals, newest first.")
    approved_by: list[list[str]] = Field(description="Who approved each of them, in the same order.")

    @property
    def reason(self) -> str:
        return (f"approved by earned autonomy (rule {self.rule!r}): {len(self.relied_on)} consecutive verified "
                f"approvals by people of {self.fault}, none rejected or rolled back since")

    def audit(self) -> dict[str, object]:
        return {"autonomy_rule": self.rule, "after": self.after, "fault": self.fault,
                "relied_on": self.relied_on, "relied_on_approved_by": self.approved_by}


# --------------------------------------------------------------------------- the file
class _AutoApprove(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: int = Field(ge=1, description="Consecutive verified approvals by people that earn it.")
    two_person: bool = False


class _RuleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    says: str = ""
    datasets: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    kinds: list[str] = Field(min_length=1)
    risks: list[Risk] | None = None
    auto_approve: _AutoApprove


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    autonomy: list[_RuleEntry] = Field(default_factory=list)


def load_autonomy_rules(path: Path | str | None = None) -> tuple[AutonomyRule, ...]:
    """The earned-autonomy rules of the project's `policies/approval.yaml` (else the package default: none).
    A malformed file raises ConfigError naming it, the rule and the field."""
    from pipewarden.policies.defaults import policy_file, read_policy

    p = Path(path) if path is not None else policy_file(POLICY_FILE)
    if not p.is_file():
        return ()
    parsed = read_policy(p, _File, hint="each rule under `autonomy:` needs name, kinds and auto_approve: {after: N}")
    rules: list[AutonomyRule] = []
    seen: set[str] = set()
    for entry in parsed.autonomy:
        if entry.name in seen:
            raise ConfigError(f"{p}: autonomy rule {entry.name!r} is listed twice", hint="give every rule its own name")
        seen.add(entry.name)
        try:
            rules.append(AutonomyRule(
                name=entry.name, says=entry.says or f"approved by autonomy after {entry.auto_approve.after} "
                "consecutive verified approvals by people", kinds=frozenset(entry.kinds), after=entry.auto_approve.after,
                datasets=tuple(entry.datasets), risks=frozenset(entry.risks) if entry.risks else None,
                two_person=entry.auto_approve.two_person))
        except ValueError as exc:
            raise ConfigError(f"{p}: {exc}", hint="remove the kind from the rule: people decide it") from exc
    return tuple(rules)


# --------------------------------------------------------------------------- the judgement
def _people(decisions: Sequence[Decision], round_: int) -> list[str]:
    return [d.actor for d in decisions
            if d.round == round_ and d.verdict == Verdict.approve and not is_system_actor(d.actor)]


def _approved_by_autonomy(past: PastProposal) -> bool:
    return any(d.actor == AUTONOMY_ACTOR and d.round == past.proposal.round for d in past.decisions)


def earned(proposal: Proposal, history: FaultHistory | None, rules: Sequence[AutonomyRule] | None = None) -> Grant | None:
    """The grant of the first rule that matches `proposal` and whose run of approvals its fault's history has, or
    None (no rule, no fault signature, a two-person rule not covered, or the run is short or broken)."""
    from pipewarden.policies.approval import rule_for

    if history is None or proposal.status != ProposalStatus.pending or proposal.round != 0:
        return None
    if _kinds(proposal) & NEVER_AUTONOMOUS:
        return None
    rules = load_autonomy_rules() if rules is None else rules
    base = rule_for(proposal)
    two_person = base.approvals > 1 or bool(base.must_include)
    for rule in rules:
        if not rule.matches(proposal) or (two_person and not rule.two_person):
            continue
        relied: list[PastProposal] = []
        for past in reversed(history.past):
            p = past.proposal
            if p.dataset != proposal.dataset or _kinds(past) != _kinds(proposal):
                continue  # another change kind of the same fault: its own history
            if past.rolled_back or p.status != ProposalStatus.verified:
                break  # rejected, rolled back, expired, or not yet proven: the run ends here
            if _approved_by_autonomy(past):
                continue  # autonomy's own approvals neither earn nor break it
            relied.append(past)
            if len(relied) == rule.after:
                return Grant(rule=rule.name, says=rule.says, after=rule.after, fault=history.label,
                             relied_on=[str(x.proposal.id) for x in relied],
                             approved_by=[_people(x.decisions, x.proposal.round) for x in relied])
    return None


def autonomy_gate(grant: Grant) -> Callable[[Proposal, list[Decision], Decision], bool]:
    """The check `StateStore.decide` runs inside its transaction for an autonomy decision: only
    `pipewarden:autonomy` approving, and only a proposal nobody has decided (in any round) and never re-opened."""

    def gate(proposal: Proposal, decisions: list[Decision], decision: Decision) -> bool:
        if decision.actor != AUTONOMY_ACTOR or decision.verdict != Verdict.approve:
            raise Forbidden(f"{decision.actor!r} cannot decide proposal {proposal.short_id} by autonomy",
                            hint="a person must decide it")
        if decisions or proposal.round != 0:
            raise Forbidden(f"proposal {proposal.short_id} was decided or re-opened; autonomy does not decide it "
                            f"(rule {grant.rule!r})", hint="a person must decide it")
        return True

    return gate
