"""The eval scorer re-runs an agent's SQL the way the inbox does (issue 11): through the guard's allow-list of the
scenario warehouse's tables, then on the locked connection, so a scored answer cannot read a file either."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from pipewarden.models import SqlModelPatch


@pytest.fixture
def scenario_home(tmp_path: Path) -> Path:
    home = tmp_path / "scenario"
    home.mkdir()
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    con.execute("CREATE TABLE stg_flights AS SELECT * FROM (VALUES ('EWR', 1), ('JFK', 2)) AS t(origin, n)")
    con.close()
    return home


def recheck(home: Path, sql: str) -> list[str]:
    from pipewarden.evals.scorers import _recheck_sql

    change = SqlModelPatch(model="route_daily", sql=sql, base_sql="SELECT origin, n FROM stg_flights")
    return _recheck_sql(change, SimpleNamespace(home=home), same_rows=True)  # type: ignore[arg-type]


def test_a_same_rows_rewrite_holds_up(scenario_home: Path) -> None:
    assert recheck(scenario_home, "SELECT origin, n FROM stg_flights WHERE n > 0") == []


@pytest.mark.parametrize(("sql", "names"), [
    ("SELECT * FROM '/etc/hostname'", "'/etc/hostname'"),
    ("SELECT * FROM pg_settings", "'pg_settings'"),
    ("SELECT * FROM secrets_of_another_project", "'secrets_of_another_project'"),
])
def test_a_read_outside_the_scenario_warehouse_is_refused(scenario_home: Path, sql: str, names: str) -> None:
    problems = recheck(scenario_home, sql)
    assert problems and names in problems[0] and "is not allowed" in problems[0]


def test_with_the_guard_bypassed_the_connection_still_refuses_files(
    scenario_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipewarden.tools.sql_guard as guard

    secret = tmp_path / "secret.csv"
    secret.write_text("origin,n\nhunter2,1\n")
    monkeypatch.setattr(guard, "check_select", lambda sql, **k: [])
    problems = recheck(scenario_home, f"SELECT * FROM '{secret}'")
    assert problems and "disabled by configuration" in problems[0] and "hunter2" not in problems[0]


BASE_SQL = "SELECT origin, n FROM stg_flights"


def _builds(home: Path, *runs: tuple[str, str, str, str]) -> None:
    """`route_daily` as a build left it (a third row stg_flights does not have, so a test can tell the table from
    the SQL) and `model_runs` rows (run_id, model, status, sql) in build order."""
    from pipewarden.flows.transform import sql_hash

    con = duckdb.connect(str(home / "warehouse.duckdb"))
    con.execute("CREATE TABLE route_daily AS SELECT * FROM (VALUES ('EWR', 1), ('JFK', 2), ('LGA', 3)) AS t(origin, n)")
    con.execute("CREATE TABLE model_runs (run_id VARCHAR, model VARCHAR, status VARCHAR, started_at TIMESTAMP, "
                "sql_hash VARCHAR)")
    for i, (run_id, model, status, sql) in enumerate(runs):
        con.execute("INSERT INTO model_runs VALUES (?, ?, ?, TIMESTAMP '2026-12-07 10:00:00' + INTERVAL (?) SECOND, ?)",
                    [run_id, model, status, i, sql_hash(sql)])
    con.close()


def test_the_old_rows_come_from_the_table_the_last_build_made_from_the_replaced_sql(scenario_home: Path) -> None:
    _builds(scenario_home, ("b1", "stg_flights", "ok", "x"), ("b1", "route_daily", "ok", BASE_SQL))
    problems = recheck(scenario_home, BASE_SQL)  # the same SQL, but the built table holds a third row
    assert problems == ["re-check: the new SQL of route_daily returns different rows (1 missing, 0 extra)"]


@pytest.mark.parametrize("runs", [
    [("b1", "route_daily", "ok", "SELECT 'another version'")],  # the table was built from other SQL
    [("b1", "route_daily", "ok", BASE_SQL), ("b2", "stg_flights", "ok", "x")],  # something was built since
    [("b1", "route_daily", "failed", BASE_SQL)],  # the last build of it failed: the table is older
])
def test_otherwise_the_replaced_sql_is_run_again(scenario_home: Path, runs: list[tuple[str, str, str, str]]) -> None:
    _builds(scenario_home, *runs)
    assert recheck(scenario_home, BASE_SQL) == []
