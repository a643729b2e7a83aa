"""The rewrite proof on the project's warehouse (DuckDB and PostgreSQL): the same rows as a multiset (EXCEPT ALL
both ways), and cheaper by measures the machine's load cannot move (rows and bytes scanned, the plan's loop joins).
Time is shown, never decides."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pandas as pd
import pytest

from pipewarden.tools.cost import prove_on_warehouse
from pipewarden.tools.warehouse import Warehouse, connect

FACTS = pd.DataFrame({"id": [1, 2, 3, 4, 5, 6], "k": [1, 1, 2, 2, 3, 3],
                      "v": [1.5, 1.5, 2.0, 2.25, 3.0, 0.1]})  # (k=1, v=1.5) twice: one duplicate row
DIMS = pd.DataFrame({"k": [1, 2, 3], "label": ["a", "b", "c"]})


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def wh(request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        con = duckdb.connect()
        w = Warehouse.over_duckdb(con)
        w.write_frame("facts", FACTS)
        w.write_frame("dims", DIMS)
        yield w
        con.close()
        return
    with connect(request.getfixturevalue("postgres_url")) as w:
        for t in ("facts", "dims"):
            w.execute(f"DROP TABLE IF EXISTS {t}")
        w.write_frame("facts", FACTS)
        w.write_frame("dims", DIMS)
        yield w


def test_a_rewrite_that_drops_one_duplicate_row_is_refused(wh: Warehouse) -> None:
    proof = prove_on_warehouse(wh, "SELECT k, v FROM facts", "SELECT DISTINCT k, v FROM facts", runs=1)
    assert not proof.proven
    assert (proof.same.rows_left, proof.same.rows_right) == (6, 5)
    assert (proof.same.only_left, proof.same.only_right) == (1, 0)
    assert "1 rows only in the current result" in proof.failure()


def test_an_equivalent_rewrite_that_scans_half_is_proven(wh: Warehouse) -> None:
    current = ("SELECT a.k, a.v, d.label FROM facts AS a JOIN facts AS b ON b.id = a.id "
               "JOIN dims AS d ON d.k = a.k")
    proof = prove_on_warehouse(wh, current, "SELECT a.k, a.v, d.label FROM facts AS a JOIN dims AS d ON d.k = a.k",
                               runs=2)
    assert proof.same.same and proof.proven
    assert proof.verdict.basis == "rows_scanned"
    assert proof.before.rows_scanned == 15 and proof.after.rows_scanned == 9  # facts twice + dims, then once each
    assert len(proof.after.elapsed_ms) == 2 and "evidence only" in proof.verdict.reason


def test_the_same_scans_are_not_cheaper_however_the_timer_falls(wh: Warehouse) -> None:
    same = prove_on_warehouse(wh, "SELECT k, v FROM facts WHERE v > 0", "SELECT k, v FROM facts WHERE 0 < v", runs=3)
    assert same.same.same and not same.proven and same.verdict.basis == "none"


def test_a_loop_join_replaced_by_a_hash_join_is_proven_by_the_plan() -> None:
    con = duckdb.connect()  # DuckDB hash-joins IS NOT DISTINCT FROM; PostgreSQL loops over both spellings
    w = Warehouse.over_duckdb(con)
    w.write_frame("facts", FACTS)
    w.write_frame("dims", DIMS)
    on = "SELECT a.id, d.label FROM facts AS a LEFT JOIN dims AS d ON "
    proof = prove_on_warehouse(w, on + "d.k = a.k OR (d.k IS NULL AND a.k IS NULL)", on + "d.k IS NOT DISTINCT FROM a.k",
                               runs=1)
    con.close()
    assert proof.proven and proof.verdict.basis == "plan_operators"
    assert proof.before.rows_scanned == proof.after.rows_scanned


@pytest.mark.postgres
def test_the_postgres_proof_leaves_no_table_behind(postgres_url: str) -> None:
    with connect(postgres_url) as w:
        for t in ("facts", "dims"):
            w.execute(f"DROP TABLE IF EXISTS {t}")
        w.write_frame("facts", FACTS)
        prove_on_warehouse(w, "SELECT k FROM facts", "SELECT k FROM facts WHERE k > 1", runs=2)
        names = [r[0] for r in w.execute("SELECT relname FROM pg_class WHERE relpersistence = 't'")]
        assert not [n for n in names if n.startswith("__pw_cost")]


def test_a_join_on_a_function_replaced_by_a_key_is_proven_by_the_plan() -> None:
    con = duckdb.connect()
    w = Warehouse.over_duckdb(con)
    w.write_frame("facts", FACTS)
    w.write_frame("dims", DIMS)
    on = "SELECT a.id, d.label FROM facts AS a LEFT JOIN dims AS d ON d.k = a.k AND "
    proof = prove_on_warehouse(w, on + "ABS(d.k * 1.0 - a.k) < 0.5", on + "d.k = a.k", runs=1)
    con.close()
    assert proof.proven and proof.verdict.basis == "plan_operators" and "not a plain equality 1 -> 0" in proof.verdict.reason
