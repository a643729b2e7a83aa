"""Domain models: the typed Change a proposal carries, its evidence and citations, the Proposal itself,
the Decision a human makes on it and the Version a change creates.

Unions are discriminated by `kind` and (de)serialized through one TypeAdapter each.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from pipewarden.ids import UtcDatetime, new_id, utcnow


# --------------------------------------------------------------------------- changes
class ColumnMapping(BaseModel):
    """Rename incoming columns to contract columns and cast retyped ones; applied at validate time.

    `renames` maps an incoming column name to the contract column it feeds; `casts` maps a contract column
    to the contract type its incoming values are cast to.
    """

    kind: Literal["column_mapping"] = "column_mapping"
    dataset: str
    renames: dict[str, str] = Field(default_factory=dict)
    casts: dict[str, str] = Field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"mapping:{self.dataset}"


class SqlModelPatch(BaseModel):
    """Replace a SQL model's text (deepened by the agents issue)."""

    kind: Literal["sql_model_patch"] = "sql_model_patch"
    model: str
    sql: str

    @property
    def target(self) -> str:
        return f"sql:{self.model}"


class NoChange(BaseModel):
    """The agent could not produce a valid change: the proposal asks a human to act."""

    kind: Literal["no_change"] = "no_change"
    reason: str

    @property
    def target(self) -> str:
        return "none"


Change = Annotated[ColumnMapping | SqlModelPatch | NoChange, Field(discriminator="kind")]
ChangeAdapter: TypeAdapter[Change] = TypeAdapter(Change)


# --------------------------------------------------------------------------- evidence
class CheckResult(BaseModel):
    """The outcome of the contract's checks on one batch."""

    passed: bool
    rows: int
    failed_rows: int = 0
    schema_errors: list[str] = Field(default_factory=list)
    failed_checks: list[str] = Field(default_factory=list)


class DryRun(BaseModel):
    """The change applied to the failing batch without touching any active version."""

    before: CheckResult
    after: CheckResult
    sample: list[dict[str, Any]] = Field(default_factory=list, description="A few rows after the change.")

    @property
    def heals(self) -> bool:
        return (not self.before.passed) and self.after.passed


class Citation(BaseModel):
    """A knowledge chunk the agent used, with its provenance as it was when cited."""

    chunk_id: str
    source: str
    kind: str
    dataset: str | None = None
    owner: str | None = None
    updated_at: UtcDatetime | None = None
    content_hash: str | None = None
    score: float = 0.0
    excerpt: str = ""


class Risk(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


# --------------------------------------------------------------------------- lifecycle
class ProposalStatus(StrEnum):
    pending = "pending"
    needs_human = "needs_human"
    approved = "approved"
    rejected = "rejected"
    applying = "applying"
    applied = "applied"
    verified = "verified"
    rolled_back = "rolled_back"
    expired = "expired"


# The allowed moves, one line per rule: FROM_STATES -> TO_STATES (Prefect's orchestration-rule shape).
TRANSITIONS: dict[ProposalStatus, frozenset[ProposalStatus]] = {
    ProposalStatus.pending: frozenset({ProposalStatus.approved, ProposalStatus.rejected, ProposalStatus.expired}),
    ProposalStatus.needs_human: frozenset({ProposalStatus.rejected, ProposalStatus.expired}),
    ProposalStatus.approved: frozenset({ProposalStatus.applying}),
    ProposalStatus.applying: frozenset({ProposalStatus.applied, ProposalStatus.rolled_back}),
    ProposalStatus.applied: frozenset({ProposalStatus.verified, ProposalStatus.rolled_back}),
    ProposalStatus.rolled_back: frozenset({ProposalStatus.pending}),
    ProposalStatus.verified: frozenset(),
    ProposalStatus.rejected: frozenset(),
    ProposalStatus.expired: frozenset(),
}
OPEN_STATUSES = frozenset({ProposalStatus.pending, ProposalStatus.needs_human})


def can_transition(src: ProposalStatus, dst: ProposalStatus) -> bool:
    return dst in TRANSITIONS[src]


class Proposal(BaseModel):
    """An agent's proposed fix for one event, waiting for (or past) a human decision."""

    model_config = ConfigDict(validate_assignment=True)
    id: UUID = Field(default_factory=new_id)
    event_id: UUID
    agent: str
    dataset: str
    title: str
    diagnosis: str
    change: Change
    dry_run: DryRun | None = None
    citations: list[Citation] = Field(default_factory=list)
    risk: Risk = Risk.medium
    required_roles: list[str] = Field(default_factory=lambda: ["owner"])
    status: ProposalStatus = ProposalStatus.pending
    status_reason: str = ""
    thread_id: str
    planner: str = "offline"
    tried: list[str] = Field(default_factory=list, description="What was tried before a needs-human outcome.")
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]


class Verdict(StrEnum):
    approve = "approve"
    reject = "reject"


class Decision(BaseModel):
    """A human's verdict on a proposal. Stored before the agent's graph resumes."""

    id: UUID = Field(default_factory=new_id)
    proposal_id: UUID
    verdict: Verdict
    actor: str
    reason: str = ""
    via: Literal["cli", "web", "slack", "policy"] = "cli"
    decided_at: UtcDatetime = Field(default_factory=utcnow)


SYSTEM_ACTORS = frozenset({"system", "agent", "supervisor", "pipewarden"})


class Version(BaseModel):
    """One version of a versioned target (a dataset's column mapping, a SQL model...)."""

    id: UUID = Field(default_factory=new_id)
    target: str
    number: int
    content: dict[str, Any]
    active: bool = False
    proposal_id: UUID | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)


class RunResult(BaseModel):
    """What a pipeline run on one batch ended with; returned by the PipelineRunner port."""

    dataset: str
    load_id: str
    status: Literal["completed", "halted", "failed"]
    halted_at: str | None = None
    rows_in: int = 0
    rows_quarantined: int = 0
    events: list[str] = Field(default_factory=list, description="Ids of the events the run emitted.")
    checks: CheckResult | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
