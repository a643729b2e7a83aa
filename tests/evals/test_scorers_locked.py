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
