"""Domain models: the typed Change a proposal carries, its evidence and citations, the Proposal itself,
the Decision a human makes on it and the Version a change creates.

Unions are discriminated by `kind` and (de)serialized through one TypeAdapter each.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from pipewarden.ids import UtcDatetime, new_id, utcnow


# --------------------------------------------------------------------------- how a change describes itself
class Span(NamedTuple):
    """A piece of a change's description. `code` marks a name or a value that came from data (a column, a
    predicate, a model): renderers show it verbatim as code, never as markup."""

    text: str
    code: bool = False


class ChangeText(NamedTuple):
    """What a change does, in words, written once per change kind (`change.text()`) and rendered by every surface:
    Slack as mrkdwn, the web inbox and the terminal as plain text. No surface keeps its own ladder over kinds."""

    title: str
    """The kind, as people say it: "Column mapping", "Quarantine"."""
    body: tuple[Span, ...] = ()
    """The sentence after the title, with the names from data marked."""
    warning: str = ""
    """What a reviewer must not miss (a contract that loosens), shown emphasized."""
    note: str = ""
    """Why, in the agent's words (a SQL patch's reason)."""
    block: str = ""
    """A long text shown as a block (a SQL model's new text)."""

    def plain(self) -> str:
        """The description as one plain line: title, body, warning and note."""
        line = self.title + "".join(s.text for s in self.body)
        if self.warning:
            line += f" ({self.warning})"
        return line + (f": {self.note}" if self.note else "")


def _join(parts: list[list[Span]], sep: str) -> list[Span]:
    out: list[Span] = []
    for i, part in enumerate(parts):
        if i:
            out.append(Span(sep))
        out.extend(part)
    return out


# --------------------------------------------------------------------------- changes
class ColumnTransform(BaseModel):
    """A value conversion on one contract column, applied after the renames and before the casts.

    `unit_scale` multiplies by `factor` (seconds -> minutes is 1/60); `date_format` parses text with the strptime
    `format` (e.g. '%m/%d/%Y %H:%M') as a UTC timestamp; `epoch` reads numbers as seconds since 1970-01-01 UTC
    (times `factor`, e.g. 0.001 for milliseconds).
    """

    column: str
    kind: Literal["unit_scale", "date_format", "epoch"]
    factor: float | None = None
    format: str | None = None

    def describe(self) -> str:
        if self.kind == "unit_scale":
            return f"scale {self.column} by {self.factor:g}"
        if self.kind == "date_format":
            return f"parse {self.column} as {self.format}"
        return f"read {self.column} as epoch seconds" + (f" x {self.factor:g}" if self.factor not in (None, 1) else "")


class ColumnMapping(BaseModel):
    """Rename incoming columns to contract columns and cast retyped ones; applied at validate time.

    `renames` maps an incoming column name to the contract column it feeds; `casts` maps a contract column
    to the contract type its incoming values are cast to; `transforms` convert values (units, date formats).
    """

    kind: Literal["column_mapping"] = "column_mapping"
    dataset: str
    renames: dict[str, str] = Field(default_factory=dict)
    casts: dict[str, str] = Field(default_factory=dict)
    transforms: list[ColumnTransform] = Field(default_factory=list)
    source_fingerprint: str | None = Field(
        default=None,
        description="The schema fingerprint of the drifted batch the mapping was proven on; it applies only to "
        "batches with this fingerprint. None: an unscoped mapping (older versions), applied to drifted batches.",
    )

    @property
    def target(self) -> str:
        return mapping_target(self.dataset, self.source_fingerprint)

    def text(self) -> ChangeText:
        parts = [[Span(src, True), Span(" \u2192 "), Span(dst, True)] for src, dst in self.renames.items()]
        parts += [[Span("cast "), Span(col, True), Span(f" to {typ}")] for col, typ in self.casts.items()]
        parts += [[Span(t.describe())] for t in self.transforms]
        body = _join(parts, "; ") or [Span("no renames or casts")]
        return ChangeText("Column mapping", (Span(" for "), Span(self.dataset, True), Span(": "), *body))


def mapping_target(dataset: str, fingerprint: str | None = None) -> str:
    """The versioned target of a dataset's column mapping: `mapping:<dataset>@<fingerprint>` for a mapping scoped
    to one incoming schema, `mapping:<dataset>` for an unscoped one."""
    return f"mapping:{dataset}@{fingerprint}" if fingerprint else f"mapping:{dataset}"


class SqlModelPatch(BaseModel):
    """Replace a SQL model's text; transform runs the active version instead of the file.

    `base_sql` is the text it replaces (for the diff and for proving old and new SQL on the same batch).
    """

    kind: Literal["sql_model_patch"] = "sql_model_patch"
    model: str
    sql: str
    base_sql: str = ""
    reason: str = ""

    @property
    def target(self) -> str:
        return f"sql:{self.model}"

    def text(self) -> ChangeText:
        lines = len(self.sql.strip().splitlines())
        was = f", was {len(self.base_sql.strip().splitlines())}" if self.base_sql else ""
        return ChangeText("SQL model patch", (Span(" "), Span(self.model, True), Span(f" ({lines} lines{was})")),
                          note=self.reason, block=self.sql.strip())


class Quarantine(BaseModel):
    """Move the rows of a batch that match `predicate` (a guarded SQL boolean expression over the batch's columns)
    to the quarantine table with `reason`; the rest of the batch goes on."""

    kind: Literal["quarantine"] = "quarantine"
    dataset: str
    load_id: str | None = None
    predicate: str
    reason: str
    rows: int = Field(default=0, description="Rows the predicate matched in the failing batch.")
    batch_rows: int = Field(default=0, description="Rows in the failing batch.")

    @property
    def fraction(self) -> float:
        return self.rows / self.batch_rows if self.batch_rows else 0.0

    @property
    def target(self) -> str:
        return f"quarantine:{self.dataset}"

    def text(self) -> ChangeText:
        share = f" ({self.rows:,} of {self.batch_rows:,} rows, {self.fraction:.2%})" if self.batch_rows else ""
        return ChangeText("Quarantine", (Span(" rows of "), Span(self.dataset, True), Span(" where "),
                                         Span(self.predicate, True), Span(share)), note=self.reason)


class Reingest(BaseModel):
    """Ask for a batch to be loaded again from its source (a late, partial or corrupt load)."""

    kind: Literal["reingest"] = "reingest"
    dataset: str
    load_id: str
    source: str | None = None
    reason: str

    @property
    def target(self) -> str:
        return f"reingest:{self.dataset}"

    def text(self) -> ChangeText:
        return ChangeText("Re-ingest", (Span(" "), Span(self.dataset, True), Span(" load "), Span(self.load_id, True)),
                          note=self.reason)


class DedupeRule(BaseModel):
    """Keep one row per `keys` (the first or last by `order_by`) at validate time; the others are quarantined."""

    kind: Literal["dedupe_rule"] = "dedupe_rule"
    dataset: str
    keys: list[str]
    keep: Literal["first", "last"] = "last"
    order_by: str | None = None

    @property
    def target(self) -> str:
        return f"dedupe:{self.dataset}"

    def text(self) -> ChangeText:
        keys = _join([[Span(k, True)] for k in self.keys], ", ")
        order = [Span(" by "), Span(self.order_by, True)] if self.order_by else []
        return ChangeText("Dedupe", (Span(" "), Span(self.dataset, True), Span(" on "), *keys,
                                     Span(f", keep the {self.keep}"), *order))


class ContractChange(BaseModel):
    """A new version of a dataset's data contract (the YAML as a dict). Loosening a contract is high risk."""

    kind: Literal["contract_change"] = "contract_change"
    dataset: str
    contract: dict[str, Any] = Field(description="The whole new contract, as `contracts/<dataset>.yaml` holds it.")
    summary: str = ""
    loosens: bool = Field(default=False, description="True when the change accepts data the old contract rejected.")

    @property
    def target(self) -> str:
        return f"contract:{self.dataset}"

    def text(self) -> ChangeText:
        return ChangeText("Contract change", (Span(" for "), Span(self.dataset, True)),
                          warning="loosens the contract" if self.loosens else "", note=self.summary)


class ModelPromotion(BaseModel):
    """Move a registered model's alias (by default `champion`) to another version; rollback moves it back."""

    kind: Literal["model_promotion"] = "model_promotion"
    model_name: str
    alias: str = "champion"
    from_version: str | None = None
    to_version: str
    run_id: str | None = None

    @property
    def target(self) -> str:
        return f"model:{self.model_name}@{self.alias}"

    def text(self) -> ChangeText:
        return ChangeText("Model promotion", (Span(" "), Span(self.model_name, True), Span(" alias "),
                                              Span(self.alias, True),
                                              Span(f": version {self.from_version or 'none'} \u2192 {self.to_version}")))


class NoChange(BaseModel):
    """The agent could not produce a valid change: the proposal asks a human to act."""

    kind: Literal["no_change"] = "no_change"
    reason: str

    @property
    def target(self) -> str:
        return "none"

    def text(self) -> ChangeText:
        return ChangeText("No change", note=self.reason)


SingleChange = Annotated[
    ColumnMapping | SqlModelPatch | Quarantine | Reingest | DedupeRule | ContractChange | ModelPromotion,
    Field(discriminator="kind"),
]


class ChangeSet(BaseModel):
    """Several changes proposed, approved, applied and rolled back together (e.g. a mapping plus the downstream
    SQL models it touches). Applied in order, rolled back in reverse."""

    kind: Literal["change_set"] = "change_set"
    changes: list[SingleChange] = Field(min_length=1)
    summary: str = ""

    @property
    def target(self) -> str:
        return "set:" + ",".join(c.target for c in self.changes)

    def text(self) -> ChangeText:
        """The set's own line; renderers list its members (`leaf_changes`) under it, each with its own text."""
        n = len(self.changes)
        return ChangeText(f"{n} change{'s' if n != 1 else ''}, applied together", note=self.summary)


Change = Annotated[
    ColumnMapping | SqlModelPatch | Quarantine | Reingest | DedupeRule | ContractChange | ModelPromotion
    | ChangeSet | NoChange,
    Field(discriminator="kind"),
]
CHANGE_KINDS: tuple[str, ...] = (
    "column_mapping", "sql_model_patch", "quarantine", "reingest", "dedupe_rule", "contract_change",
    "model_promotion", "change_set", "no_change",
)

EDITABLE_KINDS: tuple[str, ...] = ("column_mapping", "sql_model_patch", "quarantine", "contract_change", "change_set")
"""The kinds a person may edit in the inbox before approving; each has a prover in `tools.redry.PROVERS`."""


def leaf_changes(change: Any) -> list[Any]:
    """The single changes a change stands for: itself, or a change set's members in order."""
    if getattr(change, "kind", None) == "change_set":
        return list(change.changes)
    if getattr(change, "kind", None) == "no_change":
        return []
    return [change]


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
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Figures the agent proved the change with, e.g. cost_before_ms/cost_after_ms, champion_auc.",
    )
    notes: list[str] = Field(default_factory=list, description="Evidence in words, one finding per line.")

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
    expires_at: UtcDatetime | None = Field(
        default=None, description="After this, the proposal can no longer be decided (the approval rule's TTL)."
    )
    round: int = Field(
        default=0, description="How many times it was re-opened (rolled back); approvals count within one round."
    )
    auto_approved_by: str | None = Field(
        default=None, description="Who approved it without a person: `policy` (an approval rule) or "
        "`pipewarden:autonomy` (earned autonomy); None when people decided. Every front end shows it as auto-approved."
    )

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
    via: Literal["cli", "web", "slack", "mcp", "policy", "autonomy"] = "cli"
    decided_at: UtcDatetime = Field(default_factory=utcnow)
    round: int = Field(default=0, description="The proposal's round (re-opening) this decision belongs to.")


SYSTEM_ACTORS = frozenset({"system", "agent", "supervisor", "pipewarden", "policy", "inbox"})
POLICY_ACTOR = "policy"  # the identity of auto-approvals by an approval rule (via="policy"); never a person
AUTONOMY_ACTOR = "pipewarden:autonomy"  # earned autonomy's auto-approvals (via="autonomy"); never a person
AUTO_VIAS = frozenset({"policy", "autonomy"})  # decisions no person made


def is_system_actor(actor: str) -> bool:
    """System and agent identities (`system`, `agent:*`, `supervisor`, `policy`, `pipewarden:*`...) never decide as a
    person."""
    name = actor.strip().lower()
    return name in SYSTEM_ACTORS or name.startswith(("agent", "pipewarden:"))


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
    reason: str = Field("", description="Why the run halted or failed, in words.")
    halt_event: str | None = Field(None, description="The id of the event that halted the run.")
    rows_in: int = 0
    rows_quarantined: int = 0
    events: list[str] = Field(default_factory=list, description="Ids of the events the run emitted.")
    checks: CheckResult | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    flow_run_id: str | None = Field(None, description="The Prefect flow run that ran the batch, when there was one "
                                                      "(a re-run through a deployment, or a re-check run as a flow).")
