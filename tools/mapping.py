"""Applying a column mapping to a batch, and casting columns to contract types.

`apply_mapping` renames incoming columns to contract columns, converts values per the mapping's transforms
(`apply_transform`: a unit scale, a date format, epoch seconds) and casts retyped ones. A value that does not
convert or cast becomes null; it is never dropped silently: `map_frame` also returns the original values that failed,
and `tools.checks.run_checks` turns them into row reasons ("flight: cannot cast to integer (got 'AB12')"), so the
row is quarantined with its reason. Nothing here mutates its input.

`mapping_for_batch` picks the approved mapping that fits one batch: a mapping is scoped to the schema fingerprint
of the drifted batch it was proven on (target `mapping:<dataset>@<fingerprint>`), so a batch already in the
contract's shape passes untouched and two sources in different drifted shapes each keep their own fix.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import ConfigError
from pipewarden.models import ColumnMapping, ColumnTransform, mapping_target
from pipewarden.policies.column_types import COLUMN_TYPES, observed_type
from pipewarden.policies.contract import Contract, schema_diff, schema_fingerprint
from pipewarden.store import StateStore

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


class MappedFrame(BaseModel):
    """A batch after a column mapping, with what the mapping did and which values failed to cast."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    frame: pd.DataFrame
    renamed: dict[str, str] = Field(default_factory=dict, description="Renames applied (incoming -> contract).")
    skipped: dict[str, str] = Field(default_factory=dict, description="Renames not applied, with why.")
    cast: list[str] = Field(default_factory=list, description="Columns cast.")
    transformed: list[str] = Field(default_factory=list, description="Columns converted by a transform.")
    cast_failures: dict[str, Any] = Field(
        default_factory=dict,
        description="Per cast column, a Series of the original values that did not cast (index as `frame`).",
    )


def cast_column(values: pd.Series, to: str) -> tuple[pd.Series, pd.Series]:
    """Cast a Series to a contract type; returns (cast values, mask of non-null values that failed to cast).

    integer -> nullable Int64 (a non-whole number fails), float -> float64, string -> str (whole floats print
    without ".0"), timestamp -> UTC datetime (ISO 8601 strings), boolean -> nullable boolean.
    """
    if to not in COLUMN_TYPES:
        raise ConfigError(f"cannot cast to {to!r}: not a contract type", hint=f"use one of {', '.join(COLUMN_TYPES)}")
    s = values
    if to == "integer":
        if pd.api.types.is_integer_dtype(s.dtype):
            out = s.astype("Int64")
        else:
            num = _to_numeric(s)
            out = num.where((num % 1) == 0).astype("Int64")
    elif to == "float":
        out = _to_numeric(s).astype("float64")
    elif to == "string":
        if pd.api.types.is_float_dtype(s.dtype) and bool(((s.dropna() % 1) == 0).all()):
            s = s.astype("Int64")
        out = s.astype("str").where(s.notna(), None)
    elif to == "timestamp":
        out = to_timestamp(s)
    else:
        if pd.api.types.is_bool_dtype(s.dtype):
            out = s.astype("boolean")
        else:
            text = s.astype("str").str.strip().str.lower()
            out = pd.Series(pd.NA, index=s.index, dtype="boolean")
            out[text.isin(_TRUE)] = True
            out[text.isin(_FALSE)] = False
    failed = values.notna() & out.isna()
    return out, failed


def _to_numeric(s: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(s.dtype):  # bool included: True -> 1.0
        return s.astype("float64")
    text = s.astype("str").str.strip()
    return pd.to_numeric(text, errors="coerce").astype("float64")


def to_timestamp(values: pd.Series) -> pd.Series:
    """A Series as UTC timestamps: ISO 8601 strings are parsed, naive datetimes are taken as UTC; bad -> NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
        return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    return pd.to_datetime(values, utc=True, errors="coerce")


def apply_transform(values: pd.Series, transform: ColumnTransform) -> tuple[pd.Series, pd.Series]:
    """Convert a Series per one `ColumnTransform`; returns (converted values, mask of non-null values that failed).

    unit_scale -> float64 times `factor`; date_format -> UTC timestamps parsed with the strptime `format`;
    epoch -> UTC timestamps from seconds since 1970 (numbers or digit strings, times `factor` when given).
    A transform missing its `factor` or `format` is a ConfigError.
    """
    if transform.kind == "unit_scale":
        if transform.factor is None or not transform.factor:
            raise ConfigError(f"the unit_scale transform of {transform.column!r} has no factor",
                              hint="give a non-zero factor, e.g. 1/60 for seconds to minutes")
        out = _to_numeric(values) * float(transform.factor)
    elif transform.kind == "date_format":
        if not transform.format:
            raise ConfigError(f"the date_format transform of {transform.column!r} has no format",
                              hint="give a strptime format, e.g. '%m/%d/%Y %H:%M'")
        text = values.astype("str").str.strip().where(values.notna(), None)
        out = pd.to_datetime(text, format=transform.format, errors="coerce", utc=True)
    else:
        seconds = _to_numeric(values) * float(transform.factor or 1.0)
        out = pd.to_datetime(seconds, unit="s", errors="coerce", utc=True)
    failed = values.notna() & out.isna()
    return out, failed


def map_frame(df: pd.DataFrame, mapping: ColumnMapping, contract: Contract) -> MappedFrame:
    """Rename per `mapping.renames`, convert per `mapping.transforms`, then cast per `mapping.casts`; report what
    was done and what failed.

    A rename whose incoming column is absent is skipped (a batch that never drifted passes through); so is a
    rename whose target already exists in the batch (then the incoming column stays and shows as drift).
    A cast of a column the batch lacks is skipped. A mapping target that is not a contract column is a
    ConfigError.
    """
    for target in [*mapping.renames.values(), *mapping.casts, *(t.column for t in mapping.transforms)]:
        if target not in contract.names:
            raise ConfigError(
                f"the column mapping for {mapping.dataset} targets {target!r}, which is not a column of "
                f"{contract.version_tag}",
                hint=f"map to one of: {', '.join(contract.names)}",
            )
    renames: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for src, dst in mapping.renames.items():
        if src not in df.columns:
            skipped[src] = "not in the batch"
        elif dst in df.columns and dst != src:
            skipped[src] = f"the batch already has {dst!r}"
        else:
            renames[src] = dst
    out = df.rename(columns=renames) if renames else df.copy(deep=False)
    cast_done: list[str] = []
    failures: dict[str, pd.Series] = {}
    transformed: list[str] = []
    if mapping.transforms:
        out = out.copy(deep=False)
        for t in mapping.transforms:
            if t.column not in out.columns:
                continue
            new, failed = apply_transform(out[t.column], t)
            if failed.any():
                failures[t.column] = out[t.column][failed]
            out[t.column] = new
            transformed.append(t.column)
    if mapping.casts:
        out = out.copy(deep=False)
        for col, to in mapping.casts.items():
            if col not in out.columns:
                continue
            new, failed = cast_column(out[col], to)
            if failed.any() and col not in failures:
                failures[col] = out[col][failed]
            out[col] = new
            cast_done.append(col)
    return MappedFrame(frame=out, renamed=renames, skipped=skipped, cast=cast_done, transformed=transformed,
                       cast_failures=failures)


def apply_mapping(df: pd.DataFrame, mapping: ColumnMapping, contract: Contract) -> pd.DataFrame:
    """The batch with the mapping applied (a new DataFrame; `df` is not changed). See `map_frame`."""
    return map_frame(df, mapping, contract).frame


def conform_to_contract(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Cast every contract column to its canonical dtype, in contract order, other columns after.

    The canonical dtypes (Int64, float64, str, UTC datetime, boolean) give warehouse tables one stable
    schema whatever dtypes a batch arrived with. Values that cannot cast become null.
    """
    out: dict[str, pd.Series] = {}
    for col in contract.columns:
        if col.name in df.columns:
            out[col.name] = cast_column(df[col.name], col.type)[0]
    for name in df.columns:
        if name not in out:
            out[name] = df[name]
    return pd.DataFrame(out, index=df.index)


def batch_fingerprint(df: pd.DataFrame) -> str:
    """The schema fingerprint of a batch as it arrived (column names and observed types, in order), as ingest
    records it on the load."""
    return schema_fingerprint({str(c): observed_type(df[c]) for c in df.columns})


def landed_fingerprint(path: str | None) -> str | None:
    """The schema fingerprint ingest recorded on a landed Parquet batch (`pipewarden.schema_fingerprint`), or None
    when the file has none or cannot be read (then callers compute it from the frame)."""
    import fsspec
    import pyarrow.parquet as pq

    if not path:
        return None
    try:
        fs, local = fsspec.core.url_to_fs(str(path))
        with fs.open(local, "rb") as fh:
            meta = pq.read_schema(fh).metadata or {}
    except (OSError, ValueError):
        return None
    raw = meta.get(b"pipewarden.schema_fingerprint")
    return raw.decode() if raw else None


def mapping_for_batch(dataset: str, df: pd.DataFrame, contract: Contract, *, fingerprint: str | None = None,
                      store: StateStore | None = None) -> tuple[ColumnMapping | None, int | None]:
    """The active column mapping that fits this batch, and its version number, or (None, None).

    A batch already in the contract's shape gets no mapping. Otherwise the mapping proven on this batch's schema
    fingerprint (`fingerprint`, else computed from `df`) applies; failing that, an unscoped `mapping:<dataset>`
    (versions from before mappings were scoped) does.
    """
    if schema_diff(contract, df).clean:
        return None, None
    store = store or StateStore()
    for target in (mapping_target(dataset, fingerprint or batch_fingerprint(df)), mapping_target(dataset)):
        version = store.active_version(target)
        if version is not None:
            return ColumnMapping.model_validate(version.content), version.number
    return None, None
