"""Downstream SQL patches for a dropped column, proven old-vs-new on the batch in DuckDB."""

from __future__ import annotations

import difflib
from pathlib import Path

import pandas as pd
import pytest

from pipewarden.evals.flights_data import month_batch
from pipewarden.policies.contract import load_contract
from pipewarden.tools.contracts import contract_from_dict, contract_without
from pipewarden.tools.lineage import SqlModel, load_models
from pipewarden.tools.mapping import conform_to_contract
from pipewarden.tools.sql_patch import (
    PatchRefused,
    draft_drop_patches,
    patch_dropped_columns,
    prove_drop,
    prove_patches,
)


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return month_batch(2).sample(2000, random_state=4).reset_index(drop=True)


def landed_without(batch: pd.DataFrame, column: str) -> pd.DataFrame:
    """The batch as it would land under the loosened contract (no `column`)."""
    contract = contract_from_dict(contract_without(load_contract("flights"), [column]), where="test")
    rows = conform_to_contract(batch.drop(columns=[column]), contract)[contract.names]
    rows["_load_id"] = "L"
    return rows


def test_a_drop_patch_changes_only_the_line_that_reads_the_column() -> None:
    (patch,) = draft_drop_patches("raw_flights", {"dep_delay": "float"})
    assert patch.model == "stg_flights" and patch.base_sql == load_models()["stg_flights"].sql
    changed = [line for line in difflib.unified_diff(patch.base_sql.splitlines(), patch.sql.splitlines(), n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-        CAST(f.dep_delay AS DOUBLE) AS dep_delay,",
                       "+        CAST(CAST(NULL AS DOUBLE) AS DOUBLE) AS dep_delay,"]
    assert "-- stg_flights: one typed" in patch.sql  # comments and layout are kept


def test_old_and_new_sql_agree_on_the_batch_and_differ_only_downstream_of_the_column(batch) -> None:
    rows = landed_without(batch, "dep_delay")
    patches = draft_drop_patches("raw_flights", {"dep_delay": "float"})
    null_run, probe_run = prove_drop("raw_flights", {"dep_delay": "float"}, rows, patches)
    assert null_run.ok and probe_run.ok
    by_model = {m.model: m for m in probe_run.models}
    assert by_model["stg_flights"].patched and by_model["stg_flights"].rows_old == by_model["stg_flights"].rows_new > 0
    assert by_model["route_daily"].differing_columns == ["avg_dep_delay"]
    assert by_model["flights_weather"].differing_columns == []
    assert all(m.same_schema and not m.differing_columns for m in null_run.models)


def test_a_patch_that_changes_which_rows_a_model_returns_fails_its_proof(batch) -> None:
    rows = landed_without(batch, "arr_delay")  # stg_flights keeps only rows with an arrival delay
    patches = draft_drop_patches("raw_flights", {"arr_delay": "float"})
    _, probe_run = prove_drop("raw_flights", {"arr_delay": "float"}, rows, patches)
    stg = next(m for m in probe_run.models if m.model == "stg_flights")
    assert not probe_run.ok and not stg.rows_equal and stg.rows_new == 0 < stg.rows_old


def test_a_column_read_in_a_filter_or_join_is_refused() -> None:
    model = SqlModel(name="late", path="late.sql",
                     sql="SELECT f.flight, f.dep_delay FROM raw_flights AS f WHERE f.dep_delay > 15")
    with pytest.raises(PatchRefused, match="in a WHERE clause"):
        patch_dropped_columns(model, "raw_flights", {"dep_delay": "float"})
    joined = SqlModel(name="j", path="j.sql",
                      sql="SELECT p.seats FROM raw_flights AS f JOIN raw_planes AS p ON p.tailnum = f.tailnum")
    with pytest.raises(PatchRefused, match="in a JOIN clause"):
        patch_dropped_columns(joined, "raw_flights", {"tailnum": "string"})


def test_a_broken_patch_is_caught_by_the_proof(batch) -> None:
    (patch,) = draft_drop_patches("raw_flights", {"dep_delay": "float"})
    broken = patch.model_copy(update={"sql": patch.sql.replace("AS dep_delay,", "AS dep_delay_x,")})
    proof = prove_patches([broken], {"raw_flights": landed_without(batch, "dep_delay").assign(dep_delay=None)},
                          {"raw_flights": landed_without(batch, "dep_delay")})
    stg = next(m for m in proof.models if m.model == "stg_flights")
    assert not proof.ok and stg.error and "new SQL" in stg.error


def test_the_column_lineage_tool_names_readers_and_downstream_columns() -> None:
    from pipewarden.tools.registry import get_tool

    out = get_tool("column_lineage").call({"table": "raw_flights", "column": "dep_delay"})
    assert out.models_reading[0] == "stg_flights"
    assert {(c.model, c.column) for c in out.downstream} >= {("stg_flights", "dep_delay"),
                                                            ("route_daily", "avg_dep_delay")}


def test_a_projects_own_models_are_proven_with_its_other_raw_tables_and_keep_their_column_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The orders example: order_facts selects o.amount (a bare projection) and joins raw_customers. Dropping amount
    must keep the output column's name (daily_revenue sums it) and prove against the project's raw_customers."""
    import sys

    from pipewarden import guard_batch
    from pipewarden.settings import get_settings
    from tests.conftest import REPO_ROOT, copy_project

    project = copy_project(REPO_ROOT / "examples" / "orders", tmp_path / "shop")
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(project))
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delitem(sys.modules, "tools", raising=False)
    get_settings.cache_clear()
    from tools.exports import customers, export  # the example's own package

    guard_batch(customers(), "customers")
    batch = export(2, rows=300).drop(columns=["amount"])
    [patch] = draft_drop_patches("raw_orders", {"amount": "float"})
    assert patch.model == "order_facts" and "CAST(NULL AS DOUBLE) AS amount" in patch.sql
    null_run, probe_run = prove_drop("raw_orders", {"amount": "float"}, batch.assign(_load_id="l2"), [patch])
    assert null_run.ok and probe_run.ok, (null_run.notes(), probe_run.notes())
    assert null_run.reference_tables == "warehouse"
    assert {m.model for m in null_run.models} == {"order_facts", "daily_revenue"}
