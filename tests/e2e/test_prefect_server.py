"""The supervise deployment against a real Prefect server: `prefect server start` in a child process on a free
127.0.0.1 port with its own PREFECT_HOME (SQLite).

The deployment `pipewarden deploy` builds is registered with `apply()` (what `prefect.serve` does first), read back
through the API (interval schedule, concurrency limit, and the trigger stored as an automation owned by the
deployment), then pipewarden emits a schema-drift event through its real path (`flows/emit.py`: outbox, then
Prefect) and the server's automation creates a flow run of the deployment. Nothing picks that run up here: that
is the runner's job under `serve`, which blocks, and the flow itself is covered by the supervise tests.

The server's scheduler service is off, so every run of the deployment seen here came from the automation.
Skips, with the reason, only when a prerequisite is missing (the `prefect` script, a loopback port); a server that
starts and then dies fails with the tail of its log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 180.0  # a cold `prefect server start` (migrations on a fresh SQLite) took ~25 s on 2 busy cores
TRIGGER_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _free_port() -> int:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    except OSError as exc:
        pytest.skip(f"cannot bind a port on 127.0.0.1 for the Prefect server: {exc}")


def _log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _wait_healthy(proc: subprocess.Popen[bytes], api_url: str, log: Path) -> None:
    """Poll GET /api/health until it answers true; fail with the server's log if it exits or the deadline passes."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api_url}/health", timeout=2.0).json() is True:
                return
        except (httpx.TransportError, ValueError):
            pass
        try:  # doubles as the poll interval, and returns at once if the server died
            code = proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"`prefect server start` exited with code {code} before answering:\n{_log_tail(log)}")
    pytest.fail(f"`prefect server start` did not answer {api_url}/health within {STARTUP_TIMEOUT_S:.0f}s:\n"
                f"{_log_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it was started in its own session), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """A running Prefect server of its own; yields its API URL (what PREFECT_API_URL would be set to)."""
    prefect_bin = Path(sys.executable).with_name("prefect")
    if not prefect_bin.exists():
        pytest.skip(f"no `prefect` console script next to {sys.executable}: install prefect in this environment")
    port = _free_port()
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    log = tmp_path / "prefect-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(prefect_bin), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(proc, api_url, log)
        yield api_url
    finally:
        _stop(proc)


def _deployment_runs(deployment_id: UUID) -> list:
    """Wait (bounded) for the deployment to have flow runs, and return them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + TRIGGER_TIMEOUT_S
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
            if runs or time.monotonic() > deadline:
                break
            time.sleep(0.25)  # poll interval of a bounded wait on another process
    assert runs, f"no flow run of deployment {deployment_id} within {TRIGGER_TIMEOUT_S:.0f}s of the event"
    return runs


def test_the_supervise_deployment_registers_and_a_pipewarden_event_runs_it(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.events import emit_event
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipewarden.events import EVENT_NAMES, SchemaDrift
    from pipewarden.flows.deploy import build_supervise_deployment, describe
    from pipewarden.flows.emit import emit
    from pipewarden.settings import get_settings

    monkeypatch.setenv("PIPEWARDEN_EMIT_PREFECT_EVENTS", "true")
    get_settings.cache_clear()
    EventsWorker.drain_all()  # a worker cached by an earlier test would still send to that test's server
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        deployment = build_supervise_deployment(name="e2e", every=300)
        assert describe(deployment).api_url == prefect_server

        deployment_id = deployment.apply()

        with get_client(sync_client=True) as client:
            stored = client.read_deployment(deployment_id)
            [automation] = client.read_resource_related_automations(f"prefect.deployment.{deployment_id}")
        assert (stored.name, stored.entrypoint) == ("e2e", "pipewarden.flows.supervise.supervise_flow")
        [schedule] = stored.schedules
        assert isinstance(schedule.schedule, IntervalSchedule)
        assert schedule.schedule.interval == timedelta(seconds=300)
        assert schedule.active is True
        assert stored.global_concurrency_limit is not None and stored.global_concurrency_limit.limit == 1
        assert automation.enabled is True
        assert isinstance(automation.trigger, EventTrigger)
        assert automation.trigger.expect == set(EVENT_NAMES.values())
        assert automation.trigger.match.model_dump() == {"prefect.resource.id": "pipewarden.dataset.*"}
        [action] = automation.actions
        assert isinstance(action, RunDeployment)
        assert action.deployment_id == deployment_id

        # Another pipewarden event first, on the same resource: not a fault, so it starts nothing. The fault
        # event after it, over the same connection, does.
        emit_event(event="pipewarden.heartbeat", resource={"prefect.resource.id": "pipewarden.dataset.flights"})
        drift = SchemaDrift(dataset="flights", batch_path="drift.csv", contract_version="1")
        assert emit(drift) is True  # the real path: outbox first, then mirrored to Prefect
        EventsWorker.drain_all()  # flush the events to the server

        runs = _deployment_runs(deployment_id)

    [run] = runs  # one fault event, one run; the heartbeat started none
    assert run.created_by is not None
    assert (run.created_by.type, run.created_by.id) == ("AUTOMATION", automation.id)
    assert run.state_type == StateType.SCHEDULED  # waiting for `serve`'s runner, which is not running here
    assert run.deployment_id == deployment_id
