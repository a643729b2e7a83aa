"""Approval rules as code: who may approve which proposal, how many people it takes, what policy may approve by
itself, and how long a proposal may wait.

`RULES` is an ordered tuple of small `Rule`s; the first whose triggers (change kind, dataset, risk, and an
optional condition) match a proposal decides it. Each rule names the roles that may approve, how many distinct
people must, the roles that must be among them (the two-person rule), whether policy approves it on its own
(still audited, as actor "policy" via "policy"), and the TTL after which the proposal expires.

Separation of duties holds for every rule: system and agent identities never decide, the agent that made a
proposal never approves it, nobody approves twice, and a `reporter` (it reports events) never decides: no rule may
name the role, and an identity that holds only it is refused.

Public names: `Rule`, `RULES`, `rule_for`, `Requirement`, `requirement`, `check_can_decide`, `decision_gate`,
`policy_may_approve`, `admit` (the kernel's Admission port), `fault_key`, `AUTO_QUARANTINE_MAX_FRACTION`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from itertools import combinations, permutations
from typing import Any

from pydantic import BaseModel, Field

from pipewarden.errors import Expired, Forbidden
from pipewarden.ids import UtcDatetime, utcnow
from pipewarden.models import POLICY_ACTOR, Decision, Proposal, Risk, Verdict, is_system_actor, leaf_changes
from pipewarden.policies.approvers import REPORTER_ROLE, Approvers

AUTO_QUARANTINE_MAX_FRACTION = 0.01  # quarantining under 1% of a batch is approved by policy


# --------------------------------------------------------------------------- rules
@dataclass(frozen=True, kw_only=True)
class Rule:
    """One approval rule: its triggers, then what it requires."""

    name: str
    """Short, stable name shown on the proposal page and in the audit log."""
    says: str
    """The rule in one sentence, for people."""
    kinds: frozenset[str] | None = None
    """Trigger: change kinds (a change set matches when any member does); None: any kind."""
    datasets: tuple[str, ...] = ("*",)
    """Trigger: dataset patterns."""
    risks: frozenset[Risk] | None = None
    """Trigger: risk levels; None: any."""
    when: Callable[[Proposal], bool] | None = None
    """Trigger: an extra condition on the proposal (e.g. the contract change loosens)."""
    roles: tuple[str, ...] = ("owner", "steward")
    """Roles (on the proposal's dataset) that may approve or reject."""
    approvals: int = 1
    """How many distinct people must approve."""
    must_include: tuple[str, ...] = ()
    """Roles that must each be held by a different one of the approvers."""
    auto_approve: bool = False
    """Policy approves it at creation (audited as actor "policy"); people may still decide it first."""
    ttl: timedelta = timedelta(days=7)
    """How long the proposal may wait for a decision before it expires."""

    def __post_init__(self) -> None:
        if REPORTER_ROLE in self.roles or REPORTER_ROLE in self.must_include:
            raise ValueError(f"rule {self.name!r}: the {REPORTER_ROLE} role reports events and never decides")

    def matches(self, proposal: Proposal) -> bool:
        if self.kinds is not None and not (_kinds(proposal) & self.kinds):
            return False
        if not any(fnmatchcase(proposal.dataset, pattern) for pattern in self.datasets):
            return False
        if self.risks is not None and proposal.risk not in self.risks:
            return False
        return self.when is None or self.when(proposal)


def _kinds(proposal: Proposal) -> set[str]:
    leaves = leaf_changes(proposal.change)
    return {c.kind for c in leaves} | {proposal.change.kind}


def _loosens_a_contract(proposal: Proposal) -> bool:
    return any(c.kind == "contract_change" and getattr(c, "loosens", True) for c in leaf_changes(proposal.change))


def _small_quarantine(proposal: Proposal) -> bool:
    """Every member is a quarantine of under 1% of its batch (measured rows, not a guess)."""
    leaves = leaf_changes(proposal.change)
    return bool(leaves) and all(
        c.kind == "quarantine" and getattr(c, "batch_rows", 0) > 0
        and getattr(c, "rows", 0) / c.batch_rows < AUTO_QUARANTINE_MAX_FRACTION
        for c in leaves
    )


RULES: tuple[Rule, ...] = (
    Rule(name="needs-a-person", says="No valid change: an owner or steward looks at it (reject with what was done).",
         kinds=frozenset({"no_change"}), ttl=timedelta(days=14)),
    Rule(name="model-promotion-two-person",
         says="Promoting a model needs two people: its ML owner and the dataset's owner or a steward.",
         kinds=frozenset({"model_promotion"}), roles=("ml_owner", "owner", "steward"), approvals=2,
         must_include=("ml_owner",), ttl=timedelta(days=3)),
    Rule(name="loosening-contract-two-person",
         says="Loosening a data contract needs the dataset's owner and a steward.",
         kinds=frozenset({"contract_change"}), when=_loosens_a_contract, approvals=2,
         must_include=("owner", "steward"), ttl=timedelta(days=3)),
    Rule(name="high-risk-two-person", says="A high-risk change needs the dataset's owner and a steward.",
         risks=frozenset({Risk.high}), approvals=2, must_include=("owner", "steward"), ttl=timedelta(days=3)),
    Rule(name="small-quarantine-auto",
         says="Quarantining under 1% of a batch is approved by policy (audited); people may still decide first.",
         kinds=frozenset({"quarantine"}), risks=frozenset({Risk.low, Risk.medium}), when=_small_quarantine,
         auto_approve=True, ttl=timedelta(days=1)),
    Rule(name="owner-or-steward", says="One owner of the dataset or a steward approves.", ttl=timedelta(days=7)),
)


def rule_for(proposal: Proposal, rules: Sequence[Rule] = RULES) -> Rule:
    """The first rule whose triggers match. The last rule matches everything."""
    for rule in rules:
        if rule.matches(proposal):
            return rule
    raise AssertionError("the last approval rule must match every proposal")


# --------------------------------------------------------------------------- requirement
class Requirement(BaseModel):
    """What a proposal still needs, for the proposal page, Slack and the CLI."""

    satisfied: bool
    approvals_needed: int = Field(description="How many more approvals it needs (0 when satisfied).")
    approvals_required: int = Field(default=1, description="How many distinct people the rule wants in all.")
    approved_by: list[str] = Field(default_factory=list, description="Who approved in the current round.")
    eligible_roles: list[str] = Field(default_factory=list, description="Roles that can still fill the need.")
    eligible_people: list[str] = Field(default_factory=list, description="Configured people who could approve.")
    missing: str = Field(description='e.g. "needs 1 more approval from: steward" ("" when satisfied).')
    rule: str = Field(description="The name of the rule that decided.")
    says: str = ""
    auto_approve: bool = False
    expires_at: UtcDatetime | None = None


def _round(proposal: Proposal, decisions: Iterable[Decision]) -> list[Decision]:
    return [d for d in decisions if d.round == proposal.round]


def _roles_of(name: str, dataset: str, approvers: Approvers) -> set[str]:
    if name == POLICY_ACTOR:
        return set()
    person = approvers.get(name)
    return set(person.roles_for(dataset)) if person else set()


def _max_cover(people_roles: list[set[str]], must: Sequence[str]) -> int:
    """How many of the `must` roles distinct people can hold at once (a tiny bipartite matching)."""
    for size in range(min(len(people_roles), len(must)), 0, -1):
        for roles in combinations(must, size):
            for people in permutations(range(len(people_roles)), size):
                if all(r in people_roles[p] for r, p in zip(roles, people, strict=True)):
                    return size
    return 0


def _state(rule: Rule, dataset: str, approved_by: list[str], approvers: Approvers) -> tuple[bool, int, list[str]]:
    """(satisfied, approvals still needed, must-include roles a further person could still fill)."""
    roles = [_roles_of(n, dataset, approvers) for n in approved_by]
    covered = _max_cover(roles, rule.must_include)
    needed = max(rule.approvals - len(approved_by), len(rule.must_include) - covered)
    if needed <= 0:
        return True, 0, []
    open_roles = [r for r in rule.must_include if _max_cover([*roles, {r}], rule.must_include) > covered]
    return False, needed, open_roles


def _who_text(roles: Sequence[str]) -> str:
    return " and ".join(roles)


def requirement(proposal: Proposal, decisions: Sequence[Decision] = (), approvers: Approvers | None = None) -> Requirement:
    """What the proposal still needs under its rule, given the decisions so far (only its current round counts)."""
    approvers = approvers or Approvers.load()
    rule = rule_for(proposal)
    current = _round(proposal, decisions)
    approved_by = list(dict.fromkeys(d.actor for d in current if d.verdict == Verdict.approve))
    if POLICY_ACTOR in approved_by:
        satisfied, needed, uncovered = True, 0, []
    else:
        satisfied, needed, uncovered = _state(rule, proposal.dataset, approved_by, approvers)
    only_open = bool(uncovered) and needed <= len(uncovered)  # every remaining seat needs a specific role
    eligible_roles = uncovered if only_open else list(rule.roles)
    people = [a.name for a in approvers.all()
              if a.name not in approved_by and set(a.roles_for(proposal.dataset)) & set(eligible_roles)]
    if satisfied:
        missing = ""
    else:
        roles_txt = _who_text(uncovered) if only_open else " or ".join(rule.roles)
        if uncovered and not only_open:
            roles_txt += f" (at least one {_who_text(uncovered)})"
        missing = f"needs {needed} more approval{'s' if needed > 1 else ''} from: {roles_txt}"
        if rule.auto_approve:
            missing += " (or approval by policy)"
    return Requirement(
        satisfied=satisfied, approvals_needed=needed, approvals_required=rule.approvals, approved_by=approved_by,
        eligible_roles=eligible_roles, eligible_people=people, missing=missing, rule=rule.name, says=rule.says,
        auto_approve=rule.auto_approve, expires_at=proposal.expires_at,
    )


# --------------------------------------------------------------------------- checks
# What a refused identity is told: a name (`--as`, PIPEWARDEN_USER) only chooses among identities proven by a
# personal token or the OS login (pipewarden.inbox.identity).
PROVE_YOURSELF = ("decide as a named person who proves it: a personal token (PIPEWARDEN_TOKEN or --token-file; "
                  "`pipewarden approvers token NAME` prints one) or your login as `os_user:` in approvers.yaml; "
                  "--as only chooses among those")
def check_can_decide(
    actor: str, proposal: Proposal, verdict: Verdict | str, approvers: Approvers | None = None, *,
    decisions: Sequence[Decision] = (), now: datetime | None = None,
) -> None:
    """Raise Forbidden (who may not) or Expired (too late) when `actor` may not give `verdict` on `proposal`.

    Checks, in order: system and agent identities never decide; the agent that made the proposal never approves
    it; the actor is a configured approver; the proposal has not expired; the actor holds one of the rule's roles
    on the proposal's dataset; and, for an approval, has not approved it already and can fill a seat still open.
    """
    verdict = Verdict(verdict)
    name = actor.strip()
    pid = proposal.short_id
    if is_system_actor(name):
        raise Forbidden(f"{name!r} is a system identity and can never decide a proposal",
                        hint=PROVE_YOURSELF)
    if name in {proposal.agent, f"agent:{proposal.agent}"}:
        raise Forbidden(f"{name!r} made proposal {pid} and cannot decide it", hint="a person must decide it")
    approvers = approvers or Approvers.load()
    person = approvers.get(name)
    if person is None:
        where = approvers.path or "the approvers file"
        raise Forbidden(
            f"{name!r} is not an approver in {where}",
            hint=f"add an entry to {where}: `- {{name: {name}, roles: [owner], datasets: [{proposal.dataset}]}}` "
            "(or decide as a configured approver you can prove you are: your personal token in PIPEWARDEN_TOKEN or "
            "--token-file, or your login as `os_user:` in that file)",
        )
    if proposal.expires_at is not None and (now or utcnow()) >= proposal.expires_at:
        raise Expired(f"proposal {pid} expired at {proposal.expires_at:%Y-%m-%d %H:%M} UTC; it can no longer be decided",
                      hint="the agent proposes again when the fault recurs; `pipewarden inbox expire` closes it")
    rule = rule_for(proposal)
    held = set(person.roles_for(proposal.dataset)) - {REPORTER_ROLE}
    others = [a.name for a in approvers.all() if a.name != name and set(a.roles_for(proposal.dataset)) & set(rule.roles)]
    ask = f"ask {', '.join(others[:4])}" if others else f"add an approver with one of those roles in {approvers.path}"
    if set(person.roles) == {REPORTER_ROLE}:
        raise Forbidden(f"{name} is a {REPORTER_ROLE}: it reports events and can never {verdict.value} a proposal "
                        f"({pid})", hint=ask)
    if not held & set(rule.roles):
        has = f"{', '.join(person.roles)} on {', '.join(person.datasets)}"
        raise Forbidden(
            f"{name} cannot {verdict.value} proposal {pid} ({proposal.dataset}, {proposal.change.kind}): rule "
            f"{rule.name!r} needs {' or '.join(rule.roles)} of {proposal.dataset}; {name} has {has}",
            hint=ask,
        )
    if verdict != Verdict.approve:
        return
    current = _round(proposal, decisions)
    approved_by = list(dict.fromkeys(d.actor for d in current if d.verdict == Verdict.approve))
    if name in approved_by:
        need = requirement(proposal, decisions, approvers)
        raise Forbidden(f"{name} already approved proposal {pid}; the same person cannot approve twice",
                        hint=f"it {need.missing or 'is approved'}" + (f": ask {', '.join(need.eligible_people[:4])}"
                                                                      if need.eligible_people else ""))
    satisfied, needed, uncovered = _state(rule, proposal.dataset, approved_by, approvers)
    if satisfied:
        return
    if uncovered and needed <= len(uncovered) and not held & set(uncovered):
        fill = [a.name for a in approvers.all()
                if a.name not in approved_by and set(a.roles_for(proposal.dataset)) & set(uncovered)]
        raise Forbidden(
            f"{name} cannot fill the approval proposal {pid} still needs: rule {rule.name!r} "
            f"needs {needed} more approval{'s' if needed > 1 else ''} from: {_who_text(uncovered)}",
            hint=f"ask {', '.join(fill[:4])}" if fill else f"add a {uncovered[0]} for {proposal.dataset} in "
            f"{approvers.path}",
        )


def decision_gate(approvers: Approvers | None = None) -> Callable[[Proposal, list[Decision], Decision], bool]:
    """The callable `StateStore.decide` runs inside its transaction: check the decision against the rules (raise
    to refuse) and say whether, with it, the proposal is decided (rejected, or approved by enough people)."""
    loaded = approvers or Approvers.load()

    def gate(proposal: Proposal, decisions: list[Decision], decision: Decision) -> bool:
        if decision.actor == POLICY_ACTOR and decision.via == "policy":
            if not policy_may_approve(proposal, decisions):
                raise Forbidden(f"no rule lets policy approve proposal {proposal.short_id}",
                                hint="a person must approve it")
            return True
        check_can_decide(decision.actor, proposal, decision.verdict, loaded, decisions=decisions)
        if decision.verdict == Verdict.reject:
            return True
        return requirement(proposal, [*decisions, decision], loaded).satisfied

    return gate


def policy_may_approve(proposal: Proposal, decisions: Sequence[Decision] = ()) -> bool:
    """Whether the proposal's rule approves it by itself and nobody has decided it in this round."""
    return rule_for(proposal).auto_approve and not _round(proposal, decisions)


def admit(proposal: Proposal) -> Proposal:
    """The kernel's Admission port: stamp a new proposal with its rule's expiry (no I/O)."""
    if proposal.expires_at is not None:
        return proposal
    return proposal.model_copy(update={"expires_at": proposal.created_at + rule_for(proposal).ttl})


def fault_key(proposal: Proposal | Any) -> str:
    """Groups repeated events for the same fault (one Slack thread): agent, dataset and the change's target."""
    return f"{proposal.agent}:{proposal.dataset}:{proposal.change.target}"
