"""Fixtures for the command-line tests: small batch files, and two ways to run `pipewarden` as a user does.

`pw(*args)` runs the real entry point (`pipewarden.cli.main`, what the console script calls) in this process
and captures stdout/stderr at the file-descriptor level, so output written by libraries (Prefect's loggers)
is seen too. `pw_subprocess(*args)` runs `python -m pipewarden` in a child process against the test's
PIPEWARDEN_HOME. Both return a `CliResult`.

Error messages are printed by rich, which wraps lines at 80 columns when stderr is not a terminal; the tests
pass relative file names (the batches live in the working folder) and compare whitespace-normalized text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import CliResult  # noqa: F401  (re-exported: the cli tests import it from here)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_ROWS = 300


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a `pipewarden` child process: this one, plus the test's home and no Prefect events."""
    env = dict(os.environ)
    env.update(
        PIPEWARDEN_HOME=str(home),
        PIPEWARDEN_EMIT_PREFECT_EVENTS="false",
        PREFECT_HOME=os.environ["PREFECT_HOME"],
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
    )
    env.update(extra)
    return env


# --------------------------------------------------------------------------- batch files
@pytest.fixture(scope="session")
def batches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small flights batches, written once per session.

    jan.csv        the first 300 January flights, clean
    jan.parquet    the same rows as Parquet
    drift.csv      jan.csv with dep_delay renamed to departureDelay
    retyped.csv    dep_delay renamed, flight numbers as text ("UA1545"), air_time as float, plus a new `gate`
    truncated.parquet  the first half of jan.parquet's bytes (no footer)
    latin1.csv     jan.csv with a non-ASCII tail number, encoded as latin-1
    empty.csv      0 bytes
    allbad.csv     jan.csv where every row's origin is 'XXX' (not EWR, JFK or LGA)
    """
    from pipewarden.evals.flights_data import source_dir

    folder = tmp_path_factory.mktemp("batches")
    # flights.csv.zip is sorted by date: its first rows are January 1st (read directly, no cache, no home).
    jan = pd.read_csv(source_dir() / "flights.csv.zip", nrows=SAMPLE_ROWS)
    assert set(jan["month"]) == {1}
    jan.to_csv(folder / "jan.csv", index=False)
    jan.to_parquet(folder / "jan.parquet", index=False)
    jan.rename(columns={"dep_delay": "departureDelay"}).to_csv(folder / "drift.csv", index=False)

    retyped = jan.rename(columns={"dep_delay": "departureDelay"})
    retyped["flight"] = retyped["carrier"] + retyped["flight"].astype("str")
    retyped["air_time"] = retyped["air_time"].astype("float64") + 0.5
    retyped["gate"] = [f"G{(i * 7) % 40:02d}" for i in range(len(retyped))]
    retyped.to_csv(folder / "retyped.csv", index=False)

    whole = (folder / "jan.parquet").read_bytes()
    (folder / "truncated.parquet").write_bytes(whole[: len(whole) // 2])

    latin = jan.head(50).copy()
    latin.loc[3, "tailnum"] = "N\u00f8123"  # 'ø' is one byte (0xF8) in latin-1, invalid as UTF-8
    latin.to_csv(folder / "latin1.csv", index=False, encoding="latin-1")
    assert b"\xf8" in (folder / "latin1.csv").read_bytes()

    (folder / "empty.csv").write_bytes(b"")

    bad = jan.head(40).copy()
    bad["origin"] = "XXX"
    bad.to_csv(folder / "allbad.csv", index=False)
    return folder


@pytest.fixture
def in_batches(batches: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work from the batch folder, so commands take short relative file names (and messages stay unwrapped)."""
    monkeypatch.chdir(batches)
    return batches


# --------------------------------------------------------------------------- runners
@pytest.fixture
def pw_subprocess(pw_home: Path) -> Callable[..., CliResult]:
    """Run `python -m pipewarden ARGS...` in a child process (cwd: the current folder), bounded by a timeout."""

    def invoke(*args: str | Path, timeout: float = 120, env: dict[str, str] | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "pipewarden", *map(str, args)],
            capture_output=True, text=True, timeout=timeout, env=env or subprocess_env(pw_home),
        )
        return CliResult(code=proc.returncode, out=proc.stdout, err=proc.stderr)

    return invoke


# --------------------------------------------------------------------------- warehouse
def warehouse_rows(home: Path, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    """Run a query on PIPEWARDEN_HOME/warehouse.duckdb, read-only; [] if the warehouse or the table is absent."""
    import duckdb

    path = home / "warehouse.duckdb"
    if not path.exists():
        return []
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    except duckdb.CatalogException:
        return []
    finally:
        con.close()


def landed_files(home: Path, dataset: str) -> list[Path]:
    """Every file (temporary ones included) under PIPEWARDEN_HOME/landing/<dataset>/."""
    folder = home / "landing" / dataset
    return sorted(folder.rglob("*")) if folder.exists() else []
