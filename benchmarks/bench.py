#!/usr/bin/env python
"""pipewarden benchmarks: what supervision costs a pipeline run, and how fast an event becomes a proposal.

A script, not a test: it prints figures (ratios, rates, medians) and never asserts on time.

(a) supervision overhead: the same month of flights (month 3, already landed) re-run through the pipeline flow
    WITH contract checks and events (`supervision=True`) and WITHOUT them (`supervision=False`), after a warm-up
    (Prefect's local server, first imports, the GX context, a champion model trained), alternating the order each
    repeat. Reported: the median wall time of each, their ratio (target <= 1.25x), and the median per-stage
    timings (`RunResult.timings_ms`). Also the row checks alone on that month: GX engine against pandas engine
    of `tools.checks.run_checks`, in rows/s.
(b) event-to-proposal latency, offline planner: for each month of `--months`, a drifted batch (varied column
    renames, `flows.data.inject_drift`) runs through the pipeline, which halts and emits SchemaDrift; then
    `supervise_once(limit=1)` is timed from the claim to the stored proposal. The first event (cold: LangGraph,
    sentence-transformers and the MiniLM model load in this process) is reported apart from the warm ones.

Run from the repo root:  .venv/bin/python benchmarks/bench.py [--repeats 5] [--months 2,4,5,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OVERHEAD_TARGET = 1.25
OVERHEAD_MONTH = 3  # the month re-run in (a)
WARMUP_MONTH = 1  # trains the champion model
DEFAULT_MONTHS = "2,4,5,6,7,8,9,10,11,12"
# (renames, columns turned to strings): one per drifted batch of (b), cycled.
DRIFTS: tuple[tuple[dict[str, str], list[str]], ...] = (
    ({"dep_delay": "departureDelay"}, ["flight"]),  # the demo's drift
    ({"arr_delay": "arrivalDelay"}, []),
    ({"tailnum": "tail_number"}, []),
    ({"dep_time": "departure_time", "arr_time": "arrival_time"}, []),
    ({"air_time": "airTime"}, ["flight"]),
    ({"distance": "distance_miles"}, []),
    ({"sched_dep_time": "scheduledDeparture"}, []),
    ({"carrier": "carrierCode"}, []),
)
PACKAGES = ("prefect", "great_expectations", "duckdb", "pandas", "langgraph", "sentence-transformers", "mlflow")


# --------------------------------------------------------------------------- arguments and environment
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each variant in (a) (default 5)")
    p.add_argument("--months", default=DEFAULT_MONTHS,
                   help=f"comma-separated months (1-12, repeats allowed) of the drifted batches in (b) "
                        f"(default {DEFAULT_MONTHS})")
    p.add_argument("--json", dest="json_path", type=Path, default=None, help="also write every figure to this path")
    p.add_argument("--home", type=Path, default=None,
                   help="PIPEWARDEN_HOME for the run (default: a new temporary folder, removed at exit)")
    p.add_argument("--keep", action="store_true", help="keep the temporary home folder")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    try:
        args.months = [int(m) for m in str(args.months).split(",") if m.strip()]
    except ValueError:
        p.error(f"--months {args.months!r}: expected comma-separated numbers, e.g. 2,4,5")
    if not args.months or any(not 1 <= m <= 12 for m in args.months):
        p.error(f"--months {args.months!r}: give at least one month, each from 1 to 12")
    return args


def configure_environment(home: Path) -> None:
    """Everything that must be in the environment before prefect (or anything of ours) is imported."""
    os.environ["PIPEWARDEN_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "-"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip() or "-"
    except OSError:
        commit = "-"
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "prefect_api": os.environ.get("PREFECT_API_URL") or "ephemeral (local server in a subprocess)",
        "versions": versions,
    }


# --------------------------------------------------------------------------- statistics
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stage_medians(runs: list[dict[str, float]]) -> dict[str, float]:
    stages = list(dict.fromkeys(s for r in runs for s in r))
    return {s: round(statistics.median(r[s] for r in runs if s in r), 1) for s in stages}


# --------------------------------------------------------------------------- setup
def start_knowledge_index(home: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Index the knowledge base in a child process, so MiniLM stays cold in this one (the agents' first event
    then pays its load, which (b) reports as the cold latency)."""
    log = home / "bench-knowledge-index.log"
    with open(log, "wb") as fh:  # the child keeps its own copy of the descriptor
        # sync_knowledge directly, not `pipewarden knowledge index --json`: that command's JSON output fails
        # (pipewarden/cli.py calls .model_dump() on the dict flows.knowledge_sync.sync_knowledge returns).
        code = "from flows.knowledge_sync import sync_knowledge; print(sync_knowledge())"
        proc = subprocess.Popen([sys.executable, "-c", code],
                                cwd=str(REPO), env=dict(os.environ), stdout=fh, stderr=subprocess.STDOUT)
    return proc, log


def warm_up(say: Any) -> dict[str, Any]:
    """A clean month (trains the champion), then month 3 landed and run once in each variant."""
    from flows.pipeline import prepare_month, run_batch
    from flows.train import has_champion

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    first = run_batch("flights", str(prepare_month(WARMUP_MONTH)))
    out["first_run_s"] = round(time.perf_counter() - t0, 2)
    out["first_run_status"] = first.status
    out["champion"] = has_champion()
    say(f"  warm-up month {WARMUP_MONTH}: {first.status} in {out['first_run_s']} s "
        f"(Prefect server start, imports, training); champion model: {out['champion']}")
    src = prepare_month(OVERHEAD_MONTH)
    t0 = time.perf_counter()
    landed = run_batch("flights", str(src))
    unsup = run_batch("flights", str(src), load_id=landed.load_id, rerun=True, supervision=False)
    out["month_load_id"] = landed.load_id
    out["month_rows"] = landed.rows_in
    say(f"  warm-up month {OVERHEAD_MONTH}: landed as {landed.load_id} ({landed.rows_in} rows), "
        f"{landed.status} / {unsup.status} in {time.perf_counter() - t0:.1f} s")
    out["source"] = str(src)
    return out


# --------------------------------------------------------------------------- (a) supervision overhead
def bench_overhead(source: str, load_id: str, repeats: int, say: Any) -> dict[str, Any]:
    from flows.pipeline import run_batch

    walls: dict[bool, list[float]] = {True: [], False: []}
    stages: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    statuses: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    events = 0
    for i in range(repeats):
        for supervision in ((True, False) if i % 2 == 0 else (False, True)):  # alternate to cancel drift
            t0 = time.perf_counter()
            r = run_batch("flights", source, load_id=load_id, rerun=True, supervision=supervision)
            walls[supervision].append(time.perf_counter() - t0)
            stages[supervision].append(dict(r.timings_ms))
            statuses[supervision][r.status] += 1
            events += len(r.events) if supervision else 0
        say(f"  repeat {i + 1}/{repeats}: supervised {walls[True][-1]:.2f} s, unsupervised {walls[False][-1]:.2f} s")
    med = {s: statistics.median(walls[s]) for s in (True, False)}
    stage_sum = {s: statistics.median(sum(r.values()) / 1000 for r in stages[s]) for s in (True, False)}
    return {
        "repeats": repeats,
        "supervised": {"wall_s": [round(x, 3) for x in walls[True]], "median_s": round(med[True], 3),
                       "stage_sum_median_s": round(stage_sum[True], 3), "stages_median_ms": stage_medians(stages[True]),
                       "stages_ms": stages[True], "statuses": dict(statuses[True]), "events_emitted": events},
        "unsupervised": {"wall_s": [round(x, 3) for x in walls[False]], "median_s": round(med[False], 3),
                         "stage_sum_median_s": round(stage_sum[False], 3),
                         "stages_median_ms": stage_medians(stages[False]), "stages_ms": stages[False],
                         "statuses": dict(statuses[False])},
        "ratio": round(med[True] / med[False], 3),
        "ratio_stage_sum": round(stage_sum[True] / stage_sum[False], 3),
        "target": OVERHEAD_TARGET,
        "meets_target": med[True] / med[False] <= OVERHEAD_TARGET,
    }


def bench_checks(load_id: str, repeats: int) -> dict[str, Any]:
    """`run_checks` alone on the landed month, per engine: median ms and rows/s (first call of each not timed)."""
    from flows.ingest import read_landed
    from policies.contract import load_contract
    from tools.checks import run_checks

    df, _ = read_landed("flights", load_id)
    contract = load_contract("flights")
    out: dict[str, Any] = {"rows": len(df), "engines": {}}
    n = max(repeats, 5)
    for engine in ("gx", "pandas"):
        first = run_checks(df, contract, engine=engine)  # warm: GX context and suite cache
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            run_checks(df, contract, engine=engine)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out["engines"][engine] = {"median_ms": round(med * 1000, 1), "rows_per_s": round(len(df) / med),
                                  "failed_rows": first.result.failed_rows, "runs": n}
    gx, pd_ = out["engines"]["gx"], out["engines"]["pandas"]
    out["gx_over_pandas"] = round(gx["median_ms"] / pd_["median_ms"], 2)
    out["same_failed_rows"] = gx["failed_rows"] == pd_["failed_rows"]
    return out


# --------------------------------------------------------------------------- (b) event-to-proposal latency
def drain_events(worker: str) -> dict[str, int]:
    """Mark every pending event (ModelDrift, CostRegression... left by the runs of (a)) done, so the supervisor
    of (b) claims only the SchemaDrift events the benchmark emits. Returns the drained kinds."""
    from pipewarden.store import StateStore

    store = StateStore()
    kinds: Counter[str] = Counter()
    while batch := store.claim_events(worker, limit=100):
        for ev in batch:
            store.finish_event(ev.id, "done", error="skipped by benchmarks/bench.py (not part of the measurement)")
            kinds[ev.kind] += 1
    return dict(kinds)


def drifted_batch(month: int, i: int) -> tuple[Path, dict[str, str], list[str]]:
    from flows.data import inject_drift, month_batch, write_batch
    from pipewarden.settings import get_settings

    renames, to_string = DRIFTS[i % len(DRIFTS)]
    df = inject_drift(month_batch(month), renames=renames, to_string=to_string)
    out = get_settings().ensure_home() / "incoming" / f"bench-flights-2013-{month:02d}-drift{i:02d}.parquet"
    return write_batch(df, out), renames, to_string


def bench_latency(months: list[int], say: Any) -> dict[str, Any]:
    from agents.supervisor import supervise_once
    from flows.pipeline import run_batch

    worker = "benchmarks-bench"
    drained = drain_events(worker)
    if drained:
        say(f"  drained {sum(drained.values())} event(s) left by (a): {drained}")
    per_event: list[dict[str, Any]] = []
    for i, month in enumerate(months):
        path, renames, to_string = drifted_batch(month, i)
        t0 = time.perf_counter()
        run = run_batch("flights", str(path))
        emit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        report = supervise_once(worker=worker, limit=1)
        latency = time.perf_counter() - t1
        h = report.handled[0] if report.handled else None
        row = {
            "month": month, "renames": renames, "to_string": to_string, "run_status": run.status,
            "halted_at": run.halted_at, "emit_s": round(emit_s, 3), "latency_s": round(latency, 3),
            "graph_s": round(h.seconds, 3) if h else None, "kind": h.kind if h else None,
            "proposal_status": h.status if h else "nothing claimed", "error": h.error if h else None,
            "same_event": bool(h and h.event_id in run.events),
        }
        per_event.append(row)
        say(f"  month {month:>2} {renames}: {run.status} at {run.halted_at}, emitted in {emit_s:.2f} s; "
            f"proposal {row['proposal_status']} in {latency:.2f} s" + (" (cold)" if i == 0 else ""))
    lat = [r["latency_s"] for r in per_event]
    warm = lat[1:]
    out: dict[str, Any] = {
        "events": len(per_event),
        "drained_before": drained,
        "cold_s": lat[0],
        "warm_p50_s": round(percentile(warm, 50), 3) if warm else None,
        "warm_p95_s": round(percentile(warm, 95), 3) if warm else None,
        "warm_events_per_min": round(60 * len(warm) / sum(warm), 1) if warm else None,
        "all_events_per_min": round(60 * len(lat) / sum(lat), 1),
        "warm_graph_p50_s": round(statistics.median(r["graph_s"] for r in per_event[1:] if r["graph_s"] is not None), 3)
        if any(r["graph_s"] is not None for r in per_event[1:]) else None,
        "emit_p50_s": round(statistics.median(r["emit_s"] for r in per_event), 3),
        "proposal_statuses": dict(Counter(r["proposal_status"] for r in per_event)),
        "all_matched_their_event": all(r["same_event"] for r in per_event),
        "per_event": per_event,
    }
    return out


# --------------------------------------------------------------------------- output
def render(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    env = results["environment"]
    t = Table(title="environment", show_header=False, box=None)
    t.add_row("cpus / python", f"{env['cpu_count']} / {env['python']} ({env['platform']})")
    t.add_row("packages", ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    t.add_row("commit / prefect api", f"{env['commit']} / {env['prefect_api']}")
    t.add_row("home", results["home"])
    con.print(t)

    a = results["overhead"]
    sup, uns = a["supervised"], a["unsupervised"]
    t = Table(title=f"(a) supervision overhead: month {OVERHEAD_MONTH} of flights ({results['setup']['month_rows']} "
                    f"rows), median of {a['repeats']} re-runs each")
    for col in ("", "supervised", "unsupervised", "ratio"):
        t.add_column(col, justify="right")
    verdict = "meets" if a["meets_target"] else "MISSES"
    t.add_row("flow wall (s)", f"{sup['median_s']:.3f}", f"{uns['median_s']:.3f}",
              f"{a['ratio']:.2f}x ({verdict} <= {a['target']}x)")
    t.add_row("sum of stages (s)", f"{sup['stage_sum_median_s']:.3f}", f"{uns['stage_sum_median_s']:.3f}",
              f"{a['ratio_stage_sum']:.2f}x")
    stages = list(dict.fromkeys([*sup["stages_median_ms"], *uns["stages_median_ms"]]))
    for s in stages:
        sv, uv = sup["stages_median_ms"].get(s), uns["stages_median_ms"].get(s)
        t.add_row(f"  {s} (ms)", "-" if sv is None else f"{sv:.1f}", "-" if uv is None else f"{uv:.1f}", "")
    t.add_row("statuses", str(sup["statuses"]), str(uns["statuses"]), "")
    con.print(t)

    c = results["checks"]
    t = Table(title=f"validate only: tools.checks.run_checks on month {OVERHEAD_MONTH} ({c['rows']} rows)")
    for col in ("engine", "median ms", "rows/s", "failed rows"):
        t.add_column(col, justify="right")
    for name, e in c["engines"].items():
        t.add_row(name, f"{e['median_ms']:.1f}", f"{e['rows_per_s']:,}", str(e["failed_rows"]))
    t.caption = f"gx / pandas = {c['gx_over_pandas']}x; same rejected rows: {c['same_failed_rows']}"
    con.print(t)

    b = results["latency"]
    t = Table(title=f"(b) event -> proposal (offline planner), {b['events']} SchemaDrift events, "
                    "supervise_once(limit=1) from claim to stored proposal")
    for col in ("cold 1st (s)", "warm p50 (s)", "warm p95 (s)", "warm events/min", "all events/min",
                "warm graph p50 (s)", "emit p50 (s)"):
        t.add_column(col, justify="right")

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    t.add_row(f(b["cold_s"]), f(b["warm_p50_s"]), f(b["warm_p95_s"]), f(b["warm_events_per_min"]),
              f(b["all_events_per_min"]), f(b["warm_graph_p50_s"]), f(b["emit_p50_s"]))
    t.caption = (f"proposals: {b['proposal_statuses']}; each proposal for the event its run emitted: "
                 f"{b['all_matched_their_event']}")
    con.print(t)
    con.print(f"total benchmark time {results['total_s']:.1f} s (setup {results['setup']['setup_s']:.1f} s)")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.home is None:
        home = Path(tempfile.mkdtemp(prefix="pipewarden-bench-"))
        if not args.keep:
            # Registered before prefect is imported, so it runs after Prefect's own exit handlers stop its server.
            atexit.register(shutil.rmtree, home, ignore_errors=True)
    else:
        home = args.home.expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
    configure_environment(home)

    from rich.console import Console

    console = Console(stderr=True)

    def say(msg: str) -> None:
        console.print(msg, markup=False, highlight=False)

    say(f"pipewarden benchmark: home {home}")
    say("setup: knowledge index (child process), warm-up runs ...")
    t_setup = time.perf_counter()
    index_proc, index_log = start_knowledge_index(home)
    setup = warm_up(say)
    rc = index_proc.wait()
    if rc != 0:
        say(f"  knowledge index failed (exit {rc}); proposals will carry no citations. Log: {index_log}")
    setup["knowledge_index_exit"] = rc
    setup["setup_s"] = round(time.perf_counter() - t_setup, 2)

    say(f"(a) supervision overhead: {args.repeats} re-runs of each variant ...")
    overhead = bench_overhead(setup["source"], setup["month_load_id"], args.repeats, say)
    say("validate only: GX vs pandas engine ...")
    checks = bench_checks(setup["month_load_id"], args.repeats)
    say(f"(b) event -> proposal latency on months {args.months} ...")
    latency = bench_latency(args.months, say)

    results = {
        "environment": environment(), "home": str(home), "args": {"repeats": args.repeats, "months": args.months},
        "setup": setup, "overhead": overhead, "checks": checks, "latency": latency,
        "total_s": round(time.perf_counter() - started, 1),
    }
    render(results)
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
