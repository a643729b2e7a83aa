"""Both example projects end to end, as their teams would run them.

orders, through a served Prefect deployment: the team's flow is served (`python -m flows.orders_flow --serve`) in
its own process against the session's Prefect server; a clean export completes; a drifted export's flow run ends
Failed naming the event; `pipewarden supervise --once` drafts the proposal; `pipewarden inbox approve` applies it,
re-runs the halted export through the same deployment with the same parameters and verifies it; a later clean
export passes untouched.

flights, by running the team's flow directly: a clean month completes, a drifted month fails, and after approval the
landed batch is re-checked (no deployment) and verified; the next clean month passes untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
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


@pytest.fixture
def served_orders(tmp_path: Path, api_url: str) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """The orders example project, its flow served as `orders-pipeline/hourly` by a child process."""
    project = copy_project(REPO_ROOT / "examples" / "orders", tmp_path / "shop")
    home = tmp_path / "shop-home"
    env = _env(project, home, api_url)
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "flows.orders_flow", "--serve"], cwd=project, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_deployment("orders-pipeline/hourly", server, tmp_path / "serve.log")
        yield project, home, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


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


def _run(name: str, parameters: dict[str, object]) -> object:
    from prefect.deployments import run_deployment

    return run_deployment(name=name, parameters=parameters, timeout=600)


def test_orders_heals_through_its_own_deployment(served_orders: tuple[Path, Path, dict[str, str]]) -> None:
    project, home, env = served_orders
    clean = _run("orders-pipeline/hourly", {"day": 1})
    assert clean.state.is_completed(), clean.state

    drifted = _run("orders-pipeline/hourly", {"day": 2, "drifted": True})
    assert drifted.state.is_failed(), drifted.state
    assert "orders" in drifted.state.message and "schema_drift" in drifted.state.message

    res = _cli(env, project, "supervise", "--once")
    assert res.returncode == 0, res.stderr
    [proposal] = [p for p in _proposals(env, project, "orders") if p["agent"] == "schema-drift"]
    assert proposal["status"] == "pending"

    res = _cli(env | {"PIPEWARDEN_USER": "olivia"}, project, "inbox", "approve", str(proposal["id"]))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified" in res.stdout, res.stdout + res.stderr

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:  # the re-run went through the deployment, same parameters
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["hourly"])))
    reruns = [r for r in runs if r.parameters == {"day": 2, "drifted": True}]
    assert len(reruns) == 2 and sorted(r.state.type.value for r in reruns) == ["COMPLETED", "FAILED"]

    later = _run("orders-pipeline/hourly", {"day": 3})
    assert later.state.is_completed(), later.state
    loads = _loads(env, project)
    assert loads["orders"][-1]["status"] == "accepted" and loads["orders"][-1]["quarantined"] == 0


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


def test_flights_heals_by_rechecking_the_landed_batch(tmp_path: Path, api_url: str) -> None:
    project = copy_project(REPO_ROOT / "examples" / "flights", tmp_path / "flights")
    env = _env(project, tmp_path / "flights-home", api_url)

    def flow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flows.flights_flow", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=900)

    assert flow("--month", "1").returncode == 0
    halted = flow("--month", "2", "--drift")
    assert halted.returncode != 0 and "BatchHalted" in halted.stderr and "schema_drift" in halted.stderr

    assert _cli(env, project, "supervise", "--once").returncode == 0
    [proposal] = [p for p in _proposals(env, project, "flights") if p["agent"] == "schema-drift"]
    res = _cli(env | {"PIPEWARDEN_USER": "alice"}, project, "inbox", "approve", str(proposal["id"]))
    assert res.returncode == 0 and "verified" in res.stdout, res.stdout + res.stderr

    assert flow("--month", "3").returncode == 0
    flights = _loads(env, project)["flights"]
    assert [row["status"] for row in flights] == ["accepted", "accepted", "accepted"]
