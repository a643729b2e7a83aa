"""What `pipewarden eval` does, apart from printing: pick the scenarios, run them, build and write the report.

Public names: `EvalOptions`, `run_eval`, `default_out_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from pipewarden.errors import UserError
from pipewarden.evals.prereqs import FLIGHTS_PROJECT
from pipewarden.evals.report import SuiteReport, build_report, load_bar, write_reports
from pipewarden.evals.runner import LLMConfig, LLMMode, ScenarioResult, run_suite
from pipewarden.evals.scenarios import Scenario, load_catalogue, load_recorded, select, with_recorded
from pipewarden.settings import get_settings, settings_env


class EvalOptions(BaseModel):
    llm: LLMMode = "mock"
    base_url: str | None = None
    model: str | None = None
    agent: str | None = None
    scenario: str | None = None
    pattern: str | None = None
    out: Path | None = None
    workers: int | None = None
    keep: bool = False
    scenarios_dir: Path | None = None
    ids: list[str] | None = None  # run exactly these scenario ids (in catalogue order), e.g. from a script
    project: Path | None = None  # whose recorded scenarios run beside the catalogue (default: the current project)
    command: str = "pipewarden eval"


def default_out_dir() -> Path:
    return get_settings().home / "evals" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def default_workers(n: int) -> int:
    """Two worker processes for a long run on a machine with two or more cores, else one."""
    return 2 if n >= 8 and (os.cpu_count() or 1) >= 2 else 1


def chosen(opts: EvalOptions) -> list[Scenario]:
    """The built-in catalogue and the project's recorded scenarios, narrowed by the options."""
    recorded = load_recorded(opts.project) if opts.project is not None else []
    catalogue = with_recorded(load_catalogue(opts.scenarios_dir), recorded)
    picked = select(catalogue, agent=opts.agent, scenario=opts.scenario, pattern=opts.pattern)
    return picked if opts.ids is None else [s for s in picked if s.id in set(opts.ids)]


def run_eval(opts: EvalOptions, *, on_start: Callable[[int], None] = lambda _n: None,
             progress: Callable[[ScenarioResult], None] | None = None,
             say: Callable[[str], None] = lambda _m: None) -> tuple[SuiteReport, Path]:
    """Run the selected scenarios and write `report.json` and `report.md`; returns the report and the folder."""
    if opts.llm == "openai" and not (opts.base_url or os.environ.get("PIPEWARDEN_OPENAI_BASE_URL")
                                     or os.environ.get("PIPEWARDEN_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")):
        raise UserError("--llm openai needs an endpoint: --base-url URL, or PIPEWARDEN_OPENAI_API_KEY for OpenAI",
                        hint="e.g. pipewarden eval --llm openai --base-url http://127.0.0.1:11434/v1 --model llama3.1")
    if opts.llm != "openai" and (opts.base_url or opts.model):
        raise UserError(f"--base-url and --model apply to --llm openai, not --llm {opts.llm}",
                        hint="drop them, or pass --llm openai")
    if opts.project is None and get_settings().has_project:
        opts = opts.model_copy(update={"project": get_settings().project_root})
    if not FLIGHTS_PROJECT.is_dir() and any(not s.is_recorded for s in chosen(opts)):
        raise UserError("the built-in eval scenarios inject faults into the flights example project, which is not here "
                        f"({FLIGHTS_PROJECT})", hint="run `pipewarden eval` from a checkout of the repository")
    # the scenarios run on the example project; reports and caches stay in the caller's home
    with settings_env({"PIPEWARDEN_PROJECT": str(FLIGHTS_PROJECT), "PIPEWARDEN_HOME": str(get_settings().home)}):
        return _run_eval(opts, on_start=on_start, progress=progress, say=say)


def _run_eval(opts: EvalOptions, *, on_start: Callable[[int], None],
              progress: Callable[[ScenarioResult], None] | None,
              say: Callable[[str], None]) -> tuple[SuiteReport, Path]:
    bar = load_bar()
    scenarios = chosen(opts)
    on_start(len(scenarios))
    out = opts.out or default_out_dir()
    cfg = LLMConfig(mode=opts.llm, base_url=opts.base_url, model=opts.model)
    workers = opts.workers if opts.workers is not None else default_workers(len(scenarios))
    run = run_suite(scenarios, cfg, cache=get_settings().home / "evals" / "cache", workers=workers, keep=opts.keep,
                    workdir=(out / "homes") if opts.keep else None, progress=progress, say=say)
    report = build_report(run, bar=bar, command=opts.command)
    write_reports(report, out)
    return report, out
