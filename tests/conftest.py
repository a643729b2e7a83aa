"""Shared fixtures: every test gets its own PIPEWARDEN_HOME; Prefect runs under one session-wide harness."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports prefect: a private PREFECT_HOME, no analytics, no network for models.
_PREFECT_HOME = tempfile.mkdtemp(prefix="pw-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Tests never reach a real model: no key, and any configured endpoint is cleared.
for _k in ("PIPEWARDEN_OPENAI_API_KEY", "PIPEWARDEN_OPENAI_BASE_URL", "OPENAI_API_KEY", "PIPEWARDEN_DATABASE_URL"):
    os.environ.pop(_k, None)


@pytest.fixture(autouse=True)
def pw_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh PIPEWARDEN_HOME per test, with settings re-read."""
    from pipewarden.settings import get_settings

    home = tmp_path / "pwhome"
    monkeypatch.setenv("PIPEWARDEN_HOME", str(home))
    monkeypatch.setenv("PIPEWARDEN_EMIT_PREFECT_EVENTS", "false")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (a temporary local server) for the whole session; request it where flows run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def minilm():
    """The real packaged MiniLM embedder, loaded once per session."""
    from knowledge.embedder import MiniLMEmbedder

    return MiniLMEmbedder()
