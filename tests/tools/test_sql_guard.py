"""The SQL guardrails refuse anything but one read-only query over the project's tables; the locked warehouse
connection refuses files and settings even for SQL the guard never saw."""

from __future__ import annotations

import pytest

from pipewarden.tools.sql_guard import SqlGuardError, check_predicate, check_select, require_select

TABLES = {"stg_flights", "planes"}


@pytest.mark.parametrize(
    "sql",
    [
        "select * from stg_flights",
        "with d as (select carrier, count(*) n from stg_flights group by 1) select * from d",
        "select f.tailnum from stg_flights f join planes p using (tailnum)",
        "select carrier from stg_flights union all select carrier from stg_flights",
    ],
)
def test_read_only_queries_over_allowed_tables_pass(sql: str) -> None:
    assert check_select(sql, allowed_tables=TABLES) == []


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("drop table stg_flights", "DROP"),
        ("delete from stg_flights", "DELETE"),
        ("update stg_flights set dep_delay = 0", "UPDATE"),
        ("insert into planes select * from planes", "INSERT"),
        ("select 1; drop table planes", "exactly one statement"),
        ("select * from read_parquet('/etc/passwd')", "read_parquet"),
        ("select * from secrets", "'secrets' is not allowed: it is not one of the project's tables"),
        ("create table x as select * from planes", "CREATE"),
        ("select * from", "does not parse"),
        ("", "empty"),
    ],
)
def test_unsafe_or_broken_sql_is_refused_with_the_reason(sql: str, says: str) -> None:
    errors = check_select(sql, allowed_tables=TABLES)
    assert errors and any(says in e for e in errors), errors
    with pytest.raises(SqlGuardError):
        require_select(sql, allowed_tables=TABLES)


def test_predicates_use_only_known_columns_and_no_subqueries() -> None:
    cols = {"dep_delay", "tailnum"}
    assert check_predicate("dep_delay > 1000 or tailnum is null", cols) == []
    assert "not in the batch" in check_predicate("secret_col = 1", cols)[0]
    assert "subqueries" in check_predicate("tailnum in (select tailnum from planes)", cols)[0]
    assert check_predicate("dep_delay > 1; drop table planes", cols)
    assert "getenv" in check_predicate("getenv('HOME') = 'x'", cols)[0]


# --------------------------------------------------------------------------- the allow-list (issue 11, security)
HOSTILE = [
    # (query, the table or function the refusal must name)
    ("SELECT * FROM '/srv/secret/x.json'", "'/srv/secret/x.json'"),
    ("SELECT * FROM '/srv/secret/x.csv'", "'/srv/secret/x.csv'"),
    ("SELECT * FROM '/srv/secret/x.parquet'", "'/srv/secret/x.parquet'"),
    ('SELECT * FROM "/srv/secret/x.csv"', "'/srv/secret/x.csv'"),
    ("SELECT * FROM read_json_objects('/srv/secret/x.json')", "read_json_objects()"),
    ("SELECT * FROM read_ndjson('/srv/secret/x.json')", "read_ndjson()"),
    ("SELECT * FROM read_ndjson_objects('/srv/secret/x.json')", "read_ndjson_objects()"),
    ("SELECT * FROM read_ndjson_auto('/srv/secret/x.json')", "read_ndjson_auto()"),
    ("SELECT * FROM parquet_metadata('/srv/secret/x.parquet')", "parquet_metadata()"),
    ("SELECT * FROM parquet_schema('/srv/secret/x.parquet')", "parquet_schema()"),
    ("SELECT * FROM pg_catalog.pg_settings", "pg_catalog.pg_settings"),
    ("SELECT * FROM pg_settings", "'pg_settings'"),
    ("SELECT * FROM information_schema.tables", "information_schema.tables"),
    ("SELECT * FROM duckdb_settings()", "duckdb_settings()"),
    ("SELECT * FROM duckdb_tables", "'duckdb_tables'"),
    ("SELECT * FROM range(3)", "table function"),
    ("SELECT * FROM unnest([1, 2])", "table function"),
    ("SELECT current_setting('home_directory')", "current_setting()"),
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
    ("SELECT query_to_xml('select * from pg_settings', true, true, '')", "query_to_xml()"),
    ("SELECT json_serialize_plan('select * from pg_settings')", "json_serialize_plan()"),
    ("SELECT pg_catalog.current_setting('x')", "schema-qualified function"),
    ("SELECT version()", "current_version()"),
    ("SELECT * FROM other_db.main.planes", "other_db.main.planes"),
    ("SELECT * FROM stg_flights f JOIN read_csv('/etc/passwd') r ON true", "read_csv()"),
    # a CTE cannot launder a catalog's name: the outer reference is not in the CTE's scope
    ("SELECT * FROM (WITH pg_settings AS (SELECT 1) SELECT * FROM pg_settings) x, pg_settings", "'pg_settings'"),
    ("WITH pg_settings AS (SELECT * FROM pg_settings) SELECT * FROM pg_settings", "'pg_settings'"),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", "'b'"),
    ("SUMMARIZE planes", "SUMMARIZE"),
    ("SELECT * INTO copy FROM planes", "INTO"),
]


@pytest.mark.parametrize(("sql", "names"), HOSTILE)
def test_file_catalog_and_settings_reads_are_refused_naming_what(sql: str, names: str) -> None:
    errors = check_select(sql, allowed_tables=TABLES)
    assert any(names in e for e in errors), errors
    with pytest.raises(SqlGuardError):
        require_select(sql, allowed_tables=TABLES)


def test_a_refused_table_says_what_is_allowed() -> None:
    errors = check_select("SELECT * FROM '/srv/x.json'", allowed_tables=TABLES)
    assert errors == ["table '/srv/x.json' is not allowed: a file path or string literal is not a table "
                      "(allowed: planes, stg_flights)"]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM main.stg_flights",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM a) SELECT * FROM b",
    "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
    "SELECT date_trunc('day', t), date_part('year', t), hash(x), count(*) FILTER (WHERE y > 1), "
    "row_number() OVER (PARTITION BY a ORDER BY b) FROM planes GROUP BY ALL",
    "SELECT * FROM (VALUES (1), (2)) AS v(a)",
    "SELECT * FROM stg_flights WHERE tailnum IN (SELECT tailnum FROM planes)",
])
def test_ordinary_queries_over_the_project_still_pass(sql: str) -> None:
    assert check_select(sql, allowed_tables=TABLES) == []


def test_without_a_table_list_everything_but_the_names_is_still_checked() -> None:
    assert check_select("SELECT * FROM anything") == []
    assert check_select("SELECT * FROM read_json_objects('/x')")
    assert check_select("SELECT * FROM pg_catalog.pg_settings")


@pytest.fixture
def secret_file(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "secret.json"
    path.write_text('{"password": "hunter2"}\n')
    return path


@pytest.fixture
def duckdb_warehouse(tmp_path):  # type: ignore[no-untyped-def]
    import duckdb

    path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE planes AS SELECT 'N1' AS tailnum")
    con.close()
    return path


@pytest.mark.parametrize("sql", [
    "SELECT * FROM '{f}'",
    "SELECT * FROM read_json_objects('{f}')",
    "SELECT * FROM read_ndjson_objects('{f}')",
    "SELECT * FROM read_text('{f}')",
    "SELECT * FROM parquet_metadata('{f}')",
    "ATTACH '{f}.db' AS other",
    "COPY planes TO '{f}.csv'",
])
def test_the_locked_duckdb_connection_refuses_files_even_without_the_guard(sql, secret_file, duckdb_warehouse):  # type: ignore[no-untyped-def]
    import duckdb

    from pipewarden.tools.warehouse import connect_locked

    with connect_locked(f"duckdb:///{duckdb_warehouse}") as wh:
        assert wh.execute("SELECT tailnum FROM planes") == [("N1",)]
        with pytest.raises(duckdb.Error) as err:
            wh.execute(sql.format(f=secret_file))
        assert "hunter2" not in str(err.value)
        assert "disabled by configuration" in str(err.value) or "read-only" in str(err.value)


@pytest.mark.parametrize("undo", [
    "SET enable_external_access = true", "RESET enable_external_access", "SET lock_configuration = false",
    "SET access_mode = 'READ_WRITE'",
])
def test_the_locked_duckdb_connection_cannot_be_unlocked(undo, secret_file, duckdb_warehouse):  # type: ignore[no-untyped-def]
    import duckdb

    from pipewarden.tools.warehouse import connect_locked

    with connect_locked(f"duckdb:///{duckdb_warehouse}") as wh:
        with pytest.raises(duckdb.Error, match="locked"):
            wh.execute(undo)
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            wh.execute(f"SELECT * FROM '{secret_file}'")
        with pytest.raises(duckdb.Error):
            wh.execute("CREATE TABLE planes2 AS SELECT 1")  # read-only: the file is never written


def test_the_locked_connection_lists_the_project_tables(duckdb_warehouse):  # type: ignore[no-untyped-def]
    from pipewarden.tools.sql_guard import project_tables
    from pipewarden.tools.warehouse import connect_locked

    with connect_locked(f"duckdb:///{duckdb_warehouse}") as wh:
        assert project_tables(wh, ["route_daily"]) == {"planes", "route_daily"}


@pytest.mark.postgres
def test_the_locked_postgres_connection_is_read_only_with_a_timeout(postgres_url: str) -> None:
    import sqlalchemy as sa

    from pipewarden.tools.warehouse import connect, connect_locked

    with connect(postgres_url) as wh:
        wh.execute("DROP TABLE IF EXISTS guard_planes")
        wh.execute("CREATE TABLE guard_planes AS SELECT 'N1' AS tailnum")
    with connect_locked(postgres_url, timeout_s=0.5) as wh:
        assert wh.execute("SELECT tailnum FROM guard_planes") == [("N1",)]
        assert "guard_planes" in wh.tables()
        assert wh.execute("SHOW statement_timeout") == [("500ms",)]
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            wh.execute("CREATE TABLE guard_other AS SELECT 1")
        with pytest.raises(sa.exc.DBAPIError, match="statement timeout"):
            wh.execute("SELECT pg_sleep(2)")


def test_a_quarantine_predicate_runs_where_files_are_out_of_reach(secret_file, monkeypatch):  # type: ignore[no-untyped-def]
    """Defence in depth for quality fixes: a predicate that slipped past `check_predicate` still cannot read a file."""
    import pandas as pd

    import pipewarden.tools.quality_rules as rules
    from pipewarden.errors import UserError

    monkeypatch.setattr(rules, "predicate_sql",
                        lambda predicate, columns: f"(SELECT count(*) FROM read_text('{secret_file}')) > 0")
    with pytest.raises(UserError, match="disabled by configuration") as err:
        rules.predicate_mask(pd.DataFrame({"a": [1, 2]}), "a > 1")
    assert "hunter2" not in str(err.value)


def test_the_locked_duckdb_connection_stops_a_runaway_query(duckdb_warehouse):  # type: ignore[no-untyped-def]
    import duckdb

    from pipewarden.tools.warehouse import connect_locked

    with connect_locked(f"duckdb:///{duckdb_warehouse}", timeout_s=0.2) as wh:
        with pytest.raises(duckdb.InterruptException):
            wh.execute("SELECT count(*) FROM range(1000000000) a, range(1000000) b")
