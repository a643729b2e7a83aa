"""(f) The guard on a user's own flow, measured on the orders example (examples/orders).

- overhead: the same Prefect flow on one 300,000-row export, once calling `pipewarden.prefect.guard` before it
  writes the rows to the warehouse and once writing them unchecked; runs alternate, after a warm-up. Reported:
  median wall time of each, their ratio (target <= 1.10x) and rows per second through the guarded flow.
- halted run -> proposal: a drifted export fails the flow run; then one supervise pass (offline planner) turns the
  event into a proposal. Reported: the flow run's own time to Failed, the supervise time, and their sum (from the
  start of the halted run to the proposal stored in the inbox), first (cold) and then warm.

Called by bench.py (`--guard-only`, or as part of the whole run); prints nothing itself and asserts nothing.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ROWS = 300_000
TARGET = 1.10


def _project(home: Path, repo: Path) -> Path:
    dest = home / "orders-project"
    if not dest.exists():
        shutil.copytree(repo / "examples" / "orders", dest, ignore=shutil.ignore_patterns("__pycache__", ".pipewarden"))
    return dest


def bench_guard(home: Path, repo: Path, say: Any, repeats: int = 5) -> dict[str, Any]:
    import os
    import sys

    project = _project(home, repo)
    os.environ["PIPEWARDEN_PROJECT"] = str(project)
    sys.path.insert(0, str(project))  # the example's own `tools` package (its export generator)
    from pipewarden.settings import get_settings

    get_settings.cache_clear()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    try:
        # flow-run heartbeats off: with them every run's wall time is rounded up to a whole second (see bench.py's
        # prefect_heartbeats), which would hide the guard's cost in both variants alike
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return {"overhead": _overhead(say, repeats), "halt_to_proposal": _halt_to_proposal(say)}
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("tools", None)
        sys.modules.pop("tools.exports", None)


def _overhead(say: Any, repeats: int) -> dict[str, Any]:
    import duckdb
    from prefect import flow
    from tools.exports import export  # type: ignore[import-not-found]

    from pipewarden.prefect import guard
    from pipewarden.settings import get_settings

    frame = export(1, rows=ROWS)
    warehouse = str(get_settings().warehouse_path)

    def write(df: Any, table: str) -> None:
        con = duckdb.connect(warehouse)
        try:
            con.register("_batch", df)
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _batch")
        finally:
            con.close()

    @flow(name="bench-orders-unguarded", persist_result=False)
    def unguarded() -> int:
        write(frame, "bench_orders")
        return len(frame)

    @flow(name="bench-orders-guarded", persist_result=False)
    def guarded() -> int:
        accepted = guard(frame, dataset="orders")
        write(accepted, "bench_orders")
        return len(accepted)

    get_settings().ensure_home()
    say(f"  warm-up: one run of each flow on {ROWS:,} rows ...")
    accepted = guarded()
    unguarded()
    times: dict[str, list[float]] = {"guarded": [], "unguarded": []}
    for i in range(repeats):
        order = (("guarded", guarded), ("unguarded", unguarded))
        for name, fn in order if i % 2 == 0 else tuple(reversed(order)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["guarded"] / med["unguarded"]
    say(f"  guarded {med['guarded']:.2f}s / unguarded {med['unguarded']:.2f}s = {ratio:.2f}x (target <= {TARGET}x)")
    return {
        "rows": ROWS, "accepted": accepted, "repeats": repeats,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio": round(ratio, 3), "target": TARGET,
        "guarded_rows_per_s": round(ROWS / med["guarded"]),
    }


def _halt_to_proposal(say: Any, rounds: int = 3) -> dict[str, Any]:
    from prefect import flow
    from tools.exports import drifted_export  # type: ignore[import-not-found]

    from pipewarden.agents.supervisor import supervise_once
    from pipewarden.prefect import guard
    from pipewarden.store import StateStore

    @flow(name="bench-orders-drifted", persist_result=False)
    def drifted(day: int) -> int:
        return len(guard(drifted_export(day, rows=2000), dataset="orders"))

    out: list[dict[str, float]] = []
    for i in range(rounds):
        day = 10 + i  # each round a new export (new load, new event)
        t0 = time.perf_counter()
        state = drifted(day, return_state=True)
        t_failed = time.perf_counter()
        assert state.is_failed(), f"the drifted export should fail its flow run, got {state.type}"
        supervise_once(limit=1)
        t_prop = time.perf_counter()
        made = [p for p in StateStore().list_proposals() if p.dataset == "orders"]
        out.append({"flow_run_s": t_failed - t0, "supervise_s": t_prop - t_failed, "total_s": t_prop - t0,
                    "proposals": len(made)})
        say(f"  round {i + 1}: flow run failed in {t_failed - t0:.2f}s, proposal {t_prop - t_failed:.2f}s later")
    warm = out[1:] or out
    return {
        "rounds": [{k: round(v, 3) for k, v in r.items()} for r in out],
        "cold_total_s": round(out[0]["total_s"], 3),
        "warm_median_total_s": round(statistics.median(r["total_s"] for r in warm), 3),
        "warm_median_supervise_s": round(statistics.median(r["supervise_s"] for r in warm), 3),
    }
