"""The SQL guardrails refuse anything but one read-only query over allowed tables."""

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
        ("select * from secrets", "'secrets' is not one the query may read"),
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
