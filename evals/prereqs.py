"""The state every scenario starts from, built once and copied: January 2013 loaded through the whole pipeline
(warehouse, SQL models and their cost history, features, a champion model in MLflow) and the knowledge index.

`base_home(cache)` builds it in `cache/base-<fingerprint>` unless a finished copy is there; the fingerprint
covers the code and policies that shape that state (`pipewarden/`, `flows/`, `tools/`, `knowledge/`,
`policies/`), so an edit there builds a new one. `copy_home(base, dest)` copies it and rewrites the absolute
paths the SQLite stores (MLflow's artifact locations, the state DB) hold, so nothing in a scenario's home points
back into the shared copy.

Public names: `base_home`, `copy_home`, `fingerprint`, `index_home`, `load_home`, `prefect_settings`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipewarden.settings import settings_env

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout the eval base state is built from
FLIGHTS_PROJECT = REPO_ROOT / "examples" / "flights"  # the built-in scenarios inject faults into this example

READY = ".eval-base-ready"
_FINGERPRINT_DIRS = ("pipewarden", "flows", "tools", "knowledge", "policies", "examples/flights")
_FINGERPRINT_SUFFIXES = (".py", ".sql", ".yaml", ".yml", ".json", ".md")


def fingerprint() -> str:
    """A short hash of the code and policies that make the base state."""
    h = hashlib.sha256()
    for folder in _FINGERPRINT_DIRS:
        for p in sorted((REPO_ROOT / folder).rglob("*")):
            if p.is_file() and p.suffix in _FINGERPRINT_SUFFIXES and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(REPO_ROOT)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:12]


@contextmanager
def pipewarden_home(home: Path, extra: dict[str, str] | None = None) -> Iterator[Path]:
    """Point the process at `home` (and `extra` settings) for the block; restore the environment after."""
    env = {"PIPEWARDEN_HOME": str(home), "PIPEWARDEN_EMIT_PREFECT_EVENTS": "false",
           "PIPEWARDEN_PROJECT": str(FLIGHTS_PROJECT), **(extra or {})}
    try:
        with settings_env(env):
            yield home
    finally:
        _dispose_engines()


def _dispose_engines() -> None:
    from pipewarden.db import make_engine

    info = getattr(make_engine, "cache_info", None)
    if info is not None:
        make_engine.cache_clear()


@contextmanager
def prefect_settings(api_url: str | None = None) -> Iterator[None]:
    """The Prefect settings of an eval process's flow runs for the block: the API at `api_url` (none: as
    configured), and no flow-run heartbeats. Prefect joins a run's heartbeat thread when the run ends, and that
    thread sleeps in 1 s steps, so every flow run took up to a second longer (0.4-0.75 s per scenario measured);
    heartbeats tell a server that a run crashed, which no scenario asks. The setting cannot be unset from the
    environment (it must be an int >= 30), hence `temporary_settings`."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    updates: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if api_url:
        updates[PREFECT_API_URL] = api_url
    with temporary_settings(updates=updates):
        yield


def index_home(home: str) -> None:
    """Index the knowledge base of `home` (the base state's first part); run in an eval worker beside the build."""
    from pipewarden.flows.knowledge_sync import sync_knowledge

    with pipewarden_home(Path(home)):
        sync_knowledge()


def load_home(home: str) -> None:
    """January through the pipeline and the cost baselines in `home` (the base state's second part); run in an
    eval worker beside the index, or in this process."""
    from pipewarden.evals.flights_data import prepare_month
    from pipewarden.flows.pipeline import run_batch
    from pipewarden.store import StateStore

    with pipewarden_home(Path(home)), prefect_settings():
        _load_january(run_batch, prepare_month)
        store = StateStore()
        # January's own events (if any) are not part of any scenario
        for ev in store.claim_events("eval-base", limit=1000):
            store.finish_event(ev.id, "ignored")


def _build(home: Path, say: Callable[[str], None], pool: Executor | None = None) -> None:
    """January through the pipeline, cost baselines, and the knowledge index: in this process, or (`pool`) in two
    workers at once, which then run the scenarios with what the build loaded (Prefect's client, GX, MLflow,
    scikit-learn) already imported; built here, this process imported all of it again for nothing. The two parts
    share nothing but the state DB, which exists (migrated) before either starts; the index reads only the decided
    proposals from it, of which the base state has none."""
    from pipewarden.store import StateStore

    t0 = time.perf_counter()
    if pool is None:
        say("evals: indexing the knowledge base for the shared starting state ...")
        index_home(str(home))
        say("evals: loading January 2013 through the pipeline (warehouse, cost history, champion model) ...")
        load_home(str(home))
    else:
        with pipewarden_home(home):
            StateStore()  # the state DB and its migrations, before the workers read it
        say("evals: loading January 2013 through the pipeline (warehouse, cost history, champion model) and "
            "indexing the knowledge base for the shared starting state (in the workers) ...")
        parts: list[Future[None]] = [pool.submit(load_home, str(home)), pool.submit(index_home, str(home))]
        wait(parts)  # both, even when one fails: the folder is never removed under the other
        for part in parts:
            part.result()  # raises what the worker raised
    say(f"evals: base state ready in {time.perf_counter() - t0:.0f}s")


def _load_january(run_batch: Any, prepare_month: Any) -> None:
    result = run_batch("flights", str(prepare_month(1)))
    if result.status != "completed":
        from pipewarden.errors import PipewardenError

        raise PipewardenError(f"the eval base state could not be built: January {result.status} at "
                              f"{result.halted_at}", hint="run January through the flights example to see why: "
                              "cd examples/flights && python -m flows.flights_flow --month 1")
    from pipewarden.flows.transform import transform
    from pipewarden.policies.cost import load_cost_policy

    for i in range(load_cost_policy().min_history):
        transform(f"eval-baseline-{i}")


def base_home(cache: Path, say: Callable[[str], None] = lambda _m: None, *, pool: Executor | None = None) -> Path:
    """The finished base state for this code, built under `cache` if it is not there yet (with `pool`, the
    knowledge index is built in one of its workers while this process loads January)."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"base-{fingerprint()}"
    if (target / READY).exists():
        return target
    tmp = cache / f".building-{uuid.uuid4().hex[:8]}"
    try:
        _build(tmp, say, pool)
        (tmp / READY).write_text(str(tmp.resolve()))  # the path the stores hold, rewritten by copy_home
        try:
            os.replace(tmp, target)
        except OSError:  # another run finished first: use its copy
            if not (target / READY).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def copy_home(base: Path, dest: Path) -> Path:
    """Copy the base state to `dest` and re-point the absolute paths inside its SQLite stores at `dest`."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns(READY, "*.lock", ".lock"))
    built_at = (base / READY).read_text().strip() if (base / READY).exists() else str(base.resolve())
    new = str(dest.resolve())
    for db in list(dest.glob("*.db")) + list(dest.glob("*.sqlite")):
        for old in {built_at, str(base.resolve())}:
            _rewrite_paths(db, old, new)
    return dest


def _rewrite_paths(path: Path, old: str, new: str) -> None:
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            cols = [r[1] for r in con.execute(f'pragma table_info("{table}")') if "CHAR" in (r[2] or "").upper()
                    or "TEXT" in (r[2] or "").upper() or (r[2] or "") == ""]
            for col in cols:
                con.execute(f'update "{table}" set "{col}" = replace("{col}", ?, ?) where instr("{col}", ?) > 0',
                            (old, new, old))
        con.commit()
    finally:
        con.close()
