"""tests/conftest.py clears the developer's own identity (PIPEWARDEN_TOKEN, PIPEWARDEN_USER) for every test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_probe_sees_no_identity_in_the_environment() -> None:
    assert "PIPEWARDEN_TOKEN" not in os.environ and "PIPEWARDEN_USER" not in os.environ


def test_a_token_set_by_the_developer_does_not_reach_a_test() -> None:
    env = {**os.environ, "PIPEWARDEN_TOKEN": "pw_developers_own_token", "PIPEWARDEN_USER": "developer"}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         f"{Path(__file__).relative_to(REPO_ROOT)}::test_probe_sees_no_identity_in_the_environment"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
