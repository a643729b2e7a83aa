"""Runtimes with fake ports, for tests: `swap` in the test's own process, factories for a child process.

In process: `swap(monkeypatch, resumer=fake_resumer.resume)` installs `runtime.current()` with those ports
replaced until the test ends. A child process (a CLI command, `pipewarden serve`, a crash-point job) is pointed at
one of the factories below with `PIPEWARDEN_RUNTIME=tests.fakes.runtimes:<name>`: each is the real wiring with one
port replaced by the existing fake.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipewarden import runtime
from pipewarden.runtime import Runtime
from pipewarden.wiring import default_runtime


def swap(monkeypatch: pytest.MonkeyPatch, **parts: Any) -> Runtime:
    """Install the current runtime with `parts` replaced, for the rest of the test (monkeypatch undoes it)."""
    swapped = runtime.current().replace(**parts)
    monkeypatch.setattr(runtime, "_installed", swapped)
    return swapped


def fake_resumer() -> Runtime:
    """Approvals resume `tests.inbox.fake_resumer.resume` (approved -> applying -> applied -> verified)."""
    from tests.inbox import fake_resumer as fake

    return default_runtime().replace(resumer=fake.resume)


def fake_runner() -> Runtime:
    """Re-runs end as `tests.agents.fake_runner` says (`FAKE_RUNNER_STATUS` in a child process)."""
    from tests.agents import fake_runner as fake

    return default_runtime().replace(pipeline_runner=fake.run)


def quality_runner() -> Runtime:
    """Re-runs are the real validate and quality stages without Prefect (`tests.agents.quality_runner`)."""
    from tests.agents import quality_runner as fake

    return default_runtime().replace(pipeline_runner=fake.run)


def browser_resumer() -> Runtime:
    """The browser test's server: approvals run the real apply tool, then mark the proposal verified."""
    from tests.e2e.test_inbox_browser import apply_and_verify

    return default_runtime().replace(resumer=apply_and_verify)
