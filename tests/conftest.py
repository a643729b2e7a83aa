"""Shared fixtures: every test gets its own PIPEWARDEN_HOME; Prefect runs under one session-wide harness."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Before anything imports prefect: a private PREFECT_HOME, no analytics, no network for models.
_PREFECT_HOME = tempfile.mkdtemp(prefix="pw-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
REPO_ROOT = Path(__file__).resolve().parent.parent
FLIGHTS_PROJECT = REPO_ROOT / "examples" / "flights"
# Modules that read a contract at import time see the example project; each test then gets a private copy.
os.environ["PIPEWARDEN_PROJECT"] = str(FLIGHTS_PROJECT)
# Tests never reach a real model: no key, and any configured endpoint is cleared.
for _k in ("PIPEWARDEN_OPENAI_API_KEY", "PIPEWARDEN_OPENAI_BASE_URL", "OPENAI_API_KEY", "PIPEWARDEN_DATABASE_URL"):
    os.environ.pop(_k, None)




def copy_project(source: Path, dest: Path) -> Path:
    """A private copy of an example project (its files only), so a test that writes never touches the repository."""
    import shutil

    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", ".pipewarden"))
    return dest


@pytest.fixture(autouse=True)
def pw_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs inside a private copy of the flights example project (PIPEWARDEN_PROJECT)."""
    project = copy_project(FLIGHTS_PROJECT, tmp_path / "project")
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(project))
    return project


@pytest.fixture(autouse=True)
def no_ambient_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own PIPEWARDEN_TOKEN / PIPEWARDEN_USER never reach a test: each test proves who it is itself."""
    for name in ("PIPEWARDEN_TOKEN", "PIPEWARDEN_USER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def pw_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw_project: Path,
            no_ambient_identity: None) -> Iterator[Path]:
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
    from pipewarden.knowledge.embedder import MiniLMEmbedder

    return MiniLMEmbedder()


POSTGRES_URL = os.environ.get("PIPEWARDEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_reachable(url: str) -> str | None:
    """None when reachable, else why not."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means: skip, and say why
        return f"no PostgreSQL at {url}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private database on the local PostgreSQL for this session, dropped at the end; skips if unreachable."""
    import uuid

    import sqlalchemy as sa

    why = _postgres_reachable(POSTGRES_URL)
    if why:
        pytest.skip(why)
    name = f"pw_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from pipewarden.db import make_engine

    make_engine(url).dispose()
    make_engine.cache_clear()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> str:
    """The state DB URL, once on SQLite and once on PostgreSQL (emptied before each test)."""
    from pipewarden.settings import get_settings

    if request.param == "sqlite":
        return get_settings().state_url
    url = request.getfixturevalue("postgres_url")
    import sqlalchemy as sa

    from pipewarden.db import make_engine, metadata

    engine = make_engine(url)
    with engine.begin() as conn:  # TRUNCATE: the audit log's triggers refuse DELETE (it is append-only)
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    monkeypatch.setenv("PIPEWARDEN_DATABASE_URL", url)
    get_settings.cache_clear()
    return url


@dataclass(frozen=True)
class CliResult:
    """What a `pipewarden` invocation ended with."""

    code: int
    out: str
    err: str

    @property
    def err_text(self) -> str:
        """stderr with every run of whitespace (rich's line wrapping included) collapsed to one space."""
        return " ".join(self.err.split())

    @property
    def out_text(self) -> str:
        return " ".join(self.out.split())


@pytest.fixture
def pw(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run `pipewarden ARGS...` through the console-script entry point, in this process."""
    from pipewarden.cli import main

    def invoke(*args: str | Path) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["pipewarden", *map(str, args)])
        capfd.readouterr()
        code: object = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        out, err = capfd.readouterr()
        if code is None:
            code = 0
        return CliResult(code=code if isinstance(code, int) else 1, out=out, err=err)

    return invoke
