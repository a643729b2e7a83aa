"""`tools.warehouse` is the one way in: waiting for a DuckDB file another process holds or failing at once, the same
`WarehouseUnavailable` for every tool that opens the user's warehouse, identifiers quoted by one function
(sqlglot's quoting), and scratch DuckDBs that are in memory and, when locked, cannot reach files or settings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipewarden.settings import get_settings
from pipewarden.tools import warehouse as wh_module
from pipewarden.tools.warehouse import (
    WarehouseUnavailable,
    connect,
    duckdb_has_table,
    quote_ident,
    scratch_duckdb,
)


# --------------------------------------------------------------------------- quoting
@pytest.mark.parametrize(("name", "dialect", "quoted"), [
    ("dep_delay", "duckdb", '"dep_delay"'),
    ('a"b', "duckdb", '"a""b"'),
    ('a"b', "postgres", '"a""b"'),
    ("Mixed Case", "postgres", '"Mixed Case"'),
    ("x", "mysql", "`x`"),
    ("x", "no-such-dialect", '"x"'),
])
def test_identifiers_are_quoted_by_sqlglot_for_the_dialect(name: str, dialect: str, quoted: str) -> None:
    assert quote_ident(name, dialect) == quoted


@pytest.mark.parametrize(("name", "shown"), [
    ("dep_delay", "dep_delay"), ("DepDelay", '"DepDelay"'), ("dep delay", '"dep delay"'), ("select", '"select"'),
    ('a"b', '"a""b"'),
])
def test_a_name_a_person_reads_stays_bare_only_when_bare_is_the_same_name(name: str, shown: str) -> None:
    assert quote_ident(name, always=False) == shown


def test_a_quoted_name_reads_back_the_same_column_in_duckdb() -> None:
    con = duckdb.connect()
    try:
        for name in ('a"b', "Mixed Case", "select"):
            col = quote_ident(name)
            con.execute(f"CREATE OR REPLACE TABLE {quote_ident('t x')} AS SELECT 1 AS {col}")
            assert con.execute(f"SELECT {col} FROM {quote_ident('t x')}").df().columns.tolist() == [name]
        assert duckdb_has_table(con, "t x") and not duckdb_has_table(con, "t")
    finally:
        con.close()


# --------------------------------------------------------------------------- a locked file: wait or fail at once
@pytest.fixture
def held_file(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A DuckDB file another process holds for writing until its stdin is closed."""
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); "
         "c.execute('CREATE TABLE t AS SELECT 42 AS x'); c.commit(); print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    try:
        yield path, holder
    finally:
        if holder.poll() is None:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)


def test_without_a_wait_a_held_file_fails_at_once_naming_it(held_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path, _ = held_file
    slept: list[float] = []
    monkeypatch.setattr(wh_module, "_pause", slept.append)
    with pytest.raises(WarehouseUnavailable, match="locked by another process") as err, \
            connect(f"duckdb:///{path}", read_only=True):
        pass
    assert slept == [] and str(path) in err.value.message and "wait for" in (err.value.hint or "")


def test_with_a_wait_the_file_opens_once_the_other_process_lets_go(held_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path, holder = held_file
    slept: list[float] = []

    def release_on_first_retry(seconds: float) -> None:  # the fault hook: the holder exits before the 1st retry
        slept.append(seconds)
        if holder.poll() is None:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)

    monkeypatch.setattr(wh_module, "_pause", release_on_first_retry)
    with connect(f"duckdb:///{path}", read_only=True, wait_s=600) as wh:
        assert wh.execute("SELECT x FROM t") == [(42,)]
    assert slept == [wh_module.LOCK_POLL_S]


def test_a_wait_that_runs_out_is_the_same_error_saying_how_long_it_waited(held_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path, _ = held_file
    clock = iter(range(0, 10_000, 1))  # monotonic seconds: each look at the clock is a second later
    monkeypatch.setattr(wh_module, "_now", lambda: float(next(clock)))
    monkeypatch.setattr(wh_module, "_pause", lambda _s: None)
    with pytest.raises(WarehouseUnavailable, match=r"locked by another process \(waited 3 s\)"), \
            connect(f"duckdb:///{path}", wait_s=3):
        pass


# --------------------------------------------------------------------------- every tool: the same error
def test_a_missing_warehouse_is_the_same_error_for_each_tool_that_reads_it(pw_home: Path) -> None:
    from pipewarden.tools.contract_draft import read_warehouse_table
    from pipewarden.tools.cost import open_warehouse

    url = get_settings().warehouse
    for open_it in (lambda: read_warehouse_table("orders"), open_warehouse,
                    lambda: connect(read_only=True).__enter__()):
        with pytest.raises(WarehouseUnavailable) as err:
            open_it()
        assert f"the warehouse {url} does not exist yet" in err.value.message
        assert "pipewarden run" in (err.value.hint or "")
    assert not get_settings().warehouse_path.exists()  # reading never creates it


def test_the_contract_draft_says_a_file_sample_works_too(pw_home: Path) -> None:
    from pipewarden.tools.contract_draft import read_warehouse_table

    with pytest.raises(WarehouseUnavailable) as err:
        read_warehouse_table("orders")
    assert "--from FILE" in (err.value.hint or "")


# --------------------------------------------------------------------------- scratch DuckDBs
def test_a_locked_scratch_duckdb_reads_registered_frames_but_no_file_or_setting(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n1\n")
    con = scratch_duckdb(locked=True)
    try:
        con.register("batch", pd.DataFrame({"x": [1, 2, 3]}))
        assert con.execute("SELECT sum(x) FROM batch").fetchone() == (6,)
        with pytest.raises(duckdb.Error):
            con.execute(f"SELECT * FROM read_csv('{secret}')")
        with pytest.raises(duckdb.Error):
            con.execute("SET enable_external_access = true")
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
    finally:
        con.close()


def test_an_unlocked_scratch_duckdb_takes_its_config_and_reads_files(tmp_path: Path) -> None:
    data = tmp_path / "batch.csv"
    data.write_text("x\n1\n2\n")
    con = scratch_duckdb(locked=False, memory_limit="123MB", preserve_insertion_order=True)
    try:
        assert con.execute(f"SELECT count(*) FROM read_csv('{data}')").fetchone() == (2,)
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]  # type: ignore[index]
        assert limit.replace(" ", "").lower().startswith(("117.3mib", "123.0mb", "123mb"))
        assert con.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall() == [
            ("memory",)]
    finally:
        con.close()
