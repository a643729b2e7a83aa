"""Both example projects end to end, as their teams would run them, each through its own served deployment.

The team's flow is served (`python -m flows.<name>_flow --serve`) in its own process against the session's Prefect
server; a clean batch completes; a drifted batch's flow run ends Failed naming the event; `pipewarden supervise
--once` drafts the proposal; `pipewarden inbox approve` applies it, re-runs the halted batch through the same
deployment with the same parameters and verifies it; a later clean batch passes untouched (the fix is scoped to the
drifted schema). The re-run without a deployment (re-checking the landed batch) is tested in tests/flows/test_guard.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, copy_project

pytestmark = pytest.mark.slow


def _env(project: Path, home: Path, api_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEWARDEN_", "PREFECT_API"))}
    env.update(PIPEWARDEN_PROJECT=str(project), PIPEWARDEN_HOME=str(home), PIPEWARDEN_EMIT_PREFECT_EVENTS="false",
               PREFECT_LOGGING_LEVEL="WARNING", PYTHONPATH=str(project), **extra)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _cli(env: dict[str, str], cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipewarden", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _proposals(env: dict[str, str], cwd: Path, dataset: str) -> list[dict[str, object]]:
    res = _cli(env, cwd, "inbox", "list", "--dataset", dataset, "--all", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture
def api_url(prefect_harness: None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness serves an API"
    return str(url)


class Served:
    """An example project whose flow a child process serves as a deployment on the session's Prefect server."""

    def __init__(self, project: Path, env: dict[str, str], deployment: str) -> None:
        self.project, self.env, self.deployment = project, env, deployment

    def run(self, **parameters: object) -> object:
        from prefect.deployments import run_deployment

        return run_deployment(name=self.deployment, parameters=parameters, timeout=600)


@contextmanager
def _serve(example: str, module: str, deployment: str, tmp_path: Path, api_url: str) -> Iterator[Served]:
    project = copy_project(REPO_ROOT / "examples" / example, tmp_path / example)
    # the runner checks for scheduled runs every second instead of every 10 s: the test waits less, nothing else changes
    env = _env(project, tmp_path / f"{example}-home", api_url, PREFECT_RUNNER_POLL_FREQUENCY="1")
    log_path = tmp_path / f"serve-{example}.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", module, "--serve"], cwd=project, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            _wait_for_deployment(deployment, server, log_path)
            yield Served(project, env, deployment)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def _wait_for_deployment(name: str, server: subprocess.Popen[bytes], log: Path, deadline_s: float = 180) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert server.poll() is None, f"the served flow exited: {log.read_text()[-3000:]}"
            try:
                client.read_deployment_by_name(name)
                return
            except Exception:  # not registered yet (ObjectNotFound): poll until the deadline
                time.sleep(0.5)
    raise AssertionError(f"deployment {name} never appeared: {log.read_text()[-3000:]}")


def test_orders_heals_through_its_own_deployment(tmp_path: Path, api_url: str) -> None:
    with _serve("orders", "flows.orders_flow", "orders-pipeline/hourly", tmp_path, api_url) as served:
        _heal_through_the_deployment(served, "orders", approver="olivia", clean=[{"day": 1}, {"day": 3}],
                                     drifted={"day": 2, "drifted": True}, deployment_name="hourly")


def test_flights_heals_through_its_own_deployment(tmp_path: Path, api_url: str) -> None:
    with _serve("flights", "flows.flights_flow", "flights-pipeline/monthly", tmp_path, api_url) as served:
        _heal_through_the_deployment(served, "flights", approver="alice",
                                     clean=[{"month_number": 1}, {"month_number": 3}],
                                     drifted={"month_number": 2, "drift": True}, deployment_name="monthly")


def _heal_through_the_deployment(served: Served, dataset: str, *, approver: str, clean: list[dict[str, object]],
                                 drifted: dict[str, object], deployment_name: str) -> None:
    project, env = served.project, served.env
    first = served.run(**clean[0])
    assert first.state.is_completed(), first.state

    drifted_run = served.run(**drifted)
    assert drifted_run.state.is_failed(), drifted_run.state
    assert dataset in drifted_run.state.message and "schema_drift" in drifted_run.state.message

    res = _cli(env, project, "supervise", "--once")
    assert res.returncode == 0, res.stderr
    [proposal] = [p for p in _proposals(env, project, dataset) if p["agent"] == "schema-drift"]
    assert proposal["status"] == "pending"

    token = _cli(env, project, "approvers", "token", approver)  # the CLI decides as the person it proves
    assert token.returncode == 0, token.stderr
    res = _cli(env | {"PIPEWARDEN_TOKEN": token.stdout.strip()}, project, "inbox", "approve", str(proposal["id"]))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified" in res.stdout, res.stdout + res.stderr

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:  # the re-run went through the deployment, same parameters
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])))
    reruns = [r for r in runs if r.parameters == drifted]
    assert len(reruns) == 2 and sorted(r.state.type.value for r in reruns) == ["COMPLETED", "FAILED"]

    later = served.run(**clean[1])
    assert later.state.is_completed(), later.state
    loads = _loads(env, project)[dataset]
    assert [row["status"] for row in loads] == ["accepted", "accepted", "accepted"]
    assert loads[-1]["load_id"] != loads[1]["load_id"]  # the clean batch after the fix is a load of its own


def _loads(env: dict[str, str], cwd: Path) -> dict[str, list[dict[str, object]]]:
    """Each dataset's loads in arrival order, with their quarantined row count (read in a child process, so the
    warehouse is opened the way a user's shell would)."""
    code = (
        "import json; from pipewarden.flows.ingest import list_loads; from pipewarden.flows.warehouse import connect\n"
        "out = {}\n"
        "with connect(read_only=True) as con:\n"
        "    q = dict(con.execute('SELECT load_id, count(*) FROM quarantine GROUP BY load_id').fetchall())\n"
        "for row in list_loads():\n"
        "    out.setdefault(row['dataset'], []).append({'load_id': row['load_id'], 'status': row['status'],"
        " 'quarantined': q.get(row['load_id'], 0)})\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)
