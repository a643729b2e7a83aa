"""The deterministic checks every schema-drift answer must pass before it can become a proposal (invariant 2).

`validate_mapping(answer, ctx)` returns one readable error per problem (empty: it passes). The agent adds its own
proof on top (the dry-run must heal the batch, drop patches must be proven in DuckDB) by composing validators:
`validate=lambda a: validate_mapping(a, ctx) or dry_run_errors(a)`; `agents.llm.plan` sends the errors back to the
model as feedback, then falls back to the offline answer.

Public names: `validate_mapping`.
"""

from __future__ import annotations

import math
from datetime import datetime
from difflib import get_close_matches

from pipewarden.agents.planner import CONTRACT_TYPES, DriftContext, MappingAnswer
from pipewarden.policies.column_types import NUMERIC


def validate_mapping(answer: MappingAnswer, ctx: DriftContext) -> list[str]:
    """The deterministic checks on a mapping answer.

    Every rename key is an incoming column, renamed at most once; every rename value is a contract column the
    batch does not already have (no hallucinated columns, no collisions); no two incoming columns feed one
    contract column; every cast targets a contract column once, with the contract's type; every transform
    targets a contract column with what its kind needs (a finite non-zero factor, a format that parses the
    samples); every dropped column is a missing contract column no rename feeds; every cited chunk is one of
    the context's citations.
    """
    errors: list[str] = []
    incoming = ctx.incoming_names
    contract = ctx.contract_names
    present = ctx.present_contract_columns
    renamed_away = {r.incoming for r in answer.renames} & present
    targets: dict[str, str] = {}
    seen: dict[str, str] = {}
    for r in answer.renames:
        src, dst = r.incoming, r.contract_column
        if src in seen:
            errors.append(f"renames {src!r} twice ({seen[src]!r} and {dst!r}); rename each incoming column once")
            continue
        seen[src] = dst
        if src not in incoming:
            errors.append(f"renames unknown column {src!r}{_did_you_mean(src, incoming)}; incoming columns: {_names(incoming)}")
        if dst not in contract:
            errors.append(f"renames {src!r} to {dst!r}, which is not a contract column{_did_you_mean(dst, contract)}")
            continue
        if dst != src and dst in present and dst not in renamed_away:
            errors.append(f"renames {src!r} to {dst!r}, but the batch already has a column {dst!r}")
        if dst in targets:
            errors.append(f"renames both {targets[dst]!r} and {src!r} to {dst!r}; map at most one column to it")
        else:
            targets[dst] = src
    cast_seen: set[str] = set()
    for c in answer.casts:
        column, typ = c.column, c.type
        if column in cast_seen:
            errors.append(f"casts {column!r} twice; cast each contract column once")
            continue
        cast_seen.add(column)
        expected = ctx.contract_type(column)
        if expected is None:
            errors.append(f"casts {column!r}, which is not a contract column{_did_you_mean(column, contract)}")
            continue
        if typ not in CONTRACT_TYPES:
            errors.append(f"casts {column!r} to {typ!r}, which is not a contract type ({', '.join(CONTRACT_TYPES)})")
        elif typ != expected:
            errors.append(f"casts {column!r} to {typ}, but the contract says {expected}")
    errors += _transform_errors(answer, ctx, targets)
    for column in answer.drop_from_contract:
        if column not in ctx.missing_columns:
            errors.append(f"drops {column!r} from the contract, but it is not a missing column "
                          f"(missing: {_names(ctx.missing_columns)})")
        elif column in targets:
            errors.append(f"drops {column!r} from the contract and also renames {targets[column]!r} to it")
    errors += _contradictions(answer, ctx)
    known = ctx.citation_ids
    for cid in answer.cited_chunks:
        if cid not in known:
            errors.append(f"cites chunk {cid!r}, which is not among the citations given ({_names(known)})")
    return errors


CONFIDENT = 0.8
"""A matcher score at or above which the deterministic evidence (names and values) outranks a model's answer."""


def _contradictions(answer: MappingAnswer, ctx: DriftContext) -> list[str]:
    """Renames that contradict a confident matcher suggestion. A model may fill the gaps the matcher leaves; it
    may not overrule strong evidence: that is how a plausible swap, or an instruction planted in the data, would
    slip through checks that a swapped pair of same-typed columns passes."""
    best = {s.incoming: s for s in ctx.suggestions if s.contract_column is not None}
    errors: list[str] = []
    for r in answer.renames:
        s = best.get(r.incoming)
        if s is not None and s.score >= CONFIDENT and s.contract_column != r.contract_column:
            errors.append(
                f"renames {r.incoming!r} to {r.contract_column!r}, but its names and values match "
                f"{s.contract_column!r} (matcher score {s.score:.2f}); follow the evidence"
            )
    return errors


def _transform_errors(answer: MappingAnswer, ctx: DriftContext, targets: dict[str, str]) -> list[str]:
    errors: list[str] = []
    done: set[str] = set()
    for t in answer.transforms:
        expected = ctx.contract_type(t.column)
        if expected is None:
            errors.append(f"transforms {t.column!r}, which is not a contract column{_did_you_mean(t.column, ctx.contract_names)}")
            continue
        if t.column in done:
            errors.append(f"transforms {t.column!r} twice; give one transform per column")
            continue
        done.add(t.column)
        if t.kind == "unit_scale":
            if expected not in NUMERIC:
                errors.append(f"scales {t.column!r}, but the contract says it is {expected}, not a number")
            if t.factor is None or not math.isfinite(t.factor) or t.factor == 0:
                errors.append(f"the unit_scale of {t.column!r} needs a finite non-zero factor, got {t.factor!r}")
        elif t.kind in ("date_format", "epoch") and expected != "timestamp":
            errors.append(f"reads {t.column!r} as dates, but the contract says it is {expected}")
        if t.kind == "date_format":
            if not t.format:
                errors.append(f"the date_format of {t.column!r} needs a strptime format")
                continue
            source = targets.get(t.column, t.column)
            inc = ctx.incoming(source)
            samples = [str(v) for v in (inc.samples if inc else []) if v is not None]
            bad = [v for v in samples if not _parses(v, t.format)]
            if bad:
                errors.append(f"the format {t.format!r} does not parse {t.column!r} values such as {bad[0]!r}")
    return errors


def _parses(value: str, fmt: str) -> bool:
    try:
        datetime.strptime(value.strip(), fmt)
    except ValueError:
        return False
    return True


def _did_you_mean(name: str, known: list[str]) -> str:
    close = get_close_matches(name, known, n=2)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _names(names: list[str], limit: int = 12) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
