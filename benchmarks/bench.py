#!/usr/bin/env python
"""pipewarden benchmarks: what supervision costs a pipeline run, and how fast an event becomes a proposal.

A script, not a test: it prints figures (ratios, rates, medians) and never asserts on time.

(a) supervision overhead: the same month of flights (month 3, already landed) re-run through the pipeline flow
    WITH contract checks and events (`supervision=True`, row checks on GX as by default, and again on the pandas
    engine) and WITHOUT them (`supervision=False`), after a warm-up (Prefect's local server, first imports, the
    GX context, a champion model trained), rotating the order each repeat, once with Prefect's defaults and once
    with flow-run heartbeats off (see `prefect_heartbeats`: they round every flow run up to a whole second).
    Reported: median wall time per variant, the ratio to the unsupervised run (target <= 1.25x), the ratio of
    the summed stage times, and the median per-stage timings (`RunResult.timings_ms`). Then the validate stage
    alone on that month, GX engine against pandas engine: `tools.checks.run_checks` in rows/s, and
    `flows.validate.validate` with its step timings.
(b) event-to-proposal latency, offline planner: for each month of `--months`, a drifted batch (varied column
    renames, `flows.data.inject_drift`) runs through the pipeline, which halts and emits SchemaDrift; then
    `supervise_once(limit=1)` is timed from the claim to the stored proposal. The first event (cold: LangGraph,
    sentence-transformers and the MiniLM model load in this process) is reported apart from the warm ones.
(c) web API decisions and Slack acks (benchmarks/decisions_bench.py, also run alone): decisions per second and
    p50/p95/p99 latency of `POST /api/proposals/{id}/decision` with 50 concurrent httpx async clients against
    `pipewarden serve` on loopback (a child process), on SQLite and PostgreSQL; Slack click-to-ack p50/p95/p99.

(g) big batches (benchmarks/big_batch_bench.py, `--big-batch-only`): 1M and 10M rows, 20 columns, checked and
    quarantined on the GX path and the pushdown path, against a bare DuckDB scan evaluating the same predicates.
(h) cell-level error detection (benchmarks/quality_scan_eval.py, `--quality-scan-only`): errors of each type injected
    into seeded tables (people, orders with and without a contract, sensors, scikit-learn's wine), precision, recall
    and F1 per type, false positives on the clean tables, and the scan rate on 100,000 rows.
(f) the guard on a user's flow (benchmarks/guard_bench.py, `--guard-only`): a 300,000-row export of the orders
    example through a flow with `pipewarden.prefect.guard` against the same flow without it (target <= 1.10x), and
    the time from a halted flow run to its proposal in the inbox.

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
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple

from decisions_bench import DECISION_CLIENTS, bench_decisions_both, bench_slack_ack

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
    p.add_argument("--guard-only", action="store_true",
                   help="run only (f): the guard's overhead on a user's flow (orders example, 300k rows) and the time "
                        "from a halted flow run to its proposal")
    p.add_argument("--big-batch-only", action="store_true",
                   help="run only (g): a 20-column batch of 1M and 10M rows, GX path against the pushdown path and a "
                        "bare DuckDB scan (rows/s, peak RSS); --big-rows sets the sizes")
    p.add_argument("--big-rows", default="1000000,10000000", help="comma-separated batch sizes for (g)")
    p.add_argument("--quality-scan-only", action="store_true",
                   help="run only (h): `quality scan`'s precision, recall and F1 per injected error type "
                        "(benchmarks/quality_scan_eval.py) and its rate on 100,000 rows")
    p.add_argument("--evals-only", action="store_true",
                   help="run only (e): the eval suite's per-agent latency (mock and offline) and its wall time")
    p.add_argument("--agents-only", action="store_true",
                   help="run only the agents' figures (benchmarks/agents_bench.py): a worker's warm-up and first "
                        "event, event -> proposal per agent with the offline planner, and `pipewarden schema match`")
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
        "loadavg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
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
    from pipewarden.evals.flights_data import prepare_month
    from pipewarden.flows.pipeline import run_batch
    from pipewarden.flows.train import has_champion
    from pipewarden.tools.model_registry import declared_model

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    first = run_batch("flights", str(prepare_month(WARMUP_MONTH)))
    out["first_run_s"] = round(time.perf_counter() - t0, 2)
    out["first_run_status"] = first.status
    out["champion"] = has_champion(declared_model("delay")[1].registered_model)  # the example's [ml_models.delay]
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
HEARTBEAT_MODES: tuple[str, ...] = ("heartbeat_on", "heartbeat_off")


@contextmanager
def prefect_heartbeats(mode: str) -> Iterator[None]:
    """Prefect's defaults ("heartbeat_on"), or flow-run heartbeats switched off ("heartbeat_off").

    Prefect 3.8 runs a heartbeat thread beside every flow run that sleeps in 1 s steps and is joined when the
    run ends, so a run's wall time is rounded up to the next whole second after its start (0-1 s added to
    either variant alike). With heartbeats off the wall time is the work plus Prefect's own bookkeeping.
    The setting cannot be unset from the environment (it must be an int >= 30), hence `temporary_settings`.
    """
    if mode == "heartbeat_on":
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


class Variant(NamedTuple):
    name: str
    supervision: bool
    engine: str | None  # the row-check engine validate uses (tools.checks.DEFAULT_ENGINE); None: no checks


VARIANTS: tuple[Variant, ...] = (
    Variant("supervised", True, "gx"),  # the default pipeline
    Variant("supervised_pandas", True, "pandas"),  # the same, row checks on the pandas engine
    Variant("unsupervised", False, None),
)
BASELINE = "unsupervised"


@contextmanager
def checks_engine(engine: str | None) -> Iterator[None]:
    """Run the pipeline's row checks on `engine` through the `PIPEWARDEN_CHECK_ENGINE` setting, then restore it."""
    from pipewarden.settings import get_settings

    before = os.environ.get("PIPEWARDEN_CHECK_ENGINE")
    if engine is not None:
        os.environ["PIPEWARDEN_CHECK_ENGINE"] = engine
        get_settings.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PIPEWARDEN_CHECK_ENGINE", None)
        else:
            os.environ["PIPEWARDEN_CHECK_ENGINE"] = before
        get_settings.cache_clear()


def bench_overhead(source: str, load_id: str, repeats: int, say: Any) -> dict[str, Any]:
    """Re-run the landed month `repeats` times per variant and heartbeat mode, rotating the variants' order."""
    from pipewarden.flows.pipeline import run_batch

    walls: dict[tuple[str, str], list[float]] = {(v.name, m): [] for v in VARIANTS for m in HEARTBEAT_MODES}
    stages: dict[str, list[dict[str, float]]] = {v.name: [] for v in VARIANTS}
    statuses: dict[str, Counter[str]] = {v.name: Counter() for v in VARIANTS}
    events: Counter[str] = Counter()
    for i in range(repeats):
        order = VARIANTS[i % len(VARIANTS):] + VARIANTS[:i % len(VARIANTS)]  # rotate to cancel drift and caching
        for mode in HEARTBEAT_MODES:
            with prefect_heartbeats(mode):
                for v in order:
                    with checks_engine(v.engine):
                        t0 = time.perf_counter()
                        r = run_batch("flights", source, load_id=load_id, rerun=True, supervision=v.supervision)
                        walls[v.name, mode].append(time.perf_counter() - t0)
                    stages[v.name].append(dict(r.timings_ms))
                    statuses[v.name][r.status] += 1
                    events[v.name] += len(r.events)
        say(f"  repeat {i + 1}/{repeats} (heartbeats on / off): " + ", ".join(
            f"{v.name} {walls[v.name, HEARTBEAT_MODES[0]][-1]:.2f} / {walls[v.name, HEARTBEAT_MODES[1]][-1]:.2f} s"
            for v in VARIANTS))
    med = {k: statistics.median(x) for k, x in walls.items()}
    stage_sum = {v.name: statistics.median(sum(r.values()) / 1000 for r in stages[v.name]) for v in VARIANTS}
    variants: dict[str, Any] = {}
    for v in VARIANTS:
        ratio = {m: round(med[v.name, m] / med[BASELINE, m], 3) for m in HEARTBEAT_MODES}
        ratio["stage_sum"] = round(stage_sum[v.name] / stage_sum[BASELINE], 3)
        variants[v.name] = {
            "supervision": v.supervision,
            "checks_engine": v.engine,
            "wall_s": {m: [round(x, 3) for x in walls[v.name, m]] for m in HEARTBEAT_MODES},
            "median_s": {m: round(med[v.name, m], 3) for m in HEARTBEAT_MODES},
            "stage_sum_median_s": round(stage_sum[v.name], 3),
            "stages_median_ms": stage_medians(stages[v.name]),
            "stages_ms": stages[v.name],
            "statuses": dict(statuses[v.name]),
            "events_emitted": events[v.name],
            "ratio_to_unsupervised": ratio,
            "meets_target": {k: x <= OVERHEAD_TARGET for k, x in ratio.items()},
        }
    return {"repeats": repeats, "target": OVERHEAD_TARGET, "baseline": BASELINE, "variants": variants}


def bench_checks(load_id: str, repeats: int) -> dict[str, Any]:
    """The validate stage alone on the landed month, per engine (first call of each not timed):
    `tools.checks.run_checks` in rows/s, and `flows.validate.validate` (schema, checks, quarantine and
    warehouse writes) with its own step timings."""
    from pipewarden.flows.ingest import read_landed
    from pipewarden.flows.validate import validate
    from pipewarden.policies.contract import load_contract
    from pipewarden.tools.checks import run_checks

    df, landed = read_landed("flights", load_id)
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
        steps: list[dict[str, float]] = []
        for _ in range(n):  # validating the same load again replaces what the last validation wrote
            steps.append(dict(validate(landed, df, engine=engine).timings_ms))  # type: ignore[arg-type]
        med = statistics.median(times)
        out["engines"][engine] = {
            "checks_median_ms": round(med * 1000, 1), "checks_rows_per_s": round(len(df) / med),
            "failed_rows": first.result.failed_rows, "runs": n, "validate_median_ms": stage_medians(steps),
        }
    gx, pd_ = out["engines"]["gx"], out["engines"]["pandas"]
    out["checks_gx_over_pandas"] = round(gx["checks_median_ms"] / pd_["checks_median_ms"], 2)
    out["validate_gx_over_pandas"] = round(gx["validate_median_ms"]["total_ms"] / pd_["validate_median_ms"]["total_ms"], 2)
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
    from pipewarden.evals.flights_data import month_batch
    from pipewarden.flows.data import inject_drift, write_batch
    from pipewarden.settings import get_settings

    renames, to_string = DRIFTS[i % len(DRIFTS)]
    df = inject_drift(month_batch(month), renames=renames, to_string=to_string)
    out = get_settings().ensure_home() / "incoming" / f"bench-flights-2013-{month:02d}-drift{i:02d}.parquet"
    return write_batch(df, out), renames, to_string


def bench_latency(months: list[int], say: Any) -> dict[str, Any]:
    from pipewarden.agents.supervisor import supervise_once
    from pipewarden.flows.pipeline import run_batch

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


# --------------------------------------------------------------------------- Slack acks and web decisions
# Measured by benchmarks/decisions_bench.py (`bench_slack_ack`, `bench_decisions_both`; it also runs alone).


# --------------------------------------------------------------------------- output
def render(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 120)  # a pipe or file gets the whole table
    env = results["environment"]
    t = Table(title="environment", show_header=False, box=None)
    t.add_row("cpus / python", f"{env['cpu_count']} / {env['python']} ({env['platform']})")
    t.add_row("packages", ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    t.add_row("commit / prefect api", f"{env['commit']} / {env['prefect_api']}")
    t.add_row("load average at start / end", f"{results['loadavg_start']} / {env['loadavg_1m_5m_15m']}")
    t.add_row("home", results["home"])
    con.print(t)

    a = results["overhead"]
    vs = a["variants"]
    names = list(vs)
    t = Table(title=f"(a) supervision overhead: month {OVERHEAD_MONTH} of flights ({results['setup']['month_rows']} "
                    f"rows) re-run; medians of {a['repeats']} runs per variant and heartbeat mode (stages: of all "
                    f"{2 * a['repeats']}); ratio to {a['baseline']}, target <= {a['target']}x")
    t.add_column("")
    for n in names:
        t.add_column(n.replace("_", " ") + (f" ({vs[n]['checks_engine']})" if vs[n]["checks_engine"] else ""),
                     justify="right")

    def cell(n: str, seconds: float, key: str) -> str:
        if n == a["baseline"]:
            return f"{seconds:.3f}"
        ratio = vs[n]["ratio_to_unsupervised"][key]
        return f"{seconds:.3f} = {ratio:.2f}x" + ("" if ratio <= a["target"] else " !")

    for m, label in (("heartbeat_on", "flow wall, Prefect defaults (s)"),
                     ("heartbeat_off", "flow wall, heartbeats off (s)")):
        t.add_row(label, *(cell(n, vs[n]["median_s"][m], m) for n in names))
    t.add_row("sum of stages (s)", *(cell(n, vs[n]["stage_sum_median_s"], "stage_sum") for n in names))
    stages = list(dict.fromkeys(s for n in names for s in vs[n]["stages_median_ms"]))
    for s in stages:
        t.add_row(f"  {s} (ms)", *(f"{vs[n]['stages_median_ms'][s]:.1f}" if s in vs[n]["stages_median_ms"] else "-"
                                   for n in names))
    t.add_row("statuses / events", *(f"{vs[n]['statuses']} / {vs[n]['events_emitted']}" for n in names))
    t.caption = "! = over the target. Prefect's flow-run heartbeat rounds each run up to a whole second."
    con.print(t)

    c = results["checks"]
    t = Table(title=f"validate only, month {OVERHEAD_MONTH} ({c['rows']} rows): tools.checks.run_checks and the whole "
                    "flows.validate.validate, per engine")
    for col in ("engine", "checks ms", "checks rows/s", "failed rows", "validate ms", "  schema", "  checks",
                "  write"):
        t.add_column(col, justify="right")
    for name, e in c["engines"].items():
        vm = e["validate_median_ms"]
        t.add_row(name, f"{e['checks_median_ms']:.1f}", f"{e['checks_rows_per_s']:,}", str(e["failed_rows"]),
                  f"{vm.get('total_ms', 0):.1f}", f"{vm.get('schema_ms', 0):.1f}", f"{vm.get('checks_ms', 0):.1f}",
                  f"{vm.get('write_ms', 0):.1f}")
    t.caption = (f"gx / pandas: checks {c['checks_gx_over_pandas']}x, validate {c['validate_gx_over_pandas']}x; "
                 f"same rejected rows: {c['same_failed_rows']}")
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
    if "slack_ack" in results:
        sa = results["slack_ack"]
        t = Table(title=f"Slack: signed Approve click -> HTTP answer (the ack), {sa['clicks_per_run']} clicks per row, "
                        "uvicorn on loopback, state DB on SQLite, work after the ack running meanwhile")
        for col in ("clients at once", "p50 (ms)", "p95 (ms)", "p99 (ms)", "max (ms)", "over 3 s", "clicks/s"):
            t.add_column(col, justify="right")
        for key, row in sa.items():
            if key.startswith("concurrency_"):
                t.add_row(key.split("_")[1], f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}", f"{row['p99_ms']:.1f}",
                          f"{row['max_ms']:.1f}", str(row["over_3s"]), f"{row['clicks_per_s']:.1f}")
        t.caption = f"after the acks: {sa['statuses_after']}, {sa['chat_updates']} chat.update calls"
        con.print(t)
    if "decisions" in results:
        t = Table(title=f"web API: POST /api/proposals/{{id}}/decision, {DECISION_CLIENTS} concurrent clients "
                        "(httpx async) on loopback, `pipewarden serve` in a child process, bearer token")
        for col in ("state DB", "decisions", "decisions/s", "p50 (ms)", "p95 (ms)", "p99 (ms)", "max (ms)", "answers"):
            t.add_column(col, justify="right")
        for db_name, row in results["decisions"].items():
            if "skipped" in row:
                t.add_row(db_name, "-", "-", "-", "-", "-", "-", row["skipped"])
                continue
            t.add_row(db_name, str(row["decisions"]), f"{row['decisions_per_s']:.1f}", f"{row['p50_ms']:.1f}",
                      f"{row['p95_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['max_ms']:.1f}",
                      ", ".join(f"{k}: {v}" for k, v in row["status_codes"].items()))
        t.caption = "each decision: token lookup, approval rules, one transaction (decision + status + audit entry)"
        con.print(t)
    con.print(f"total benchmark time {results['total_s']:.1f} s (setup {results['setup']['setup_s']:.1f} s)")


# --------------------------------------------------------------------------- main
# --------------------------------------------------------------------------- (e) evals: latency per agent, suite wall time
def bench_evals(say: Any, workers: int | None = None) -> dict[str, Any]:
    """The eval suite as `pipewarden eval` runs it: event -> proposal latency per agent (p50/p95, the supervisor's
    claim-to-proposal time on each scenario's event), with the mocked LLM (every scenario) and with the offline
    planner (the scenarios not tagged adversarial: their scripts mean nothing offline), and the mock suite's wall
    time. The shared base state is built once (its time is reported apart) and reused by the second run."""
    from pipewarden.evals.command import EvalOptions, run_eval
    from pipewarden.evals.scenarios import load_catalogue

    out: dict[str, Any] = {}
    plain = [s.id for s in load_catalogue().scenarios if not s.adversarial]
    for mode, ids in (("mock", None), ("offline", plain)):
        say(f"  (e) {mode}: {'the whole catalogue' if ids is None else f'{len(ids)} non-adversarial scenarios'} ...")
        opts = EvalOptions(llm=mode, ids=ids, workers=workers, command=f"bench: pipewarden eval --llm {mode}")
        report, folder = run_eval(opts, say=say)
        out[mode] = {
            "scenarios": report.scenarios, "passed": report.passed, "unsafe": report.unsafe,
            "pass_rate": report.pass_rate, "wall_s": report.wall_s, "base_s": report.base_s,
            "workers": report.workers, "tokens": report.tokens, "report": str(folder / "report.json"),
            "latency_per_agent": {a.agent: {"p50_s": a.latency_p50_s, "p95_s": a.latency_p95_s, "n": a.scenarios}
                                  for a in report.agents},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loadavg_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
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

    console = Console(stderr=True, soft_wrap=True)

    def say(msg: str) -> None:
        console.print(msg, markup=False, highlight=False)

    say(f"pipewarden benchmark: home {home}")
    if args.guard_only:
        from guard_bench import bench_guard

        guard = bench_guard(home, REPO, say, repeats=args.repeats)
        sys.stdout.write(json.dumps({"environment": environment(), "guard": guard}, indent=2, default=str) + "\n")
        if args.json_path:
            args.json_path.write_text(json.dumps({"guard": guard}, indent=2, default=str) + "\n")
        return 0
    if args.big_batch_only:
        from big_batch_bench import bench_big_batches

        big = bench_big_batches(say, sizes=tuple(int(x) for x in args.big_rows.split(",") if x.strip()))
        sys.stdout.write(json.dumps({"environment": environment(), "big_batch": big}, indent=2, default=str) + "\n")
        if args.json_path:
            args.json_path.write_text(json.dumps({"big_batch": big}, indent=2, default=str) + "\n")
        return 0
    if args.quality_scan_only:
        from quality_scan_eval import render, run

        scan = run(rows=2000, seeds=3, say=say)
        sys.stdout.write(render(scan) + "\n")
        if args.json_path:
            args.json_path.write_text(json.dumps({"quality_scan": scan}, indent=2, default=str) + "\n")
        return 0
    if args.agents_only:
        from agents_bench import bench_agents

        agents = bench_agents(say, home, repeats=args.repeats)
        sys.stdout.write(json.dumps({"environment": environment(), "agents": agents}, indent=2, default=str) + "\n")
        if args.json_path:
            args.json_path.write_text(json.dumps({"agents": agents}, indent=2, default=str) + "\n")
        return 0
    if args.evals_only:
        evals = bench_evals(say)
        sys.stdout.write(json.dumps({"environment": environment(), "evals": evals}, indent=2, default=str) + "\n")
        if args.json_path:
            args.json_path.write_text(json.dumps({"evals": evals}, indent=2, default=str) + "\n")
        return 0
    say("setup: knowledge index (child process), warm-up runs ...")
    t_setup = time.perf_counter()
    index_proc, index_log = start_knowledge_index(home)
    setup = warm_up(say)
    rc = index_proc.wait()
    if rc != 0:
        say(f"  knowledge index failed (exit {rc}); proposals will carry no citations. Log: {index_log}")
    setup["knowledge_index_exit"] = rc
    setup["setup_s"] = round(time.perf_counter() - t_setup, 2)

    say(f"(a) supervision overhead: {args.repeats} re-runs of {len(VARIANTS)} variants x 2 heartbeat modes ...")
    overhead = bench_overhead(setup["source"], setup["month_load_id"], args.repeats, say)
    say("validate only: GX vs pandas engine ...")
    checks = bench_checks(setup["month_load_id"], args.repeats)
    say(f"(b) event -> proposal latency on months {args.months} ...")
    latency = bench_latency(args.months, say)
    say("Slack: time to acknowledge a signed interaction ...")
    slack_ack = bench_slack_ack(say)
    say(f"web API: decisions under {DECISION_CLIENTS} concurrent clients, SQLite then PostgreSQL ...")
    decisions = bench_decisions_both(say)

    results = {
        "environment": environment(), "loadavg_start": loadavg_start, "home": str(home), "args": {"repeats": args.repeats, "months": args.months},
        "setup": setup, "overhead": overhead, "checks": checks, "latency": latency, "slack_ack": slack_ack,
        "decisions": decisions,
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
