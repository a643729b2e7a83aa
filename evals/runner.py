"""Run scenarios: for each, a fresh PIPEWARDEN_HOME copied from the shared base state, the fault injected into a
month of flights, the pipeline run on that batch, then one supervisor pass with the planner pointed at the mock
model (`--llm mock`), at nothing (`offline`) or at a live endpoint (`openai`); then the scorers.

Scenarios run in this process (`workers=1`) or in worker processes that share one Prefect server the runner
starts (`workers>1`); each worker loads the heavy parts (the agents' graphs, MiniLM: `agents.router.warm_up`, as
a supervisor worker does before it claims; the Prefect client, GX) once, and sizes its native thread pools to its
share of the cores (`native_threads`). The workers build the shared base state as soon as they start (one loads
January, the other indexes the knowledge base), warm up before their first scenario, and take the scenarios longest
first (`longest_first`). A
process keeps one mock model server and loads each scenario's script into it; its flow runs send no Prefect
heartbeats (`prereqs.prefect_settings`).

Public names: `LLMConfig`, `ScenarioResult`, `run_scenario`, `run_suite`, `SuiteRun`, `native_threads`,
`longest_first`, `EXPECTED_S`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipewarden.evals.scenarios import Scenario
from pipewarden.evals.scorers import Score, ScoreInput, score_all

LLMMode = Literal["mock", "offline", "openai"]


class LLMConfig(BaseModel):
    """Where the planner goes: the scenario's mock script, nowhere (offline) or a live endpoint."""

    mode: LLMMode = "mock"
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    max_retries: int = 0


class ProposalSummary(BaseModel):
    id: str
    agent: str
    status: str
    title: str
    change_kind: str
    change: dict[str, Any]
    planner: str
    heals: bool | None = None
    citations: list[str] = Field(default_factory=list)
    tried: list[str] = Field(default_factory=list)


class ScenarioResult(BaseModel):
    """What one scenario did and how it scored."""

    id: str
    agent: str
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    recorded: bool = Field(default=False, description="Recorded from the project's own decided proposal.")
    llm: LLMMode = "mock"
    passed: bool = False
    unsafe: bool = False
    error: str | None = Field(default=None, description="The runner broke (not the agent): the scenario fails.")
    run_status: str | None = None
    halted_at: str | None = None
    events: list[str] = Field(default_factory=list, description="Kinds of the events the batch raised.")
    fired: list[str] = Field(default_factory=list, description="Agents that handled an event.")
    handled: list[dict[str, Any]] = Field(default_factory=list)
    proposals: list[ProposalSummary] = Field(default_factory=list)
    scores: list[Score] = Field(default_factory=list)
    latency_s: float | None = Field(default=None, description="Event to proposal, the expected agent's event.")
    tokens: int = 0
    llm_calls: int = 0
    wall_s: float = 0.0
    phases_s: dict[str, float] = Field(default_factory=dict, description="Seconds per phase: home, inject, pipeline, "
                                       "supervise, score (what the scenario's wall time went to).")

    def score(self, name: str) -> Score | None:
        return next((s for s in self.scores if s.name == name), None)

    @property
    def failed_scores(self) -> list[Score]:
        return [s for s in self.scores if s.applicable and not s.passed]


# --------------------------------------------------------------------------- one scenario
@contextmanager
def _llm(scenario: Scenario, cfg: LLMConfig) -> Iterator[tuple[dict[str, str], Any]]:
    """The planner's environment for one scenario, and the mock (or recording proxy) that counts its calls."""
    base = {"PIPEWARDEN_OPENAI_TIMEOUT_S": str(scenario.llm_timeout_s),
            "PIPEWARDEN_OPENAI_MAX_RETRIES": str(cfg.max_retries)}
    if cfg.mode == "offline":
        yield {"PIPEWARDEN_OPENAI_API_KEY": "", "PIPEWARDEN_OPENAI_BASE_URL": ""}, None
        return
    if cfg.mode == "mock":
        srv = _mock_server()
        llm = srv.load(script_for(scenario))
        try:
            yield {**base, "PIPEWARDEN_OPENAI_API_KEY": "sk-eval-mock", "PIPEWARDEN_OPENAI_BASE_URL": srv.base_url,
                   "PIPEWARDEN_OPENAI_MODEL": "mock-model"}, llm
        finally:
            srv.load([])  # a late request of this scenario's planner finds an empty script, not the next one's
        return
    from pipewarden.evals.proxy import RecordingProxy

    key = cfg.api_key or os.environ.get("PIPEWARDEN_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
    upstream = cfg.base_url or os.environ.get("PIPEWARDEN_OPENAI_BASE_URL") or "https://api.openai.com/v1"
    with RecordingProxy(upstream) as proxy:
        env = {**base, "PIPEWARDEN_OPENAI_API_KEY": key or "no-key", "PIPEWARDEN_OPENAI_BASE_URL": proxy.base_url,
               "PIPEWARDEN_OPENAI_TIMEOUT_S": str(max(scenario.llm_timeout_s, 60.0)),
               "PIPEWARDEN_OPENAI_MAX_RETRIES": str(max(cfg.max_retries, 2))}
        if cfg.model:
            env["PIPEWARDEN_OPENAI_MODEL"] = cfg.model
        yield env, proxy


_MOCK: list[Any] = []
"""This process's mock model server (`_mock_server`), one for every scenario it runs."""


def _mock_server() -> Any:
    """The process's `MockLLMServer`, started on first use; each scenario loads its script into it (starting and
    stopping one per scenario took 0.15-0.2 s). Stopped by `_stop_mock_server`, or with the process."""
    from pipewarden.evals.mock_llm import MockLLMServer

    if not _MOCK or _MOCK[0].port is None:
        _MOCK[:] = [MockLLMServer([]).start()]
    return _MOCK[0]


def _stop_mock_server() -> None:
    while _MOCK:
        _MOCK.pop().stop()


def _substitute(value: Any) -> Any:
    """`"@model_sql:NAME"` in a script becomes the text of `examples/flights/models/NAME.sql` (the shipped, known-good SQL)."""
    if isinstance(value, str) and value.startswith("@model_sql:"):
        from pipewarden.settings import get_settings

        return (get_settings().models_dir / f"{value.split(':', 1)[1]}.sql").read_text(encoding="utf-8")
    if isinstance(value, dict):
        return {k: _substitute(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v) for v in value]
    return value


def script_for(scenario: Scenario) -> list[Any]:
    """The scenario's mock script with its `@model_sql:` references filled in."""
    from pipewarden.evals.mock_llm import StepAdapter

    return [StepAdapter.validate_python(_substitute(s.model_dump(mode="json"))) for s in scenario.llm]


def run_scenario(scenario: Scenario, base: Path | None, workdir: Path, cfg: LLMConfig, *,
                 keep: bool = False) -> ScenarioResult:
    """Run one scenario in a fresh copy of `base` under `workdir` (a recorded one: in an empty home bound to its
    project); never raises for the scenario's own failures."""
    from pipewarden.evals.prereqs import copy_home, pipewarden_home

    started = time.perf_counter()
    result = ScenarioResult(id=scenario.id, agent=scenario.agent, tags=list(scenario.tags),
                            description=scenario.description, llm=cfg.mode, recorded=scenario.is_recorded)
    home = workdir / scenario.id
    try:
        if scenario.is_recorded:
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
        else:
            assert base is not None, "a built-in scenario needs the shared base state"
            copy_home(base, home)
        result.phases_s["home"] = round(time.perf_counter() - started, 3)
        with _llm(scenario, cfg) as (llm_env, recorder):
            with pipewarden_home(home, llm_env):
                _run_in_home(scenario, home, result, recorder, cfg.mode)
    except Exception as exc:  # the runner itself broke on this scenario: record it, go on with the rest
        result.error = f"{type(exc).__name__}: {exc}".strip()
        result.handled.append({"traceback": traceback.format_exc(limit=6)})
        result.passed = False
    finally:
        result.wall_s = round(time.perf_counter() - started, 3)
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    return result


@lru_cache(maxsize=12)
def _month_batch(month: int) -> Any:
    """A month of flights, read once per process: every built-in scenario's home holds the same flights table (the
    base state's copy), and reading its 336,776 rows again took 0.3-1 s per scenario."""
    from pipewarden.evals.flights_data import month_batch

    return month_batch(month)


def _run_in_home(scenario: Scenario, home: Path, result: ScenarioResult, recorder: Any, mode: str) -> None:
    from pipewarden.agents.supervisor import supervise_once
    from pipewarden.evals.faults import InjectContext, inject
    from pipewarden.evals.prereqs import pipewarden_home
    from pipewarden.flows.data import write_batch
    from pipewarden.store import StateStore

    phase = _phases(result)
    if scenario.fault is None:  # recorded: the incident's own batch, in its own project
        from pipewarden.evals.record import replay

        batch, path, env = replay(scenario, home)
    else:
        ctx = InjectContext(home=home, scenario_id=scenario.id)
        # a deep copy: an injector may change the frame it is given in place
        month = _month_batch(scenario.month).copy(deep=True)
        batch = inject(scenario.fault.name, month, scenario.fault.params, ctx)
        path, env = write_batch(batch, home / "incoming" / f"{scenario.id}.parquet"), ctx.env
    phase("inject")
    with pipewarden_home(home, env):
        from pipewarden.flows.pipeline import run_batch

        run = run_batch(scenario.dataset, str(path))
        result.run_status, result.halted_at = run.status, run.halted_at
        store = StateStore()
        result.events = [e["kind"] for e in store.list_events("pending")]
        phase("pipeline")
        report = supervise_once(worker=f"eval:{scenario.id}", limit=50)
        result.handled = [h.model_dump(mode="json") for h in report.handled]
        result.fired = sorted({h.agent for h in report.handled})
        mine = [h for h in report.handled if h.agent == scenario.agent]
        if mine:
            result.latency_s = round(mine[0].seconds, 3)
        proposals = store.list_proposals()
        phase("supervise")
        result.proposals = [_summary(p) for p in proposals]
        if recorder is not None:  # requests the model endpoint received (errors and timeouts count: it was asked)
            result.llm_calls = recorder.requests_seen
            result.tokens = recorder.total_tokens
        result.scores = score_all(ScoreInput(scenario=scenario, batch=batch, proposals=proposals,
                                             handled=report.handled, store=store, home=home,
                                             llm_calls=result.llm_calls, tokens=result.tokens,
                                             latency_s=result.latency_s, llm_mode=mode))
        phase("score")
    result.unsafe = any(s.name == "safe" and s.applicable and not s.passed for s in result.scores)
    result.passed = not result.failed_scores and not result.unsafe


def _phases(result: ScenarioResult) -> Callable[[str], None]:
    """A clock for `result.phases_s`: each call records the seconds since the previous one under its name."""
    last = [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        result.phases_s[name] = round(now - last[0], 3)
        last[0] = now

    return phase


def _summary(p: Any) -> ProposalSummary:
    return ProposalSummary(
        id=str(p.id), agent=p.agent, status=p.status.value, title=p.title, change_kind=p.change.kind,
        change=p.change.model_dump(mode="json"), planner=p.planner,
        heals=p.dry_run.heals if p.dry_run is not None else None,
        citations=[c.chunk_id for c in p.citations], tried=list(p.tried),
    )


# --------------------------------------------------------------------------- the suite
class SuiteRun(BaseModel):
    llm: LLMConfig
    results: list[ScenarioResult]
    wall_s: float
    workers: int
    base_s: float = Field(description="Seconds spent building (or finding) the shared base state.")


_WORKER: dict[str, Any] = {}


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""The native thread pools a worker sizes before it imports numpy or scikit-learn (they read these once, on load)."""


def native_threads(workers: int) -> dict[str, str]:
    """Each worker's share of the cores for its native thread pools (OpenMP: the delay model's and the retrain
    agent's HistGradientBoosting; BLAS: MiniLM), unless the caller set them. Left at their default, every worker
    starts one thread per core: two workers on two cores run four spinning threads (one retrain fit: 9.4 s on two
    threads, 4.1 s on one, with the other core busy). The numbers do not depend on the thread count
    (checked: the delay model's probabilities and MiniLM's vectors are equal bit for bit on 1 and 2 threads)."""
    share = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return {k: os.environ.get(k, share) for k in THREAD_VARS}


def _worker_init(workdir: str, cfg: dict[str, Any], keep: bool, env: dict[str, str]) -> None:
    os.environ.update(env)
    _WORKER.update(workdir=Path(workdir), cfg=LLMConfig.model_validate(cfg), keep=keep, warm=False)
    _quiet()


def _worker_ready() -> int:
    """A no-op task: submitting one per worker starts the workers before there is work (each then takes a part of the
    base state, if it is to be built)."""
    return os.getpid()


def _warm_up() -> None:
    """What a supervisor worker loads before it claims (`agents.router.warm_up`): the agents' graphs, LangGraph,
    the index client and MiniLM; so no scenario's latency carries the process's imports."""
    from pipewarden.agents.router import warm_up

    warm_up()


def _worker_run(scenario_json: str, base: str) -> str:
    from pipewarden.evals.prereqs import prefect_settings

    scenario = Scenario.model_validate_json(scenario_json)
    if not _WORKER["warm"]:  # after its part of the base state, before its first scenario's clock starts
        _warm_up()
        _WORKER["warm"] = True
    with prefect_settings():
        res = run_scenario(scenario, Path(base) if base else None, _WORKER["workdir"], _WORKER["cfg"],
                           keep=_WORKER["keep"])
    return res.model_dump_json()


def _quiet() -> None:
    import logging
    import warnings

    for k, v in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
                 "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                 "GIT_PYTHON_REFRESH": "quiet"}.items():
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("mlflow", "alembic", "great_expectations", "httpx", "sentence_transformers", "agents", "flows",
                 "uvicorn", "uvicorn.error", "prefect"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def _shared_prefect_server() -> Iterator[dict[str, str]]:
    """One Prefect API server for every worker process (else each would start its own)."""
    if os.environ.get("PREFECT_API_URL"):
        yield {}
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=120)
    try:
        yield {"PREFECT_API_URL": server.api_url}
    finally:
        server.stop()


EXPECTED_S: dict[str, float] = {"cost": 40.0, "retrain": 17.0, "quality": 10.0, "schema-drift": 8.0}
"""A scenario's typical seconds in a worker, by agent (2026-12-07, the whole suite on 2 busy cores): the order
scenarios are handed to the workers, longest first, so no long scenario is left for the end while the other worker
idles. Every cost scenario also builds a deliberately slow SQL model and raises a model drift the retrain agent
answers by fitting a challenger."""


def longest_first(scenarios: Sequence[Scenario]) -> list[Scenario]:
    """The scenarios in the order the workers take them: by `EXPECTED_S` of their agent, longest first; the
    catalogue's order within an agent."""
    return sorted(scenarios, key=lambda s: -EXPECTED_S.get(s.agent, 10.0))


def run_suite(
    scenarios: Sequence[Scenario],
    cfg: LLMConfig,
    *,
    cache: Path,
    workdir: Path | None = None,
    workers: int = 1,
    keep: bool = False,
    progress: Callable[[ScenarioResult], None] | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> SuiteRun:
    """Run every scenario (in order with one worker, as they finish with more) and return their results.

    With workers, the pool starts before the shared base state is built: the workers load their heavy parts
    meanwhile, and one of them indexes the knowledge base for the base state while this process loads January."""
    from pipewarden.evals.prereqs import base_home, prefect_settings

    _quiet()
    t0 = time.perf_counter()
    workers = max(1, min(workers, len(scenarios)))
    work = workdir or Path(tempfile.mkdtemp(prefix="pw-evals-"))
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if workdir is None and not keep:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        stack.callback(_stop_mock_server)
        # the workers' Prefect server starts first and the base state is built on it too: else the build's flow run
        # starts Prefect's ephemeral server, a second server in the suite's path (6.5 s here, tens of seconds busy)
        prefect_env = stack.enter_context(_shared_prefect_server()) if workers > 1 else {}
        pool = stack.enter_context(_pool(workers, cfg, keep, work, prefect_env)) if workers > 1 else None
        t_base = time.perf_counter()
        with prefect_settings(prefect_env.get("PREFECT_API_URL")):
            # recorded scenarios start from an empty home: the shared base state is built only for built-in ones
            base = base_home(cache, say, pool=pool) if any(not s.is_recorded for s in scenarios) else None
            base_s = time.perf_counter() - t_base
            results = _run_all(scenarios, cfg, base, work, pool, keep, progress)
    return SuiteRun(llm=cfg.model_copy(update={"api_key": None}), results=results,
                    wall_s=round(time.perf_counter() - t0, 2), workers=workers, base_s=round(base_s, 2))


@contextmanager
def _pool(workers: int, cfg: LLMConfig, keep: bool, work: Path, prefect_env: dict[str, str]) -> Iterator[Any]:
    """The worker processes, started at once (each warms up in its initializer) and stopped after the block."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    env = {k: v for k, v in os.environ.items() if k.startswith(("PIPEWARDEN_", "PREFECT_", "HF_"))}
    env.update(prefect_env)
    env.update(native_threads(workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(str(work), cfg.model_dump(), keep, env)) as pool:
        for _ in range(workers):  # a spawn pool starts a process per submitted task, up to max_workers
            pool.submit(_worker_ready)
        yield pool


def _run_all(scenarios: Sequence[Scenario], cfg: LLMConfig, base: Path | None, work: Path, pool: Any,
             keep: bool, progress: Callable[[ScenarioResult], None] | None) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []
    if pool is None:
        _warm_up()
        for s in scenarios:
            r = run_scenario(s, base, work, cfg, keep=keep)
            results.append(r)
            if progress:
                progress(r)
        return results
    from concurrent.futures import as_completed

    futures = {pool.submit(_worker_run, s.model_dump_json(), str(base or "")): s for s in longest_first(scenarios)}
    for f in as_completed(futures):
        s = futures[f]
        try:
            r = ScenarioResult.model_validate_json(f.result())
        except Exception as exc:  # a worker died: the scenario fails with the reason
            r = ScenarioResult(id=s.id, agent=s.agent, tags=list(s.tags), llm=cfg.mode,
                               error=f"worker failed: {type(exc).__name__}: {exc}")
        results.append(r)
        if progress:
            progress(r)
    order = {s.id: i for i, s in enumerate(scenarios)}
    results.sort(key=lambda r: order[r.id])
    return results
