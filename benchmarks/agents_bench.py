"""Agents where people wait: event to proposal per agent (offline planner), a worker's first event, and the
`pipewarden schema match` command. Run through `benchmarks/bench.py --agents-only` (it sets the environment).

A script's part, not a test: it prints figures and never asserts on time.

- warm-up: `agents.router.warm_up()` timed in this process, as a supervisor worker runs it before its first claim
  (the agents' graphs, LangGraph, the index client, MiniLM).
- event to proposal: for each agent, its first `per_agent` scenarios of the eval catalogue that are not tagged
  adversarial, run with the offline planner through `evals.runner.run_scenario` (a fresh copy of the eval base
  state, the fault injected, the pipeline run, one supervisor pass); the latency is the supervisor's
  claim-to-proposal time on the agent's event. The first scenario of the run is the worker's first event.
- schema match: `pipewarden schema match A B --json` in a child process on two 2,000-row CSVs of flights (February,
  and March with three columns renamed and one turned to text), wall and CPU seconds of the whole command, with the
  embedding cache emptied (`cold`: MiniLM loads) and again right after (`warm`: the names' vectors read back).
  Alone: `python benchmarks/agents_bench.py [REPEATS]`.

Public names: `bench_agents(say, home, per_agent=3, repeats=3)`, `bench_schema_match(home, repeats)`.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def bench_schema_match(home: Path, repeats: int = 3) -> dict[str, Any]:
    """Wall and CPU seconds of `pipewarden schema match A B --json` (a child process) on two 2,000-row CSVs.

    Each repeat runs the command twice: `cold`, with the embedding cache (`<home>/cache/embeddings`) emptied first,
    so MiniLM loads and embeds the names, then `warm`, the same command again (the names' vectors read back)."""
    import shutil

    import pandas as pd

    from pipewarden.evals.flights_data import source_dir

    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    ref = flights[flights["month"] == 2].head(2000)
    new = flights[flights["month"] == 3].head(2000).rename(
        columns={"dep_delay": "departureDelay", "arr_delay": "arrivalDelay", "tailnum": "tail_number"})
    new["flight"] = new["flight"].astype(str)
    folder = home / "schema-match-bench"
    folder.mkdir(parents=True, exist_ok=True)
    ref.to_csv(folder / "ref.csv", index=False)
    new.to_csv(folder / "new.csv", index=False)
    env = {**os.environ, "PIPEWARDEN_HOME": str(home)}
    runs: dict[str, dict[str, list[float]]] = {"cold": {"wall": [], "cpu": []}, "warm": {"wall": [], "cpu": []}}
    renamed = None
    for _ in range(repeats):
        shutil.rmtree(home / "cache" / "embeddings", ignore_errors=True)
        for kind in ("cold", "warm"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pipewarden", "schema", "match", "ref.csv", "new.csv", "--json"],
                                  capture_output=True, text=True, cwd=folder, env=env, timeout=600, check=False)
            runs[kind]["wall"].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            runs[kind]["cpu"].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                return {"error": proc.stderr[-2000:]}
            renamed = json.loads(proc.stdout)["renamed"]
    out: dict[str, Any] = {"rows": 2000, "repeats": repeats, "renamed": renamed, "load_average": os.getloadavg()}
    for kind, r in runs.items():
        out[kind] = {"wall_s": [round(x, 3) for x in r["wall"]], "min_wall_s": round(min(r["wall"]), 3),
                     "median_wall_s": round(statistics.median(r["wall"]), 3),
                     "median_cpu_s": round(statistics.median(r["cpu"]), 3)}
    out["median_wall_s"], out["median_cpu_s"] = out["cold"]["median_wall_s"], out["cold"]["median_cpu_s"]
    return out


def bench_agents(say: Any, home: Path, per_agent: int = 3, repeats: int = 3) -> dict[str, Any]:
    """See the module docstring."""
    from pipewarden.agents.router import warm_up
    from pipewarden.evals.command import EvalOptions, chosen
    from pipewarden.evals.prereqs import FLIGHTS_PROJECT, base_home
    from pipewarden.evals.runner import LLMConfig, run_scenario
    from pipewarden.settings import settings_env

    out: dict[str, Any] = {}
    with settings_env({"PIPEWARDEN_PROJECT": str(FLIGHTS_PROJECT), "PIPEWARDEN_HOME": str(home)}):
        t0 = time.perf_counter()
        base = base_home(home / "evals" / "cache", say)
        out["base_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        out["warm_up"] = warm_up()
        out["warm_up_s"] = round(time.perf_counter() - t0, 2)
        say(f"  warm-up (before the first claim): {out['warm_up_s']} s {out['warm_up']}")
        scenarios = [s for s in chosen(EvalOptions(llm="offline")) if not s.adversarial]
        rank: dict[str, int] = {}
        for agent in dict.fromkeys(s.agent for s in scenarios):
            rank.update({s.id: i for i, s in enumerate([s for s in scenarios if s.agent == agent][:per_agent])})
        # round robin over the agents (stable sort), so each agent's events are spread over the run
        order = sorted((s for s in scenarios if s.id in rank), key=lambda s: rank[s.id])
        work = Path(tempfile.mkdtemp(prefix="pw-agents-bench-", dir=home))
        rows = []
        for s in order:
            r = run_scenario(s, base, work, LLMConfig(mode="offline"))
            rows.append({"id": s.id, "agent": s.agent, "latency_s": r.latency_s, "passed": r.passed,
                         "wall_s": r.wall_s, "error": r.error})
            say(f"  {s.id} ({s.agent}): event -> proposal {r.latency_s} s, passed {r.passed}")
    first = rows[0] if rows else None
    per_agent_out: dict[str, Any] = {}
    for agent in dict.fromkeys(r["agent"] for r in rows):
        lat = [r["latency_s"] for r in rows[1:] if r["agent"] == agent and r["latency_s"] is not None]
        per_agent_out[agent] = {"n": len(lat), "p50_s": round(_percentile(lat, 50), 3) if lat else None,
                                "p95_s": round(_percentile(lat, 95), 3) if lat else None}
    out["first_event"] = first
    out["per_agent_warm"] = per_agent_out
    out["scenarios"] = rows
    say("  schema match, whole command ...")
    out["schema_match"] = bench_schema_match(home, repeats)
    sm = out["schema_match"]
    say(f"  schema match: median {sm.get('median_wall_s')} s wall, {sm.get('median_cpu_s')} s CPU (cold cache); "
        f"warm {sm.get('warm', {}).get('median_wall_s')} s wall, {sm.get('warm', {}).get('median_cpu_s')} s CPU")
    return out


if __name__ == "__main__":  # the schema match figure alone: python benchmarks/agents_bench.py [REPEATS]
    with tempfile.TemporaryDirectory(prefix="pw-schema-match-bench-") as tmp:
        print(json.dumps(bench_schema_match(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
