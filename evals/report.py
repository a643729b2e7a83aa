"""The eval report: per-scenario results, per-agent pass rates, latency and tokens, and the verdict against the
bar recorded in the repo (`evals/bar.json`).

The verdict fails on any unsafe change that reached the inbox, or on a pass rate below the bar; its message names
both (the unsafe scenarios, and the rate against the bar).

Public names: `Bar`, `AgentStats`, `SuiteReport`, `build_report`, `load_bar`, `render_table`, `render_markdown`,
`write_reports`, `BAR_PATH`.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipewarden.errors import ConfigError
from pipewarden.evals.runner import ScenarioResult, SuiteRun

BAR_PATH = Path(__file__).resolve().parent / "bar.json"


class Bar(BaseModel):
    """The pass rate the mock suite must reach, with when and how it was set."""

    pass_rate: float = Field(ge=0, le=1)
    set_on: str
    command: str
    measured: str = ""


def load_bar(path: Path | None = None) -> Bar:
    p = path or BAR_PATH
    try:
        return Bar.model_validate_json(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: the eval bar file is missing", hint="restore evals/bar.json from the repo") from exc
    except ValueError as exc:
        raise ConfigError(f"{p}: not a valid bar ({exc})", hint='it holds {"pass_rate": 0.9, "set_on": ..., '
                          '"command": ...}') from exc


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 3)


class AgentStats(BaseModel):
    agent: str
    scenarios: int
    passed: int
    unsafe: int
    pass_rate: float
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    tokens: int = 0


class SuiteReport(BaseModel):
    generated_at: str
    command: str
    llm: dict[str, Any]
    scenarios: int
    passed: int
    unsafe: int
    errors: int
    pass_rate: float
    bar: Bar
    ok: bool
    verdict: str
    wall_s: float
    base_s: float
    workers: int
    tokens: int
    agents: list[AgentStats]
    recorded: int = 0
    """How many of the scenarios were recorded from the project's own decided proposals."""
    results: list[ScenarioResult]


def _stats(agent: str, results: list[ScenarioResult]) -> AgentStats:
    lat = [r.latency_s for r in results if r.latency_s is not None]
    n = len(results)
    passed = sum(r.passed for r in results)
    return AgentStats(agent=agent, scenarios=n, passed=passed, unsafe=sum(r.unsafe for r in results),
                      pass_rate=round(passed / n, 4) if n else 0.0, latency_p50_s=percentile(lat, 50),
                      latency_p95_s=percentile(lat, 95), tokens=sum(r.tokens for r in results))


def build_report(run: SuiteRun, *, bar: Bar, command: str) -> SuiteReport:
    results = run.results
    n = len(results)
    passed = sum(r.passed for r in results)
    unsafe = [r.id for r in results if r.unsafe]
    rate = passed / n if n else 0.0
    problems = []
    if unsafe:
        problems.append(f"{len(unsafe)} unsafe change(s) reached the inbox: {', '.join(unsafe)}")
    if rate + 1e-9 < bar.pass_rate:
        problems.append(f"pass rate {rate:.1%} ({passed}/{n}) is below the bar {bar.pass_rate:.1%} "
                        f"(evals/bar.json, set {bar.set_on})")
    verdict = "; ".join(problems) or (f"pass rate {rate:.1%} ({passed}/{n}) meets the bar {bar.pass_rate:.1%}; "
                                      "no unsafe change")
    agents = sorted({r.agent for r in results}, key=lambda a: [r.agent for r in results].index(a))
    return SuiteReport(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"), command=command,
        llm=run.llm.model_dump(exclude={"api_key"}), scenarios=n, passed=passed, unsafe=len(unsafe),
        errors=sum(r.error is not None for r in results), pass_rate=round(rate, 4), bar=bar, ok=not problems,
        verdict=verdict, wall_s=run.wall_s, base_s=run.base_s, workers=run.workers,
        tokens=sum(r.tokens for r in results),
        agents=[_stats(a, [r for r in results if r.agent == a]) for a in agents],
        recorded=sum(r.recorded for r in results), results=results,
    )


def _why(r: ScenarioResult) -> str:
    if r.error:
        return f"runner error: {r.error}"
    return "; ".join(f"{s.name}: {s.detail}" for s in r.failed_scores)


def render_table(report: SuiteReport) -> Any:
    from rich.table import Table

    table = Table(title=f"pipewarden eval --llm {report.llm.get('mode')}: {report.passed}/{report.scenarios} passed "
                        f"({report.pass_rate:.1%}, bar {report.bar.pass_rate:.1%})", show_lines=False)
    for col in ("scenario", "agent", "result", "fired", "outcome", "latency", "tokens", "why (failed scores)"):
        table.add_column(col, overflow="fold")
    for r in report.results:
        verdict = "[red]UNSAFE[/]" if r.unsafe else ("[green]pass[/]" if r.passed else "[yellow]fail[/]")
        mine = [p for p in r.proposals if p.agent == r.agent]
        got = ", ".join(f"{p.status} {p.change_kind}" for p in mine) or "-"
        table.add_row(r.id + (" (recorded)" if r.recorded else ""), r.agent, verdict, ",".join(r.fired) or "-", got,
                      f"{r.latency_s:.2f}s" if r.latency_s is not None else "-", str(r.tokens or "-"),
                      _why(r)[:240])
    return table


def render_markdown(report: SuiteReport) -> str:
    lines = [
        f"# pipewarden eval report ({report.generated_at})", "",
        f"- command: `{report.command}`",
        f"- model: {report.llm.get('mode')}" + (f", {report.llm.get('model')}" if report.llm.get("model") else "")
        + (f" at {report.llm.get('base_url')}" if report.llm.get("base_url") else ""),
        f"- **{'PASS' if report.ok else 'FAIL'}**: {report.verdict}",
        f"- {report.scenarios} scenarios ({report.recorded} recorded from this project's decisions), "
        f"{report.passed} passed, {report.unsafe} unsafe, {report.errors} runner errors; "
        f"bar {report.bar.pass_rate:.1%} (set {report.bar.set_on} with `{report.bar.command}`)",
        f"- wall time {report.wall_s:.0f}s ({report.workers} worker(s); shared base state {report.base_s:.0f}s); "
        f"{report.tokens} tokens", "",
        "## By agent", "",
        "| agent | scenarios | passed | pass rate | unsafe | latency p50 | latency p95 | tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in report.agents:
        p50 = f"{a.latency_p50_s:.2f}s" if a.latency_p50_s is not None else "-"
        p95 = f"{a.latency_p95_s:.2f}s" if a.latency_p95_s is not None else "-"
        lines.append(f"| {a.agent} | {a.scenarios} | {a.passed} | {a.pass_rate:.1%} | {a.unsafe} | {p50} | {p95} | "
                     f"{a.tokens} |")
    lines += ["", "## Scenarios", "", "| scenario | agent | tags | result | proposal | latency | tokens | why |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report.results:
        verdict = "UNSAFE" if r.unsafe else ("pass" if r.passed else "fail")
        mine = [p for p in r.proposals if p.agent == r.agent]
        got = "; ".join(f"{p.status} {p.change_kind} ({p.planner})" for p in mine) or "-"
        lat = f"{r.latency_s:.2f}s" if r.latency_s is not None else "-"
        why = _why(r).replace("|", "\\|").replace("\n", " ")
        rid = f"{r.id} (recorded)" if r.recorded else r.id
        lines.append(f"| {rid} | {r.agent} | {', '.join(r.tags)} | {verdict} | {got} | {lat} | {r.tokens} | {why} |")
    return "\n".join(lines) + "\n"


def write_reports(report: SuiteReport, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / "report.json", out / "report.md"
    j.write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    m.write_text(render_markdown(report), encoding="utf-8")
    return j, m
