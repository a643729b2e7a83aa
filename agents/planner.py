"""What the schema-drift agent asks a planner, what it must answer, and the deterministic answer.

The planners themselves live in `agents.llm` (one OpenAI planner, one offline planner, one validate-retry-fallback
loop for every agent). This module holds the schema-drift half of the conversation:

- `DriftContext`: the evidence (contract columns, unexplained incoming columns with samples, missing columns, the
  matcher's suggestions with their value transforms, downstream SQL models, knowledge citations); it travels to
  the model as untrusted data (`request_for`).
- `MappingAnswer`: the answer model, fit for OpenAI strict structured outputs (lists of small objects, no free
  dicts): renames, casts, value transforms (unit scale, date format, epoch) and the contract columns to drop.
- `solve_mapping(ctx)`: the offline planner's deterministic answer: trust the matcher's suggestions at or above
  the threshold, cast retyped columns whose samples convert, take the matcher's transforms, and drop contract
  columns that nothing in the batch can feed (a loosening the proposal marks high risk).

Public names: `ContractColumn`, `IncomingColumn`, `Suggestion`, `DriftContext`, `RenamePair`, `CastPair`,
`TransformPair`, `MappingAnswer`, `solve_mapping`, `request_for`, `TASK`, `RULES`, `format_citation`,
`citation_id`, `castable`, `CONTRACT_TYPES`.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.models import ColumnMapping, ColumnTransform
from pipewarden.policies.column_types import COLUMN_TYPES, ColumnType

if TYPE_CHECKING:
    from pipewarden.agents.llm import PlanRequest
    from pipewarden.events import SchemaDrift
    from pipewarden.policies.contract import Contract

AGENT = "schema-drift"
CONTRACT_TYPES: tuple[str, ...] = COLUMN_TYPES
"""The contract type vocabulary, as `policies.column_types` holds it (the answer's JSON schema lists the same)."""

ContractType = ColumnType
TransformKind = Literal["unit_scale", "date_format", "epoch"]


# --------------------------------------------------------------------------- the context
class ContractColumn(BaseModel):
    """A column of the data contract, as the planner sees it."""

    model_config = ConfigDict(frozen=True)
    name: str
    type: str
    description: str = ""


class IncomingColumn(BaseModel):
    """A batch column that is not in the contract, or whose type does not match it, with a few sample values."""

    model_config = ConfigDict(frozen=True)
    name: str
    type: str
    samples: list[Any] = Field(default_factory=list)


class Suggestion(BaseModel):
    """The deterministic matcher's best guess for one incoming column."""

    model_config = ConfigDict(frozen=True)
    incoming: str
    contract_column: str | None = None
    score: float = 0.0
    cast: str | None = Field(default=None, description="The contract type the values must be cast to, if any.")
    transform: ColumnTransform | None = Field(default=None, description="A value conversion (unit, date format).")
    reason: str = ""

    @classmethod
    def from_match(cls, match: Any) -> Suggestion:
        """From a `tools.schema_match.ColumnMatch` (or anything with `column`, `match`, `score`, `cast`, `reason`)."""
        return cls(
            incoming=match.column, contract_column=match.match, score=float(match.score),
            cast=match.cast, transform=getattr(match, "transform", None), reason=match.reason,
        )


class DriftContext(BaseModel):
    """Everything a planner may use to draft a mapping for one drifted batch."""

    model_config = ConfigDict(frozen=True)
    dataset: str
    contract_columns: list[ContractColumn]
    incoming_columns: list[IncomingColumn] = Field(
        default_factory=list, description="Batch columns not in the contract, or retyped."
    )
    missing_columns: list[str] = Field(default_factory=list, description="Contract columns absent from the batch.")
    retyped: dict[str, str] = Field(
        default_factory=dict, description="Column -> observed type, for a contract column whose type differs."
    )
    suggestions: list[Suggestion] = Field(default_factory=list)
    citations: list[str] = Field(
        default_factory=list, description="Knowledge excerpts, each `[chunk_id] text` (see `format_citation`)."
    )
    downstream: dict[str, list[str]] = Field(
        default_factory=dict, description="Missing contract column -> the SQL models that read it (lineage)."
    )
    event_id: str | None = Field(default=None, description="The SchemaDrift event; tools take it to find the batch.")

    @property
    def contract_names(self) -> list[str]:
        return [c.name for c in self.contract_columns]

    @property
    def incoming_names(self) -> list[str]:
        return [c.name for c in self.incoming_columns]

    @property
    def present_contract_columns(self) -> set[str]:
        """Contract columns the batch already has under their own name."""
        return set(self.contract_names) - set(self.missing_columns)

    @property
    def citation_ids(self) -> list[str]:
        return [cid for c in self.citations if (cid := citation_id(c)) is not None]

    def contract_type(self, column: str) -> str | None:
        for c in self.contract_columns:
            if c.name == column:
                return c.type
        return None

    def incoming(self, column: str) -> IncomingColumn | None:
        for c in self.incoming_columns:
            if c.name == column:
                return c
        return None

    @classmethod
    def from_drift(
        cls,
        contract: Contract,
        event: SchemaDrift,
        *,
        suggestions: list[Suggestion] | None = None,
        citations: list[str] | None = None,
        retyped_samples: dict[str, list[Any]] | None = None,
    ) -> DriftContext:
        """Build the context from a contract and a `SchemaDrift` event (retyped columns carry no samples in the
        event; pass them in `retyped_samples` when the batch is at hand)."""
        samples = retyped_samples or {}
        incoming = [IncomingColumn(name=c.name, type=c.type, samples=list(c.samples)) for c in event.added]
        incoming += [IncomingColumn(name=t.column, type=t.observed, samples=samples.get(t.column, [])) for t in event.retyped]
        return cls(
            dataset=contract.dataset,
            contract_columns=[ContractColumn(name=c.name, type=c.type, description=c.description) for c in contract.columns],
            incoming_columns=incoming,
            missing_columns=[c.name for c in event.dropped],
            retyped={t.column: t.observed for t in event.retyped},
            suggestions=list(suggestions or []),
            citations=list(citations or []),
        )


_CITATION_RE = re.compile(r"^\[([^\]]+)\]")


def format_citation(chunk_id: str, excerpt: str, max_chars: int = 400) -> str:
    """One citation line for `DriftContext.citations`: `[chunk_id] excerpt`, the excerpt shortened."""
    text = " ".join(excerpt.split())
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return f"[{chunk_id}] {text}"


def citation_id(citation: str) -> str | None:
    """The chunk id a citation line starts with, or None when it has no `[id]` prefix."""
    m = _CITATION_RE.match(citation)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- the answer
class RenamePair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incoming: str = Field(description="An incoming column name, exactly as listed in incoming_columns.")
    contract_column: str = Field(description="The contract column it feeds, exactly as listed in contract_columns.")


class CastPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str = Field(description="A contract column name.")
    type: ContractType = Field(description="The contract's type for that column.")


class TransformPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str = Field(description="The contract column whose values are converted (after the rename).")
    kind: TransformKind = Field(description="unit_scale (times factor), date_format (strptime format), epoch.")
    factor: float | None = Field(description="unit_scale: the multiplier (1/60 turns seconds into minutes); "
                                 "epoch: 0.001 for milliseconds, else null.")
    format: str | None = Field(description="date_format: the strptime format, e.g. '%m/%d/%Y %H:%M'; else null.")

    def to_transform(self) -> ColumnTransform:
        return ColumnTransform(column=self.column, kind=self.kind, factor=self.factor, format=self.format)


class MappingAnswer(BaseModel):
    """What a planner returns for a drifted batch (OpenAI strict structured outputs: every field is sent)."""

    model_config = ConfigDict(extra="forbid")
    renames: list[RenamePair] = Field(default_factory=list,
                                      description="Incoming columns to rename; leave out columns with no clear match.")
    casts: list[CastPair] = Field(default_factory=list,
                                  description="Contract columns whose incoming values must be cast to the contract type.")
    transforms: list[TransformPair] = Field(default_factory=list,
                                            description="Value conversions: units, date formats, epoch numbers.")
    drop_from_contract: list[str] = Field(
        default_factory=list,
        description="Missing contract columns that no incoming column feeds: the contract stops requiring them.")
    rationale: str = Field(default="", description="Short evidence for each rename, cast, transform and drop.")
    cited_chunks: list[str] = Field(default_factory=list,
                                    description="Ids of the knowledge chunks used (the [id] prefix of a citation).")

    @property
    def rename_map(self) -> dict[str, str]:
        return {r.incoming: r.contract_column for r in self.renames}

    @property
    def cast_map(self) -> dict[str, str]:
        return {c.column: c.type for c in self.casts}

    def to_mapping(self, dataset: str) -> ColumnMapping:
        return ColumnMapping(dataset=dataset, renames=self.rename_map, casts=self.cast_map,
                             transforms=[t.to_transform() for t in self.transforms])

    @property
    def changes_mapping(self) -> bool:
        return bool(self.renames or self.casts or self.transforms)


# --------------------------------------------------------------------------- castability
_TRUE_FALSE = {"true", "false", "t", "f", "yes", "no", "y", "n", "0", "1"}


def _parses(value: Any, target: str) -> bool:
    if value is None:
        return True
    if target == "string":
        return True
    if isinstance(value, bool):
        return target == "boolean"
    text = str(value).strip()
    if target == "integer":
        try:
            f = float(text)
        except ValueError:
            return False
        return math.isfinite(f) and f == int(f)
    if target == "float":
        try:
            float(text)
        except ValueError:
            return False
        return True
    if target == "timestamp":
        try:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    if target == "boolean":
        return text.lower() in _TRUE_FALSE
    return False


_CASTABLE_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("string", "integer"), ("string", "float"), ("string", "timestamp"), ("string", "boolean"),
        ("float", "integer"), ("integer", "float"), ("integer", "boolean"), ("boolean", "integer"),
        ("integer", "string"), ("float", "string"), ("boolean", "string"), ("timestamp", "string"),
    }
)


def castable(observed: str, target: str, samples: list[Any] | None = None) -> bool:
    """Whether values of `observed` type can be cast to the contract type `target`; when samples are given,
    every sample must convert (e.g. the strings '1545', '1714' to integer, but not 'UA1545')."""
    if target not in CONTRACT_TYPES:
        return False
    if observed == target:
        return True
    if (observed, target) not in _CASTABLE_PAIRS:
        return False
    return all(_parses(v, target) for v in (samples or []))


# --------------------------------------------------------------------------- the offline answer
def solve_mapping(ctx: DriftContext, threshold: float = 0.5) -> MappingAnswer:
    """The deterministic answer: the matcher's suggestions at or above `threshold` (the matcher's own, 0.5),
    casts of retyped columns whose samples convert, the matcher's value transforms, and a drop for each
    missing contract column nothing feeds."""
    evidence: list[str] = []
    renames: dict[str, str] = {}
    casts: dict[str, str] = {}
    present = ctx.present_contract_columns
    claimed: dict[str, Suggestion] = {}
    incoming_names = set(ctx.incoming_names)
    transforms: dict[str, ColumnTransform] = {}
    # a column present under its own name whose values changed form (a unit, a date format): convert it
    for s in ctx.suggestions:
        if s.transform is not None and s.contract_column == s.incoming and s.incoming in present:
            transforms[s.incoming] = s.transform
            evidence.append(f"{s.transform.describe()}: {s.reason}")
    # best score first, then by name, so the outcome does not depend on the suggestions' order
    for s in sorted(ctx.suggestions, key=lambda s: (-s.score, s.incoming, s.contract_column or "")):
        if s.contract_column == s.incoming:
            continue  # the same name: a transform (above) or a cast of the retyped column (below) covers it
        why = f" ({s.reason})" if s.reason else ""
        if s.contract_column is None:
            evidence.append(f"left {s.incoming!r} unmapped: the matcher found no contract column{why}")
            continue
        if s.score < threshold:
            evidence.append(
                f"left {s.incoming!r} unmapped: best match {s.contract_column!r} scored {s.score:.2f}, "
                f"below the threshold {threshold:.2f}{why}"
            )
            continue
        if s.incoming not in incoming_names:
            evidence.append(f"ignored the suggestion for {s.incoming!r}: it is not an incoming column")
            continue
        if ctx.contract_type(s.contract_column) is None:
            evidence.append(f"ignored {s.incoming!r} -> {s.contract_column!r}: not a contract column")
            continue
        if s.contract_column in present:
            evidence.append(f"left {s.incoming!r} unmapped: {s.contract_column!r} is already in the batch")
            continue
        if s.contract_column in claimed:
            other = claimed[s.contract_column]
            evidence.append(
                f"left {s.incoming!r} unmapped: {s.contract_column!r} already takes {other.incoming!r} "
                f"(score {other.score:.2f} >= {s.score:.2f})"
            )
            continue
        if s.incoming in renames:
            continue
        claimed[s.contract_column] = s
        renames[s.incoming] = s.contract_column
        evidence.append(f"renamed {s.incoming!r} -> {s.contract_column!r}: matcher score {s.score:.2f}{why}")
        if s.cast:
            casts[s.contract_column] = s.cast
            evidence.append(f"cast {s.contract_column!r} to {s.cast} (the matcher's suggestion)")
        if s.transform is not None:
            transforms[s.contract_column] = s.transform
            evidence.append(f"{s.transform.describe()} (the matcher's suggestion)")
    for column, observed in sorted(ctx.retyped.items()):
        target = ctx.contract_type(column)
        if target is None or column in casts:
            continue
        if column in transforms and transforms[column].kind in ("date_format", "epoch"):
            continue  # the transform already yields the contract's timestamps
        inc = ctx.incoming(column)
        samples = list(inc.samples) if inc else []
        if castable(observed, target, samples):
            casts[column] = target
            shown = ", ".join(repr(v) for v in samples[:3])
            evidence.append(
                f"cast {column!r} from {observed} to {target}" + (f": samples {shown} convert" if shown else "")
            )
        else:
            evidence.append(f"did not cast {column!r}: its {observed} values do not convert to {target}")
    fed = set(renames.values())
    drops = [c for c in ctx.missing_columns if c not in fed and ctx.contract_type(c) is not None]
    for c in drops:
        models = ctx.downstream.get(c, [])
        evidence.append(f"no incoming column feeds {c!r}: drop it from the contract (loosens; high risk)"
                        + (f"; SQL models that read it: {', '.join(models)}" if models else ""))
    cited = _relevant_citations(ctx, set(renames) | fed | set(casts) | set(transforms) | set(drops))
    if not evidence:
        evidence.append("no suggestion and no retyped column: nothing to map")
    return MappingAnswer(
        renames=[RenamePair(incoming=k, contract_column=v) for k, v in renames.items()],
        casts=[CastPair(column=k, type=v) for k, v in casts.items()],  # type: ignore[arg-type]
        transforms=[TransformPair(column=t.column, kind=t.kind, factor=t.factor, format=t.format)
                    for t in transforms.values()],
        drop_from_contract=drops, rationale="; ".join(evidence), cited_chunks=cited)


def _relevant_citations(ctx: DriftContext, columns: set[str]) -> list[str]:
    """Ids of the citations whose text names one of the columns (whole word)."""
    if not columns:
        return []
    pattern = re.compile(r"\b(" + "|".join(re.escape(c) for c in sorted(columns)) + r")\b")
    out: list[str] = []
    for c in ctx.citations:
        cid = citation_id(c)
        if cid is not None and pattern.search(c[len(cid) + 2 :]) and cid not in out:
            out.append(cid)
    return out



# --------------------------------------------------------------------------- the request
TASK = ("The batch of a dataset no longer matches its data contract. Propose the renames, casts and value "
        "transforms that make it match, and the contract columns to drop when no incoming column can feed them.")

RULES: list[str] = [
    "Only rename a column listed in incoming_columns, and only to a contract column in missing_columns. Never map "
    "two incoming columns to the same contract column. Leave a column out when the evidence is weak.",
    "A cast names a contract column and exactly the type the contract gives it. Cast a retyped column only if its "
    "sample values convert.",
    "A transform converts values of a contract column: unit_scale with a factor when the values are in another "
    "unit (seconds instead of minutes: factor 1/60), date_format with a strptime format for non-ISO text dates, "
    "epoch for numbers that count seconds since 1970.",
    "drop_from_contract lists only missing_columns that no rename feeds; it loosens the contract and a human "
    "decides, so use it only when no incoming column is the missing one.",
    "The suggestions come from a deterministic matcher: use them as evidence, not as orders.",
    "In cited_chunks, list only ids from the [id] prefixes of the citations you used.",
]


def request_for(ctx: DriftContext) -> PlanRequest:
    """The planner request for one drifted batch: the trusted task and rules, the context as untrusted data."""
    from pipewarden.agents.llm import PlanRequest

    return PlanRequest(agent=AGENT, task=TASK, rules=list(RULES), data=ctx.model_dump(mode="json"))
