"""The shop's order pipeline, as a Prefect flow: guard each export against its contract, then build the models.

Run it once:        python -m flows.orders_flow --day 1
Serve it:           python -m flows.orders_flow --serve          (a deployment named orders-pipeline/hourly)

pipewarden appears in three lines: `guard` checks the export (bad rows quarantined with reasons, a halted export
fails this flow run with the event and the command to look at it), and `build` runs models/*.sql in order.
After a fix is approved, pipewarden re-runs this deployment with the same parameters.
"""

from __future__ import annotations

import argparse

from prefect import flow
from tools.exports import customers, drifted_export, export

from pipewarden.prefect import build, guard


@flow(name="orders-pipeline", persist_result=False)
def orders_pipeline(day: int = 1, drifted: bool = False) -> dict[str, int]:
    """One hourly export of orders (day `day` of June), with the release that drifts its schema when `drifted`."""
    guard(customers(), dataset="customers")  # the reference table broken-reference checks use
    frame = drifted_export(day) if drifted else export(day)
    accepted = guard(frame, dataset="orders", source=f"order export, day {day}")
    build()
    return {"accepted": len(accepted)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", type=int, default=1)
    parser.add_argument("--drifted", action="store_true")
    parser.add_argument("--serve", action="store_true", help="serve the flow as the deployment 'hourly'")
    args = parser.parse_args()
    if args.serve:
        orders_pipeline.serve(name="hourly")
    else:
        print(orders_pipeline(day=args.day, drifted=args.drifted))


if __name__ == "__main__":
    main()
