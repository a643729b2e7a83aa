"""Crash points: a process killed at any step from event to verified is recovered by the next supervise.

For every step the fault hook names (`pipewarden.faults.STEPS`), a process runs the loop with the fault armed and
dies there with exit code 137, exactly as `kill -9` would leave it; then one `supervise` (a new process) must finish
the work without a person: the proposal ends verified (or rolled back and re-opened), its change was applied
once (one version per target, one `version_activated` each), no quarantine row is there twice, and the audit chain
verifies. The dead worker's work is taken over at once (its process is gone), and the takeover is in the audit log.
On SQLite and on PostgreSQL (the state DB and the LangGraph checkpoints; the warehouse is DuckDB in both).

The loop is the real one, with the offline planner (no LLM): a 40-row drifted flights batch is guarded and halts,
the schema-drift agent drafts a column mapping, a person approves it (`inbox approve`, resumed in that process), the
mapping is applied as a version, the landed batch is re-checked (the validate stage, without Prefect:
`tests.agents.quality_runner`) and verified. It stays fast because the setup is shared: the halted state and the
proposed state are built once per backend and copied per step (the home folder; on PostgreSQL a `CREATE DATABASE
... TEMPLATE`), and every process is forked from one forkserver that has imported pipewarden already.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from pipewarden.faults import CRASH_EXIT_CODE, STEPS
from pipewarden.models import ProposalStatus, leaf_changes
from pipewarden.settings import Settings
from pipewarden.store import StateStore
from tests.conftest import FLIGHTS_PROJECT, POSTGRES_URL, _postgres_reachable, copy_project

pytestmark = pytest.mark.slow

FROM_EVENT = ("claimed", "agent_running", "proposal_stored")  # the crashed process is a supervise
FROM_PROPOSAL = ("decision_stored", "applying", "applied", "rerunning", "verifying")  # it is an `inbox approve`
assert set(FROM_EVENT + FROM_PROPOSAL) == set(STEPS), "every crash point the code names is in the matrix"
LEASED_AT_CRASH = {"applying", "applied", "rerunning", "verifying"}  # the dead process held the proposal's lease
# Settings a child must not inherit from whichever test was running when the forkserver started.
QUARANTINED = 2  # rows of the 40-row batch that break the contract (cancelled flights): every run quarantines them
PARALLEL = 3  # processes at once: the copies are independent, and a process often waits on its database
UNSET = ["PIPEWARDEN_DATABASE_URL", "PIPEWARDEN_FAULT", "PIPEWARDEN_WAREHOUSE_URL", "PIPEWARDEN_STORAGE_URI",
         "PIPEWARDEN_APPROVERS_FILE", "PIPEWARDEN_OPENAI_API_KEY", "PIPEWARDEN_OPENAI_BASE_URL"]


@dataclass
class World:
    """One backend's copies of the loop: `<name>/home` folders, and on PostgreSQL one database per name."""

    backend: str
    root: Path
    project: Path
    ctx: Any
    pg_names: list[str] = field(default_factory=list)

    def url(self, name: str) -> str | None:
        return POSTGRES_URL.rsplit("/", 1)[0] + f"/{self._db(name)}" if self.backend == "postgres" else None

    def _db(self, name: str) -> str:
        return f"pw_crash_{self.root.name[-8:]}_{name}".lower().replace("-", "_")

    def home(self, name: str) -> Path:
        return self.root / name / "home"

    def state(self, name: str) -> StateStore:
        """The copy's state DB, with its own home (where its audit key lives)."""
        settings = Settings(home=self.home(name), project=self.project)
        return StateStore(self.url(name) or f"sqlite:///{self.home(name) / 'state.db'}", settings=settings)

    def create(self, name: str, template: str | None = None) -> None:
        if template is not None:
            shutil.copytree(self.root / template, self.root / name)
        if self.backend == "postgres":
            admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                tmpl = f' TEMPLATE "{self._db(template)}"' if template else ""
                conn.execute(sa.text(f'CREATE DATABASE "{self._db(name)}"{tmpl}'))
            admin.dispose()
            self.pg_names.append(self._db(name))

    def run(self, name: str, steps: list[str], fault: str | None = None) -> tuple[int, list[Any]]:
        """Fork a process that does `steps` on copy `name` (dying at `fault`); its exit code and what it saw."""
        out = self.root / name / f"out-{uuid.uuid4().hex[:6]}.json"
        env = {"PIPEWARDEN_PROJECT": str(self.project), "PIPEWARDEN_HOME": str(self.home(name)),
               "PIPEWARDEN_EMIT_PREFECT_EVENTS": "false", "PIPEWARDEN_CHECK_ENGINE": "pandas",
               "PIPEWARDEN_RUNTIME": "tests.fakes.runtimes:quality_runner"}
        if self.url(name):
            env["PIPEWARDEN_DATABASE_URL"] = self.url(name)  # type: ignore[assignment]
        job = {"env": env, "unset": UNSET, "steps": steps, "fault": fault, "out": str(out), "quarantined": QUARANTINED}
        proc = self.ctx.Process(target=_child, args=(job,))
        proc.start()
        proc.join(timeout=180)
        if proc.exitcode is None:
            proc.kill()
            raise AssertionError(f"{name}: {steps} did not finish within 180 s")
        return proc.exitcode, json.loads(out.read_text()) if out.exists() else []

    def drop(self) -> None:
        from pipewarden.db import make_engine

        make_engine.cache_clear()
        if self.pg_names:
            admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for name in self.pg_names:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def _child(job: dict[str, Any]) -> None:
    from tests.pipewarden import crash_child

    crash_child.run(job)


@pytest.fixture(scope="module")
def forkserver() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.pipewarden.crash_child"])
    return ctx


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, forkserver: Any) -> Iterator[World]:
    """The halted state (`event`: a SchemaDrift event in the outbox) and the proposed state (`proposal`: the
    agent's proposal waiting for a person), built once per backend by real runs of the loop."""
    if request.param == "postgres" and (why := _postgres_reachable(POSTGRES_URL)):
        pytest.skip(why)
    root = tmp_path_factory.mktemp(f"crash-{request.param}")
    w = World(request.param, root, copy_project(FLIGHTS_PROJECT, root / "project"), forkserver)
    try:
        w.create("event")
        code, seen = w.run("event", ["halt"])
        assert code == 0 and seen[0]["halted"], seen
        w.create("proposal", template="event")
        code, seen = w.run("proposal", ["supervise"])
        assert code == 0, seen
        assert [p.status for p in w.state("proposal").list_proposals()] == [ProposalStatus.pending]
        _dispose(w, "event", "proposal")
        yield w
    finally:
        w.drop()


def _dispose(w: World, *names: str) -> None:
    """Close this process's connections to copies (PostgreSQL copies a template only when nobody is connected)."""
    for name in names:
        w.state(name).engine.dispose()


def _assert_recovered(w: World, name: str, step: str) -> str:
    """The proposal ended verified or rolled back, its change applied once; quarantine and audit are consistent."""
    store = w.state(name)
    [p] = [p for p in store.list_proposals() if p.agent == "schema-drift"]
    actions = [e.action for e in store.audit_entries(str(p.id))]
    assert p.status == ProposalStatus.verified or "rolled_back" in actions, (p.status, actions)
    leaves = leaf_changes(p.change)
    assert leaves, p.change
    for leaf in leaves:
        mine = [v for v in store.list_versions(leaf.target) if v.proposal_id == p.id]
        assert len(mine) == 1, (leaf.target, mine)
    assert actions.count("version_activated") == len(leaves), actions  # applied once
    assert actions.count("applied") == 1 and actions.count("applying") == 1, actions
    with duckdb.connect(str(w.home(name) / "warehouse.duckdb"), read_only=True) as wh:
        total, distinct = wh.execute("SELECT count(*), count(DISTINCT (dataset, load_id, row_number)) "
                                     "FROM quarantine").fetchone()  # type: ignore[misc]
    assert total == distinct, f"{total - distinct} quarantine rows are there twice"
    assert total == QUARANTINED, total
    assert store.verify_audit().ok, store.verify_audit()
    everything = [e.action for e in store.audit_entries()]
    if step in FROM_EVENT:
        assert "event_crashed" in everything, everything  # the dead supervisor's claim was taken over
    if step in LEASED_AT_CRASH:
        assert "lease_taken_over" in actions, actions  # the dead approver's lease was taken over
    store.engine.dispose()
    return "verified" if p.status == ProposalStatus.verified else "rolled back"


@dataclass(frozen=True)
class Run:
    """What happened to one step's copy: the crashed process's exit code, then the recovering one's."""

    crash_code: int
    recover_code: int
    seen: list[Any]


def _crash_and_recover(w: World, step: str) -> Run:
    if step in FROM_EVENT:  # a `supervise` dies; the next one recovers, then the proposal is approved and applied
        crash, recover = ["supervise"], ["supervise", "approve_if_open", "supervise"]
    else:  # an `inbox approve` dies while it stores or resumes; one `supervise` recovers
        crash, recover = ["approve"], ["supervise"]
    crash_code, _ = w.run(step, crash, fault=step)
    recover_code, seen = w.run(step, recover)
    return Run(crash_code, recover_code, seen)


@pytest.fixture(scope="module")
def runs(world: World) -> dict[str, Run]:
    """Every step's crash and recovery, on copies of the shared states, a few at a time (they are independent)."""
    for step in FROM_EVENT:
        world.create(step, template="event")
    for step in FROM_PROPOSAL:
        world.create(step, template="proposal")
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {step: pool.submit(_crash_and_recover, world, step) for step in STEPS}
        return {step: f.result() for step, f in futures.items()}


@pytest.mark.parametrize("step", STEPS)
def test_a_process_killed_at_a_step_is_recovered_by_the_next_supervise(world: World, runs: dict[str, Run],
                                                                         step: str) -> None:
    run = runs[step]
    assert run.crash_code == CRASH_EXIT_CODE, f"the process did not die at {step!r} (exit {run.crash_code})"
    assert run.recover_code == 0, run.seen
    assert _assert_recovered(world, step, step) == "verified"
