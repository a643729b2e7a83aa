"""Batch fault injectors: copies of a batch with one fault in it, for the evals, the benchmarks and the tests.

`inject_drift` makes the schema-drift batches; `inject_unit_change`, `inject_date_format`, `inject_drop`,
`inject_added` and `inject_reorder` make the other schema-drift styles. `inject_nulls`, `inject_out_of_range`,
`inject_duplicates`, `inject_broken_refs`, `inject_volume_drop`, `inject_distribution_shift`, `inject_late` and
`drop_days` make the quality faults; `write_batch` writes a batch file. They work on any dataset's batch. (The
eval catalogue's example data is read in `pipewarden.evals`; the model faults the retrain tests inject live with
those tests, in tests/model_faults.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipewarden.errors import UnknownNameError, UserError


def inject_drift(df: pd.DataFrame, renames: dict[str, str] | None = None,
                 to_string: list[str] | None = None) -> pd.DataFrame:
    """A drifted copy of `df`: the columns in `to_string` become strings (nulls stay null), then columns are
    renamed per `renames` (old name -> new name). The input is not changed.

    E.g. the flights example's drift: `renames={"dep_delay": "departureDelay"}, to_string=["flight"]`.
    """
    renames, to_string = dict(renames or {}), list(to_string or [])
    for col in [*renames, *to_string]:
        if col not in df.columns:
            raise UnknownNameError("column", col, [str(c) for c in df.columns])
    out = df.copy()
    for col in to_string:
        s = out[col]
        # Whole floats become "12", not "12.0", as a feed that formats numbers as text would send them.
        if pd.api.types.is_float_dtype(s) and bool(((s.dropna() % 1) == 0).all()):
            s = s.astype("Int64")
        out[col] = s.astype("str").where(s.notna(), None)
    return out.rename(columns=renames)


def _require(df: pd.DataFrame, columns: list[str]) -> None:
    for col in columns:
        if col not in df.columns:
            raise UnknownNameError("column", col, [str(c) for c in df.columns])


def inject_unit_change(df: pd.DataFrame, column: str, factor: float, rename: str | None = None) -> pd.DataFrame:
    """A copy with `column` multiplied by `factor` (minutes -> seconds is 60), then renamed to `rename` if given."""
    _require(df, [column])
    out = df.copy()
    out[column] = out[column].astype("float64") * float(factor)
    return out.rename(columns={column: rename}) if rename else out


def inject_date_format(df: pd.DataFrame, column: str = "time_hour", fmt: str = "%m/%d/%Y %H:%M") -> pd.DataFrame:
    """A copy with the timestamp `column` re-written: as text in the strptime `fmt`, or with fmt "epoch" /
    "epoch_ms" as integer seconds / milliseconds since 1970-01-01 UTC (nulls stay null)."""
    _require(df, [column])
    out = df.copy()
    ts = pd.to_datetime(out[column], utc=True, format="ISO8601")
    if fmt in ("epoch", "epoch_ms"):
        seconds = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        out[column] = (seconds * (1000 if fmt == "epoch_ms" else 1)).round().astype("Int64")
    else:
        out[column] = ts.dt.strftime(fmt).where(ts.notna(), None)
    return out


def inject_drop(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A copy without `columns` (the feed stopped sending them)."""
    _require(df, list(columns))
    return df.drop(columns=list(columns))


def inject_added(df: pd.DataFrame, columns: dict[str, object]) -> pd.DataFrame:
    """A copy with new columns appended: name -> a constant, or a list/Series of values (one per row)."""
    out = df.copy()
    for name, values in columns.items():
        out[name] = values
    return out


def inject_reorder(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """A copy with the columns in a shuffled (seeded) order; names and values unchanged."""
    import random

    cols = [str(c) for c in df.columns]
    random.Random(seed).shuffle(cols)
    return df[cols].copy()


def write_batch(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a batch as CSV or Parquet, chosen by the suffix (.csv, .parquet, .pq); creates parent folders."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise UserError(f"{p}: unsupported batch file type {suffix or '(none)'!r}", hint="use .csv or .parquet")
    p.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        df.to_csv(p, index=False)
    else:
        df.to_parquet(p, index=False)
    return p


# --------------------------------------------------------------------------- quality faults (for tests and evals)
def _pick(df: pd.DataFrame, frac: float, seed: int, where: pd.Series | None = None) -> pd.Index:
    """`frac` of the rows (of those `where` marks), chosen reproducibly by `seed`; at least one row."""
    if not 0 < frac <= 1:
        raise UserError(f"frac must be in (0, 1], got {frac!r}", hint="pass a share of the rows, e.g. 0.05")
    pool = df.index if where is None else df.index[where.to_numpy(dtype=bool)]
    if len(pool) == 0:
        raise UserError("no row qualifies for the fault", hint="check the column and the filter")
    n = max(1, round(len(pool) * frac))
    return pd.Index(pd.Series(pool).sample(n=min(n, len(pool)), random_state=seed).sort_values())


def _need(df: pd.DataFrame, *columns: str) -> None:
    for col in columns:
        if col not in df.columns:
            raise UnknownNameError("column", col, [str(c) for c in df.columns])


def inject_nulls(df: pd.DataFrame, column: str, frac: float, *, seed: int = 0) -> pd.DataFrame:
    """A copy of `df` where `frac` of the rows that have a `column` value lose it (null spike)."""
    _need(df, column)
    out = df.copy()
    rows = _pick(out, frac, seed, out[column].notna())
    if not pd.api.types.is_float_dtype(out[column].dtype) and pd.api.types.is_integer_dtype(out[column].dtype):
        out[column] = out[column].astype("float64")
    out.loc[rows, column] = None
    return out


def inject_out_of_range(df: pd.DataFrame, column: str, frac: float = 0.05, *, value: float | None = None,
                        over: float = 0.1, seed: int = 0, dataset: str | None = None) -> pd.DataFrame:
    """A copy of `df` where `frac` of the rows get an out-of-range `column`.

    With `value`, every chosen row gets that value (a sentinel such as -999: garbage to quarantine). Without it,
    the chosen rows get distinct values spread evenly just past the upper bound in `dataset`'s contract, up to
    `over` of the bound's span beyond it: data that legitimately exceeds a too-tight contract.
    """
    from pipewarden.policies.contract import load_contract

    _need(df, column)
    out = df.copy()
    rows = _pick(out, frac, seed, out[column].notna())
    if value is None:
        if dataset is None:
            raise UserError(f"inject_out_of_range({column!r}) needs the dataset whose contract bounds the column",
                            hint="pass dataset=NAME, or value= for a fixed out-of-range value")
        c = load_contract(dataset).column(column)
        if c.max is None:
            raise UserError(f"{dataset}.{column} has no upper bound to exceed", hint="pass value= instead")
        span = c.max - (c.min if c.min is not None else 0.0)
        values = c.max + span * over * (np.arange(1, len(rows) + 1) / len(rows))
        if pd.api.types.is_integer_dtype(out[column].dtype):
            values = np.ceil(values).astype("int64")
        out.loc[rows, column] = values
    else:
        if pd.api.types.is_integer_dtype(out[column].dtype) and float(value) != int(value):
            out[column] = out[column].astype("float64")
        out.loc[rows, column] = value
    return out


def inject_duplicates(df: pd.DataFrame, frac: float = 0.05, *, changed: str | None = None,
                      seed: int = 0) -> pd.DataFrame:
    """`df` with copies of `frac` of its rows appended (a slice of the feed sent twice). With `changed`, the copies
    differ from their originals in that numeric column (+1): a re-sent record with an updated value."""
    rows = _pick(df, frac, seed)
    copies = df.loc[rows].copy()
    if changed is not None:
        _need(df, changed)
        copies[changed] = copies[changed] + 1
    return pd.concat([df, copies], ignore_index=True)


def inject_broken_refs(df: pd.DataFrame, column: str = "tailnum", frac: float = 0.05, *, codes: int = 10,
                       seed: int = 0) -> pd.DataFrame:
    """A copy of `df` where `frac` of the rows with a `column` value get one of `codes` made-up values (as long as
    the column's usual values, starting with 'X') that no reference table lists: broken references."""
    _need(df, column)
    out = df.copy()
    rows = _pick(out, frac, seed, out[column].notna())
    width = int(out[column].dropna().astype(str).str.len().median()) if out[column].notna().any() else 6
    fake = [f"X{i:0{max(width - 1, 1)}d}" for i in range(1, codes + 1)]
    out.loc[rows, column] = [fake[i % len(fake)] for i in range(len(rows))]
    return out


def inject_volume_drop(df: pd.DataFrame, keep: float = 0.4, *, seed: int = 0) -> pd.DataFrame:
    """A random `keep` share of the rows, in their order: a partial load whose rows went missing everywhere."""
    return df.loc[_pick(df, keep, seed)].reset_index(drop=True)


def inject_distribution_shift(df: pd.DataFrame, column: str, *, shift: float = 0.0, scale: float = 1.0,
                              where: dict[str, object] | None = None) -> pd.DataFrame:
    """A copy of `df` where `column` becomes `value * scale + shift`, on every row or only on the rows matching
    `where` (column -> value, e.g. {"carrier": "UA"}: one feed's values shifted)."""
    _need(df, column, *(where or {}))
    out = df.copy()
    mask = pd.Series(True, index=out.index)
    for col, val in (where or {}).items():
        mask &= out[col] == val
    shifted = out.loc[mask, column] * scale + shift
    if pd.api.types.is_integer_dtype(out[column].dtype):
        shifted = shifted.round().astype(out[column].dtype)
    out.loc[mask, column] = shifted
    return out


def inject_late(df: pd.DataFrame, days: float = 7, *, time_column: str = "time_hour") -> pd.DataFrame:
    """The batch without its last `days` days of data (by `time_column`): a batch whose tail arrives late."""
    _need(df, time_column)
    t = pd.to_datetime(df[time_column], utc=True, errors="coerce")
    return df.loc[t <= t.max() - pd.Timedelta(days=days)].reset_index(drop=True)


def drop_days(df: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    """The batch without the days of month `first`..`last` (the `day` column): a hole inside the batch.

    A missing batch needs no injector: run one batch, then the one after next; the one between never arrives.
    """
    _need(df, "day")
    return df.loc[~df["day"].between(first, last)].reset_index(drop=True)
