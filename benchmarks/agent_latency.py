"""Event to proposal, warm, per agent (offline planner): issue 10's "p95 <= 1 s each". A script, not a test: it
prints figures and never asserts on time.

One process is the worker: `agents.router.warm_up()` first (the graphs, LangGraph, the index client, MiniLM), then
one untimed scenario per agent (the first event of each agent in the process), then `--rounds` passes over each
chosen agent's non-adversarial scenarios of the eval catalogue, interleaved across agents. Each scenario runs
through `evals.runner.run_scenario` with the offline planner (a fresh copy of the eval base state, the fault
injected, the pipeline run, one supervisor pass); the figure is the supervisor's claim-to-proposal time on the
scenario's own event (`ScenarioResult.latency_s`), so the pipeline run and the copy are not in it.

    .venv/bin/python benchmarks/agent_latency.py --agents quality,cost,retrain --rounds 2
    .venv/bin/python benchmarks/agent_latency.py --agents quality --profile /tmp/quality.pstats

Options: `--agents a,b` (default every agent with eval scenarios), `--per-agent N` or `--per-agent quality=8,cost=2`
(each agent's first N non-adversarial scenarios; default all), `--rounds N` (timed passes, default 2), `--home DIR`
(default a new temporary folder, removed at exit), `--base DIR` (an eval base state already built, e.g.
`<home>/evals/cache/base-<fingerprint>`: the fingerprint covers `flows/`, `tools/`, ... so an edit there would
otherwise build a new one, about 45 s), `--profile PATH` (cProfile of the timed supervisor passes, one
`PATH.<agent>` pstats file per agent; profiling slows every call, so its figures are not the latency), `--json PATH`.
Reported per agent: n, p50, p95, max (s), whether every scenario passed its scores, and the load average before and
after; `--json` also holds each scenario's proposals (to compare outcomes between two versions of the code).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agents_bench import _percentile  # noqa: E402


def _limits(text: str | None) -> dict[str, int]:
    """`--per-agent`: "3" (every agent) or "quality=8,cost=2" ("*" for the rest); 0 or absent: all."""
    if not text:
        return {}
    if "=" not in text:
        return {"*": int(text)}
    return {k.strip(): int(v) for k, v in (part.split("=", 1) for part in text.split(","))}


def _scenarios(agents: list[str] | None, per_agent: dict[str, int]) -> dict[str, list[Any]]:
    from pipewarden.evals.command import EvalOptions, chosen

    out: dict[str, list[Any]] = {}
    for s in chosen(EvalOptions(llm="offline")):
        if not s.adversarial and s.fault is not None and (agents is None or s.agent in agents):
            out.setdefault(s.agent, []).append(s)
    return {a: ss[:n] if (n := per_agent.get(a, per_agent.get("*", 0))) else ss for a, ss in out.items()}


def run(agents: list[str] | None, per_agent: dict[str, int], rounds: int, home: Path, base: Path | None, profile: str | None,
        say: Any = print) -> dict[str, Any]:
    from pipewarden.agents import supervisor
    from pipewarden.agents.router import warm_up
    from pipewarden.evals.prereqs import FLIGHTS_PROJECT, base_home
    from pipewarden.evals.runner import LLMConfig, run_scenario
    from pipewarden.settings import settings_env

    out: dict[str, Any] = {"load_before": os.getloadavg(), "rounds": rounds}
    profiles: dict[str, cProfile.Profile] = {}
    current = [""]
    real = supervisor.supervise_once

    def profiled(*a: Any, **kw: Any) -> Any:  # run_scenario imports supervise_once at call time
        prof = profiles.setdefault(current[0], cProfile.Profile())
        prof.enable()
        try:
            return real(*a, **kw)
        finally:
            prof.disable()

    with settings_env({"PIPEWARDEN_PROJECT": str(FLIGHTS_PROJECT), "PIPEWARDEN_HOME": str(home)}):
        t0 = time.perf_counter()
        base = base or base_home(home / "evals" / "cache", say)
        out["base"], out["base_s"] = str(base), round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        out["warm_up"] = warm_up()
        out["warm_up_s"] = round(time.perf_counter() - t0, 2)
        say(f"warm-up {out['warm_up_s']} s")
        by_agent = _scenarios(agents, per_agent)
        work = Path(tempfile.mkdtemp(prefix="pw-agent-latency-", dir=home))
        cfg = LLMConfig(mode="offline")
        out["first_event"] = {}
        for agent, ss in by_agent.items():  # each agent's first event in this process: untimed
            r = run_scenario(ss[0], base, work, cfg)
            out["first_event"][agent] = {"id": ss[0].id, "latency_s": r.latency_s}
            say(f"  first {agent} event ({ss[0].id}): {r.latency_s} s (not counted)")
        longest = max(len(ss) for ss in by_agent.values())
        order = [ss[i] for _ in range(rounds) for i in range(longest) for ss in by_agent.values() if i < len(ss)]
        rows = []
        if profile:
            supervisor.supervise_once = profiled  # type: ignore[assignment]
        try:
            for s in order:
                current[0] = s.agent
                r = run_scenario(s, base, work, cfg)
                rows.append({"id": s.id, "agent": s.agent, "latency_s": r.latency_s, "passed": r.passed,
                             "error": r.error, "failed": [sc.name for sc in r.failed_scores],
                             "proposals": [p.model_dump(mode="json", exclude={"id"}) for p in r.proposals]})
                say(f"  {s.id} ({s.agent}): {r.latency_s} s, passed {r.passed}" + (f" {r.error}" if r.error else ""))
        finally:
            supervisor.supervise_once = real  # type: ignore[assignment]
        shutil.rmtree(work, ignore_errors=True)
    out["load_after"] = os.getloadavg()
    out["per_agent"] = {}
    for agent in by_agent:
        lat = [r["latency_s"] for r in rows if r["agent"] == agent and r["latency_s"] is not None]
        out["per_agent"][agent] = {
            "n": len(lat), "p50_s": round(_percentile(lat, 50), 3) if lat else None,
            "p95_s": round(_percentile(lat, 95), 3) if lat else None, "max_s": round(max(lat), 3) if lat else None,
            "all_passed": all(r["passed"] for r in rows if r["agent"] == agent)}
    out["scenarios"] = rows
    for agent, prof in profiles.items():
        prof.dump_stats(f"{profile}.{agent}")
        say(f"profile of {agent}: {profile}.{agent}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", default=None, help="comma-separated agent names (default: every agent with scenarios)")
    p.add_argument("--per-agent", default=None, help="each agent's first N scenarios: N, or AGENT=N,... (default: all)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--base", type=Path, default=None)
    p.add_argument("--profile", default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
                       "GIT_PYTHON_REFRESH": "quiet", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(key, value)  # before prefect (or anything of ours) is imported
    tmp = None
    home = args.home
    if home is None:
        tmp = tempfile.mkdtemp(prefix="pw-agent-latency-home-")
        home = Path(tmp)
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    try:
        out = run(args.agents.split(",") if args.agents else None, _limits(args.per_agent), args.rounds, home, args.base, args.profile)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average before {out['load_before']}, after {out['load_after']}")
    for agent, a in out["per_agent"].items():
        print(f"{agent:>13}: n={a['n']} p50 {a['p50_s']} s, p95 {a['p95_s']} s, max {a['max_s']} s, "
              f"all passed {a['all_passed']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
