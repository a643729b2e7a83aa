"""An edited SQL patch's dry-run on a PostgreSQL warehouse (issue 11): the guard's allow-list is the warehouse's
own tables (never the state DB's, when they share a database), and what runs runs in a read-only transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipewarden.errors import UserError
from pipewarden.models import SqlModelPatch
from pipewarden.settings import get_settings
from pipewarden.store import StateStore

pytestmark = pytest.mark.postgres
OLD_SQL = "SELECT origin, count(*) AS n FROM pw_flights GROUP BY origin"


@pytest.fixture
def pg_warehouse(postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    from pipewarden.tools.warehouse import connect

    models = tmp_path / "models"
    models.mkdir()
    (models / "route_stats.sql").write_text(OLD_SQL)
    monkeypatch.setenv("PIPEWARDEN_MODELS_DIR", str(models))
    monkeypatch.setenv("PIPEWARDEN_WAREHOUSE_URL", postgres_url)
    get_settings.cache_clear()
    with connect(postgres_url) as wh:
        wh.execute("DROP TABLE IF EXISTS pw_flights")
        wh.execute("CREATE TABLE pw_flights AS SELECT * FROM (VALUES ('EWR', 'IAH'), ('EWR', 'MIA'), ('JFK', 'LAX')) "
                   "AS t(origin, dest)")
        wh.execute("CREATE SEQUENCE IF NOT EXISTS pw_seq")
    return postgres_url


def patch(sql: str) -> SqlModelPatch:
    return SqlModelPatch(model="route_stats", sql=sql, base_sql=OLD_SQL, reason="edited")


def test_an_edit_dry_runs_on_the_postgres_warehouse(pg_warehouse: str) -> None:
    from pipewarden.tools.redry import _redry_sql

    dr = _redry_sql(patch("SELECT origin, dest, count(*) AS n FROM pw_flights GROUP BY origin, dest"), StateStore())
    assert dr.before.passed and dr.before.rows == 2 and dr.after.passed and dr.after.rows == 3
    assert set(dr.sample[0]) == {"origin", "dest", "n"}


@pytest.mark.parametrize(("sql", "names"), [
    ("SELECT name AS origin, 1 AS n FROM pg_settings", "'pg_settings'"),
    ("SELECT name AS origin, 1 AS n FROM pg_catalog.pg_settings", "pg_catalog.pg_settings"),
    ("SELECT pg_read_file('/etc/hostname') AS origin, 1 AS n", "pg_read_file()"),
    ("SELECT current_setting('data_directory') AS origin, 1 AS n", "current_setting()"),
    ("SELECT query_to_xml('select 1', true, true, '') AS origin, 1 AS n", "query_to_xml()"),
])
def test_catalogs_and_server_functions_are_refused(pg_warehouse: str, sql: str, names: str) -> None:
    from pipewarden.tools.redry import _redry_sql

    with pytest.raises(UserError, match="is refused") as err:
        _redry_sql(patch(sql), StateStore())
    assert names in str(err.value)


def test_the_state_db_tables_are_not_the_projects_when_they_share_the_database(
    pg_warehouse: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipewarden.tools.redry import _redry_sql

    monkeypatch.setenv("PIPEWARDEN_DATABASE_URL", pg_warehouse)
    get_settings.cache_clear()
    store = StateStore()  # the state tables now live in the warehouse's database
    with pytest.raises(UserError, match="'api_tokens' is not allowed"):
        _redry_sql(patch("SELECT approver AS origin, 1 AS n FROM api_tokens"), store)


def test_with_the_guard_bypassed_nothing_can_be_written(pg_warehouse: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipewarden.tools.redry as redry

    monkeypatch.setattr(redry, "_guard", lambda *a, **k: None)
    dr = redry._redry_sql(patch("SELECT CAST(nextval('pw_seq') AS TEXT) AS origin, 1 AS n"), StateStore())
    assert not dr.after.passed and "read-only transaction" in dr.after.failed_checks[0]
