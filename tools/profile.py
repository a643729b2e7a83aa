"""Profiling a table, and proposing the expectation part of a data contract from the profile.

`profile_frame(df)` gives one `ColumnStats` per column: its contract type (ISO timestamp strings count as
timestamps), nulls, distinct values, quantiles, the most common values and the longest string. `suggest_contract`
turns a profile into a contract in the `contracts/*.yaml` format: each column's type, `nullable: false`
when no value is null, `min`/`max` from the 0.05% and 99.95% quantiles widened by a margin (whole numbers for
integer columns; never below zero for a column that has no negative value), an `allowed` set for
low-cardinality strings, a `max_length` for other strings, and which columns (and which policy key) are unique.
The owner, roles, descriptions and failure threshold come from the current contract when there is one.
`contract_yaml` prints it as the contract files are written (one flow-style line per column), with uniqueness and
the rows the suggestion would reject as comments, so the output loads with `policies.contract.load_contract`.

Pure pandas; nothing is read or written here (the CLI reads the data and writes the file).

Public names: `ValueCount`, `ColumnStats`, `SuggestedContract`, `profile_column`, `profile_frame`,
`suggest_contract`, `contract_yaml`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from pipewarden.policies.column_types import NUMERIC, observed_type
from pipewarden.policies.contract import Contract

QUANTILES: tuple[float, ...] = (0.0005, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.9995)
LOW, HIGH = 0.0005, 0.9995


class ValueCount(BaseModel):
    value: str
    count: int


class ColumnStats(BaseModel):
    """One column's profile."""

    name: str
    type: str = Field(description="Contract type vocabulary: integer, float, string, timestamp, boolean.")
    rows: int
    nulls: int
    null_share: float
    distinct: int
    min: float | str | None = None
    max: float | str | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = Field(default_factory=dict, description="'p0.05' -> value, numeric columns only.")
    top: list[ValueCount] = Field(default_factory=list, description="Most common values (strings and booleans).")
    max_length: int | None = None

    @property
    def unique(self) -> bool:
        return self.rows > 1 and self.nulls == 0 and self.distinct == self.rows


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def profile_column(name: str, values: pd.Series, top: int = 10) -> ColumnStats:
    """The profile of one column (see `ColumnStats`)."""
    from pipewarden.tools.mapping import to_timestamp

    rows = len(values)
    nulls = int(values.isna().sum())
    present = values.dropna()
    typ = observed_type(values)
    if typ == "string" and len(present):
        parsed = to_timestamp(present)
        if bool(parsed.notna().all()) and present.astype(str).str.contains(r"^\d{4}-\d{2}-\d{2}", regex=True).all():
            typ, present = "timestamp", parsed
    stats = ColumnStats(name=name, type=typ, rows=rows, nulls=nulls, null_share=nulls / rows if rows else 0.0,
                        distinct=int(present.nunique()))
    if typ in NUMERIC and len(present):
        num = present.astype("float64").to_numpy()
        qs = np.quantile(num, QUANTILES)
        stats.min, stats.max = float(num.min()), float(num.max())
        stats.mean, stats.std = _finite(num.mean()), _finite(num.std())
        stats.quantiles = {f"p{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)}
    elif typ == "timestamp" and len(present):
        stats.min, stats.max = str(present.min().isoformat()), str(present.max().isoformat())
    elif len(present):
        text = present.astype(str)
        counts = text.value_counts().head(top)
        stats.top = [ValueCount(value=str(v), count=int(c)) for v, c in counts.items()]
        stats.max_length = int(text.str.len().max())
        stats.min, stats.max = str(text.min()), str(text.max())
    return stats


def profile_frame(df: pd.DataFrame) -> list[ColumnStats]:
    """Every column's profile, in column order (columns starting with `_`, load metadata, are left out)."""
    return [profile_column(str(c), df[c]) for c in df.columns if not str(c).startswith("_")]


class SuggestedContract(BaseModel):
    """A proposed contract (as its YAML holds it) with what it is based on."""

    dataset: str
    contract: dict[str, Any]
    rows_profiled: int
    rows_rejected: int = Field(description="Profiled rows the suggested column rules would reject.")
    unique_columns: list[str] = Field(default_factory=list)
    unique_keys: list[str] | None = Field(default=None, description="The quality policy's key, if it is unique here.")
    notes: list[str] = Field(default_factory=list, description="Where the suggestion differs from the current contract.")


def _bound(value: float, integer: bool, up: bool) -> float | int:
    if integer:
        return int(math.ceil(value)) if up else int(math.floor(value))
    step = 10 ** max(math.floor(math.log10(abs(value))) - 2, -6) if value else 1e-6
    rounded = (math.ceil(value / step) if up else math.floor(value / step)) * step
    return float(f"{rounded:.6g}")


def suggest_contract(
    df: pd.DataFrame, dataset: str, current: Contract | None = None, *, margin: float = 0.1, max_allowed: int = 20,
    keys: list[str] | None = None,
) -> SuggestedContract:
    """Propose a contract for `dataset` from the data in `df` (see the module docstring for the rules).

    `margin` widens each numeric range by that share of its quantile span on both sides; strings with at most
    `max_allowed` distinct values (and far fewer than the rows) get an `allowed` set. `keys` (the quality policy's
    key) is reported as unique or not.
    """
    from pipewarden.tools.checks import run_checks

    stats = profile_frame(df)
    columns: list[dict[str, Any]] = []
    notes: list[str] = []
    for s in stats:
        col: dict[str, Any] = {"name": s.name, "type": s.type, "nullable": s.nulls > 0}
        old = None
        if current is not None and s.name in current.names:
            old = current.column(s.name)
            if old.type != s.type and not (old.type == "float" and s.type == "integer"):
                notes.append(f"{s.name}: the data profiles as {s.type}, the contract says {old.type}")
            col["type"] = old.type if old.type == "float" and s.type == "integer" else s.type
        if s.quantiles:
            lo, hi = s.quantiles[f"p{LOW:g}"], s.quantiles[f"p{HIGH:g}"]
            integer = col["type"] == "integer"
            pad = (hi - lo) * margin
            pad = math.floor(pad) if integer else pad
            low = max(lo - pad, 0.0) if lo >= 0 else lo - pad  # a margin never makes a non-negative column signed
            col["min"], col["max"] = _bound(low, integer, up=False), _bound(hi + pad, integer, up=True)
            if old is not None and (old.min, old.max) != (col["min"], col["max"]):
                notes.append(f"{s.name}: range [{col['min']}, {col['max']}] from the data; the contract has "
                             f"[{old.min}, {old.max}]")
        elif s.type == "string" and s.top:
            non_null = s.rows - s.nulls
            if s.distinct <= max_allowed and s.distinct * 20 <= max(non_null, 1):
                col["allowed"] = sorted(df[s.name].dropna().astype(str).unique().tolist())
            else:
                col["max_length"] = s.max_length
        if old is not None and old.nullable != col["nullable"]:
            notes.append(f"{s.name}: {'has nulls' if col['nullable'] else 'has no nulls'} here; the contract says "
                         f"nullable: {str(old.nullable).lower()}")
        if old is not None and old.description:
            col["description"] = old.description
        columns.append({k: v for k, v in col.items() if v is not None})
    base: dict[str, Any] = (
        current.model_dump(mode="json", exclude={"path", "columns"}) if current is not None
        else {"dataset": dataset, "version": 1, "description": "", "source": "", "owner": "unknown",
              "stewards": [], "allowed_roles": ["owner", "steward", "engineer"], "max_failure_rate": 0.05}
    )
    if current is not None:
        base["version"] = current.version + 1
        missing = [c for c in current.names if c not in df.columns]
        if missing:
            notes.append(f"not in the data, left out: {', '.join(missing)}")
    contract = {**base, "columns": columns}
    suggested = Contract.model_validate({**contract, "path": "(suggested)"})
    report = run_checks(df[[c for c in suggested.names]], suggested, engine="pandas")
    unique_keys = None
    if keys and all(k in df.columns for k in keys):
        unique_keys = keys if not df.duplicated(subset=keys).any() else None
        if unique_keys is None:
            notes.append(f"the key ({', '.join(keys)}) is not unique in this data")
    return SuggestedContract(
        dataset=dataset, contract=contract, rows_profiled=len(df), rows_rejected=int(report.result.failed_rows),
        unique_columns=[s.name for s in stats if s.unique], unique_keys=unique_keys, notes=notes,
    )


def contract_yaml(s: SuggestedContract, *, source: str = "") -> str:
    """The suggestion as a contract file: the same layout as `contracts/*.yaml`."""
    import yaml

    def flow(value: Any) -> str:
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=100_000, allow_unicode=True)
        return text.removesuffix("\n...\n").strip()  # a plain scalar ends with a document-end marker

    c = s.contract
    lines = [
        f"# Suggested data contract for {s.dataset}, profiled from {source or 'the data'} ({s.rows_profiled} rows).",
        f"# The column rules below would reject {s.rows_rejected} of those rows. Review before replacing the contract.",
    ]
    lines += [f"# note: {n}" for n in s.notes]
    if s.unique_columns:
        lines.append(f"# unique columns: {', '.join(s.unique_columns)}")
    if s.unique_keys:
        lines.append(f"# unique key (policies/quality.yaml keys): ({', '.join(s.unique_keys)})")
    for key in ("dataset", "version", "description", "source", "owner"):
        lines.append(f"{key}: {flow(c.get(key, ''))}")
    lines.append(f"stewards: {flow(list(c.get('stewards', [])))}")
    lines.append(f"allowed_roles: {flow(list(c.get('allowed_roles', [])))}")
    lines.append(f"max_failure_rate: {flow(c.get('max_failure_rate', 0.05))}")
    lines.append("columns:")
    unique = set(s.unique_columns)
    for col in c["columns"]:
        lines.append(f"  - {flow(col)}" + ("  # unique" if col["name"] in unique else ""))
    return "\n".join(lines) + "\n"
