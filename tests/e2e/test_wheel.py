"""The built wheel, installed into a fresh virtual environment beside a user project that has its own `flows/` and
`tools/` packages: neither shadows the other, and the user's Prefect flow guards a batch through the public API.

The fresh environment gets pipewarden from the wheel only (`--no-deps`); its dependencies are borrowed from this
checkout's environment by a `.pth` line, which adds that site-packages folder to `sys.path` without running its own
`.pth` files, so the editable install of this checkout is not visible there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, copy_project

pytestmark = pytest.mark.slow

PROBE = r"""
import json, sys
import flows, tools, pipewarden
from pipewarden import guard_batch
from tools.exports import export, drifted_export
import pipewarden.flows, pipewarden.tools

clean = guard_batch(export(1, rows=300), dataset="orders")
out = {
    "user_flows": flows.__file__, "user_tools": tools.__file__,
    "pipewarden": pipewarden.__file__, "pipewarden_flows": pipewarden.flows.__file__,
    "accepted": len(clean.accepted), "status": clean.status,
}
try:
    guard_batch(drifted_export(2, rows=300), dataset="orders")
    out["halted"] = None
except pipewarden.BatchHalted as exc:
    out["halted"] = str(exc)
print("PROBE " + json.dumps(out))
"""

FLOW_RUN = r"""
import json
from flows.orders_flow import orders_pipeline
state = orders_pipeline(day=1, return_state=True)
print("FLOW " + json.dumps({"type": state.type.value, "result": state.result(raise_on_failure=False)}))
state = orders_pipeline(day=2, drifted=True, return_state=True)
print("FLOW " + json.dumps({"type": state.type.value, "message": state.message}))
"""


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding the wheel of this checkout (and no other pipewarden)."""
    root = tmp_path_factory.mktemp("wheel")
    dist, source = root / "dist", root / "source"
    # setuptools builds inside the source tree (build/, *.egg-info): build a copy, leave the checkout clean
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".pipewarden", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, capture_output=True, text=True)
    wheel = next(dist.glob("pipewarden-*.whl"))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)
    return env_dir


def _user_env(project: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEWARDEN_", "PYTHONPATH", "PREFECT_API"))}
    env.update(PIPEWARDEN_HOME=str(project / ".pipewarden"), PIPEWARDEN_EMIT_PREFECT_EVENTS="false",
               PREFECT_HOME=str(tmp / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="WARNING", HF_HUB_OFFLINE="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")  # a busy machine starts it slowly
    return env


def test_the_wheel_installs_everything_under_pipewarden_only(wheel_env: Path) -> None:
    site = Path(next((wheel_env / "lib").glob("python3.*/site-packages")))
    top = sorted(p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__")
    assert top == ["pipewarden"]
    for sub in ("flows", "tools", "agents", "policies", "inbox", "knowledge", "evals"):
        assert (site / "pipewarden" / sub / "__init__.py").is_file()


def test_a_user_project_with_its_own_flows_and_tools_guards_a_batch(wheel_env: Path, tmp_path: Path) -> None:
    project = copy_project(REPO_ROOT / "examples" / "orders", tmp_path / "shop")
    res = subprocess.run([str(wheel_env / "bin" / "python"), "-c", PROBE], cwd=project, env=_user_env(project, tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert Path(out["user_flows"]).parent == project / "flows"
    assert Path(out["user_tools"]).parent == project / "tools"
    assert Path(out["pipewarden"]).is_relative_to(wheel_env)
    assert Path(out["pipewarden_flows"]).is_relative_to(wheel_env)
    assert out["status"] == "accepted" and out["accepted"] == 300
    assert out["halted"] and "orders" in out["halted"] and "schema" in out["halted"].lower()


def test_the_users_prefect_flow_fails_on_a_halted_batch(wheel_env: Path, tmp_path: Path) -> None:
    project = copy_project(REPO_ROOT / "examples" / "orders", tmp_path / "shop")
    res = subprocess.run([str(wheel_env / "bin" / "python"), "-c", FLOW_RUN], cwd=project,
                         env=_user_env(project, tmp_path), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    clean, halted = (json.loads(line[5:]) for line in res.stdout.splitlines() if line.startswith("FLOW "))
    assert clean["type"] == "COMPLETED" and clean["result"] == {"accepted": 2000}
    assert halted["type"] == "FAILED"
    assert "orders" in halted["message"] and "pipewarden inbox" in halted["message"]
