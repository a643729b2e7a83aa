"""tools.cost on small in-memory DuckDB tables: the profile, each diagnosis, each rule rewrite, and the proof
(same rows and cheaper, or why not). Scan counts are exact, so the assertions use them, not time."""

from __future__ import annotations

import duckdb
import pytest

from pipewarden.tools.cost import (
    compare_cost,
    diagnose,
    measure,
    prove,
    rule_rewrites,
    same_rows,
    table_widths,
    tables_read,
)

WIDE = 14


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("CREATE TABLE facts AS SELECT i AS id, i % 50 AS k, i * 1.5 AS v, DATE '2013-01-01' + CAST(i % 365 AS INTEGER) AS d, "
              + ", ".join(f"i + {n} AS c{n}" for n in range(WIDE - 4)) + " FROM range(20000) t(i)")
    c.execute("CREATE TABLE dims AS SELECT i AS k, 'name ' || i AS name FROM range(50) t(i)")
    return c


def kinds(findings) -> list[str]:
    return [f.kind for f in findings]


def test_profile_reads_scans_joins_and_bytes(con) -> None:
    m = measure(con, "SELECT f.k, d.name, SUM(f.v) AS v FROM facts AS f JOIN dims AS d ON d.k = f.k GROUP BY ALL")
    assert m.rows_out == 50 and m.rows_scanned == 20050
    assert {s.table: s.rows_scanned for s in m.profile.scans} == {"facts": 20000, "dims": 50}
    assert sorted(next(s for s in m.profile.scans if s.table == "facts").columns) == ["k", "v"]
    assert [j.operator for j in m.profile.joins] == ["HASH_JOIN"]
    wide = measure(con, "SELECT DISTINCT * FROM facts")
    assert wide.bytes_scanned > 3 * m.bytes_scanned  # every column of the wide table, not two


def test_repeated_scan_is_seen_in_the_plan_and_the_sql(con) -> None:
    sql = ("WITH a AS (SELECT k, SUM(v) AS v FROM facts GROUP BY k), b AS (SELECT k, MAX(d) AS d FROM facts GROUP BY k) "
           "SELECT a.k, a.v, b.d FROM a JOIN b ON a.k = b.k")
    m = measure(con, sql)
    found = diagnose(sql, m.profile)
    assert kinds(found) == ["repeated_scan"] and found[0].seen_in == "both" and found[0].table == "facts"
    assert m.rows_scanned == 40000


def test_cartesian_join_in_the_plan_and_the_null_safe_rule_fixes_it(con) -> None:
    sql = "SELECT f.id, d.name FROM facts AS f LEFT JOIN dims AS d ON d.k = f.k OR (d.k IS NULL AND f.k IS NULL)"
    m = measure(con, sql, into="__pw_cost_current")
    found = diagnose(sql, m.profile)
    assert kinds(found)[0] == "cartesian_join" and found[0].seen_in == "both"
    assert "20000 x 50" in found[0].detail
    (rewrite,) = rule_rewrites(sql)
    assert rewrite.source == "rule:null_safe_join" and "IS NOT DISTINCT FROM" in rewrite.sql
    proof = prove(con, sql, rewrite.sql, runs=3, before=m)
    assert proof.same.same and proof.same.rows_left == 20000
    after = measure(con, rewrite.sql)
    assert [j.operator for j in after.profile.joins] == ["HASH_JOIN"]


def test_cross_join_rule_moves_the_equality_into_the_join(con) -> None:
    sql = "SELECT f.id, d.name FROM facts AS f CROSS JOIN dims AS d WHERE d.k = f.k AND f.v > 10"
    assert kinds(diagnose(sql)) == ["cartesian_join"]
    (rewrite,) = rule_rewrites(sql)
    assert rewrite.source == "rule:cross_join_to_inner"
    assert "CROSS" not in rewrite.sql.upper() and "ON d.k = f.k" in rewrite.sql
    measure(con, sql, into="a")
    measure(con, rewrite.sql, into="b")
    assert same_rows(con, "a", "b").same


def test_select_star_over_a_wide_table_and_its_rule(con) -> None:
    sql = "SELECT s.k, COUNT(*) AS n FROM (SELECT DISTINCT * FROM facts) AS s GROUP BY s.k"
    m = measure(con, sql, into="__pw_cost_current")
    found = diagnose(sql, m.profile, table_widths=table_widths(con))
    assert kinds(found) == ["select_star"] and f"({WIDE} columns)" in found[0].detail
    (rewrite,) = rule_rewrites(sql)
    assert rewrite.source == "rule:distinct_star_to_table" and "DISTINCT" not in rewrite.sql.upper()
    proof = prove(con, sql, rewrite.sql, runs=3, before=m)
    assert proof.proven and proof.after.bytes_scanned < 0.5 * proof.before.bytes_scanned


def test_a_function_on_a_filtered_column_is_non_sargable(con) -> None:
    sql = "SELECT id FROM facts WHERE YEAR(d) = 2013 AND k = 3"
    found = diagnose(sql, measure(con, sql).profile)
    assert kinds(found) == ["non_sargable"] and "YEAR(d) = 2013" in found[0].detail
    assert diagnose("SELECT id FROM facts WHERE d >= DATE '2013-01-01' AND k = 3") == []


def test_lost_filter_against_the_known_good_version() -> None:
    good = "SELECT id FROM facts AS f WHERE f.k = 3 AND f.v > 10"
    found = diagnose("SELECT id FROM facts AS f WHERE f.v > 10", known_good_sql=good)
    assert kinds(found) == ["lost_filter"] and "f.k = 3" in found[0].detail
    assert diagnose("SELECT id FROM facts WHERE v > 10 AND k = 3", known_good_sql=good) == []  # only reordered


def test_a_rewrite_with_other_rows_is_never_proven(con) -> None:
    current = "SELECT id, k FROM facts"
    proof = prove(con, current, "SELECT id, k FROM facts WHERE k <> 7", runs=1)
    assert not proof.proven and proof.same.only_left == 400 and proof.same.only_right == 0
    assert "400 rows only in the current result" in proof.failure()
    renamed = prove(con, current, "SELECT id, k AS key FROM facts", runs=1)
    assert not renamed.proven and "different columns" in renamed.failure()


def test_a_rewrite_that_is_not_cheaper_is_not_proven(con) -> None:
    current = "SELECT k, SUM(v) AS v FROM facts GROUP BY k"
    proof = prove(con, current, "SELECT k, SUM(v) AS v FROM facts GROUP BY ALL", runs=3)
    assert proof.same.same and not proof.proven and "not 20% cheaper" in proof.failure()


def test_cost_comparison_prefers_exact_scan_counts(con) -> None:
    one = measure(con, "SELECT k FROM facts")
    two = measure(con, "SELECT k FROM facts UNION ALL SELECT k FROM facts WHERE false")
    verdict = compare_cost(two.model_copy(update={"median_ms": 10.0}), one.model_copy(update={"median_ms": 10.0}))
    assert not verdict.cheaper  # the same scans and time: not cheaper
    double = measure(con, "SELECT a.k FROM facts AS a JOIN facts AS b ON a.id = b.id")
    verdict = compare_cost(double.model_copy(update={"median_ms": 10.0}), one.model_copy(update={"median_ms": 11.0}))
    assert verdict.cheaper and verdict.basis == "rows_scanned" and verdict.ratio == pytest.approx(0.5)


def test_time_is_evidence_never_the_deciding_measure(con) -> None:
    one = measure(con, "SELECT k FROM facts")
    double = measure(con, "SELECT a.k FROM facts AS a JOIN facts AS b ON a.id = b.id")
    # twice as slow by 200 ms on this machine: still half the rows scanned, and the reason shows the time
    slower = compare_cost(double.model_copy(update={"median_ms": 200.0}), one.model_copy(update={"median_ms": 400.0}))
    assert slower.cheaper and slower.basis == "rows_scanned"
    assert "200.0 -> 400.0 ms" in slower.reason and "evidence only, slower on this machine" in slower.reason
    # ten times faster but the same scans: time alone proves nothing
    same = compare_cost(one.model_copy(update={"median_ms": 100.0}), one.model_copy(update={"median_ms": 10.0}))
    assert not same.cheaper and same.basis == "none"


def test_tables_read_skips_ctes() -> None:
    assert tables_read("WITH x AS (SELECT * FROM facts) SELECT * FROM x JOIN dims USING (k)") == {"facts", "dims"}
