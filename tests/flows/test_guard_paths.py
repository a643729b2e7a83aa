"""The guard's faster path (issue 10) decides exactly as the path before it: the same accepted rows (values and
dtypes), the same quarantined rows with the same reasons, the same events and load status.

"Before" is the guard with each step opening and closing its own warehouse connection, the contract's YAML parsed
on every read, GX fingerprinting every batch, the landed batch read back from its file, the rows checked by GX in
pandas, checked again in pandas by the quality stage and the accepted rows read back from the warehouse; "after" is
the guard as it runs now (one connection per guard, the parsed contract reused, no fingerprint, and on a DuckDB
warehouse the rows as they landed checked in one DuckDB pass where they are written, the quality stage reusing
validate's verdicts, the accepted rows handed back). Both guard the same faulty batch in the same home, before
first: the second run replaces the first's rows, so each is read right after its own run. Every event either run
emits is compared whole (but for its time), not only its id: the store keeps the first of two events with one id.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipewarden.errors import BatchHalted
from pipewarden.evals.flights_data import source_dir
from pipewarden.flows.data import inject_duplicates, inject_nulls, inject_out_of_range
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.conftest import copy_project

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _old_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The guard as it ran before issue 10's changes to its path."""
    from great_expectations.execution_engine import pandas_execution_engine

    import pipewarden.flows.guard as guard_module
    import pipewarden.policies.contract as contract_module
    import pipewarden.tools.warehouse as warehouse
    from pipewarden.tools.checks import _gx_batch_definition

    _gx_batch_definition()  # sets GX's threshold to 0 once per process; set it back for this run
    land = guard_module._land
    with monkeypatch.context() as m:
        m.setattr(warehouse, "one_connection", lambda url=None: contextlib.nullcontext())
        m.setattr(contract_module, "_parse_contract", contract_module._parse_contract.__wrapped__)
        m.setattr(pandas_execution_engine, "HASH_THRESHOLD", 1e9)
        # no rows handed back from landing: read back, checked by GX in memory, checked again, read back
        m.setattr(guard_module, "_land", lambda *a, **k: (land(*a, **k)[0], None))
        yield


def _guard(data: pd.DataFrame, dataset: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Guard `data`; what was decided, read right after (accepted rows, quarantine, status, stored event ids), every
    event emitted (whole, but for its time) and which validation ran ('duckdb' or 'memory')."""
    import pipewarden.flows.quality_checks as quality_module
    import pipewarden.flows.validate as validate_module
    from pipewarden.flows.guard import guard_batch
    from pipewarden.flows.ingest import connect

    emitted: list[dict[str, Any]] = []
    engines: list[str] = []

    def record(event: Any, **kwargs: Any) -> Any:
        emitted.append(event.model_dump(mode="json", exclude={"occurred"}))
        return emit(event, **kwargs)

    def spy(fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            outcome = fn(*args, **kwargs)
            if outcome is not None:
                engines.append(outcome.engine)
            return outcome
        return wrapped

    emit = validate_module.emit
    with monkeypatch.context() as m:
        m.setattr(validate_module, "emit", record)
        m.setattr(quality_module, "emit", record)
        m.setattr(validate_module, "validate", spy(validate_module.validate))
        m.setattr(validate_module, "validate_rows", spy(validate_module.validate_rows))
        try:
            result = guard_batch(data, dataset)
        except BatchHalted as halt:
            result = halt.result
    with connect() as wh:
        quarantine = wh.execute("SELECT row_number, reason, row_json FROM quarantine WHERE load_id = ? "
                                "ORDER BY row_number", [result.load_id])
        status = wh.execute("SELECT status FROM meta_loads WHERE load_id = ?", [result.load_id])
    return {"result": result.model_dump(exclude={"checks"}), "checks": result.checks,
            "accepted": result.accepted.reset_index(drop=True), "quarantine": [tuple(r) for r in quarantine],
            "status": status, "events": sorted(e["id"] for e in StateStore().list_events()), "emitted": emitted,
            "engines": engines}


def _same_decisions(data: pd.DataFrame, dataset: str, monkeypatch: pytest.MonkeyPatch, *, after: str = "duckdb",
                    keep_accepted: bool = False) -> dict[str, Any]:
    """Guard `data` the old way, then as now (`after`: the validation the new run must take); both decide alike."""
    with _old_path(monkeypatch):
        old = _guard(data, dataset, monkeypatch)
    new = _guard(data, dataset, monkeypatch)
    assert old.pop("engines") == ["memory"] and new.pop("engines") == [after]  # each took the path it should
    accepted = new.pop("accepted")
    pd.testing.assert_frame_equal(accepted, old.pop("accepted"))
    assert new == old
    return {**new, "accepted": accepted} if keep_accepted else new


def test_orders_export_with_faults_gets_the_same_rows_and_reasons(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_project(REPO / "examples" / "orders", tmp_path / "orders")
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(project))
    monkeypatch.syspath_prepend(str(project))  # the example's own export generator
    monkeypatch.delitem(sys.modules, "tools", raising=False)
    monkeypatch.delitem(sys.modules, "tools.exports", raising=False)
    get_settings.cache_clear()
    from tools.exports import export  # type: ignore[import-not-found]

    batch = export(3, rows=5000)
    batch = inject_out_of_range(batch, "amount", 0.01, value=-5.0, seed=1)
    batch = inject_nulls(batch, "customer_id", 0.01, seed=2)
    batch.loc[batch.index[::400], "status"] = "lost"
    batch = inject_duplicates(batch, 0.005, seed=3)  # repeated order ids
    got = _same_decisions(batch, "orders", monkeypatch)
    assert got["result"]["status"] == "accepted" and got["quarantine"]
    reasons = " ".join(r[1] for r in got["quarantine"])
    assert "amount" in reasons and "customer_id" in reasons and "status" in reasons


def test_a_flights_month_with_faults_gets_the_same_rows_and_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    month = flights[flights["month"] == 2].reset_index(drop=True)
    month = inject_out_of_range(month, "dep_delay", 0.01, value=-9999, seed=4)
    month = inject_nulls(month, "carrier", 0.005, seed=5)
    got = _same_decisions(month, "flights", monkeypatch)
    assert got["quarantine"] and got["result"]["rows_quarantined"] == len(got["quarantine"])
    assert any(reason.startswith("dep_delay") for _, reason, _ in got["quarantine"])


def test_a_batch_over_its_threshold_halts_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    month = inject_out_of_range(flights[flights["month"] == 3].reset_index(drop=True), "dep_delay", 0.4,
                                value=-9999, seed=6)
    got = _same_decisions(month, "flights", monkeypatch)
    assert got["result"]["status"] == "halted" and got["status"] == [("halted_checks",)]
    assert got["result"]["rows_accepted"] == 0


# --------------------------------------------------------------------------- more faults, rules and shapes
@pytest.fixture(scope="module")
def flights_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, pd.DataFrame]]:
    from tests.quality_history import build_history

    folder = tmp_path_factory.mktemp("guard-paths-history")
    return folder, build_history(folder)


@pytest.mark.parametrize("fault", ["duplicates", "late", "null_spike"])
def test_against_a_history_the_quality_stage_finds_the_same_faults(fault: str, flights_history: Any, pw_home: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.flows import data as D
    from tests.quality_history import use_history

    folder, samples = flights_history
    use_history(folder, pw_home)
    month = samples[3]
    batch = {"duplicates": lambda: D.inject_duplicates(month, 0.03),  # halts the quality stage
             "late": lambda: D.inject_late(month, 7),  # a freshness warning
             "null_spike": lambda: inject_nulls(month, "dep_delay", 0.3, seed=7)}[fault]()
    got = _same_decisions(batch, "flights", monkeypatch)
    kinds = {e["kind"] for e in got["emitted"]}
    assert "quality_anomaly" in kinds  # the detectors ran against the history and found the fault, on both paths
    if fault == "duplicates":
        assert got["result"]["halted_at"] == "quality" and got["status"] == [("halted_quality",)]


def test_an_active_quarantine_rule_takes_the_same_rows_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.flows.ingest import default_load_id
    from pipewarden.models import Quarantine

    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    month = inject_out_of_range(flights[flights["month"] == 4].head(3000).reset_index(drop=True), "dep_delay", 0.01,
                                value=-9999, seed=8)
    StateStore().activate_new_version("quarantine:flights", Quarantine(
        dataset="flights", load_id=default_load_id("flights", month), predicate="origin = 'JFK' AND distance > 2000",
        reason="long JFK legs held for review").model_dump(mode="json"), "00000000-0000-0000-0000-000000000003", "test")
    got = _same_decisions(month, "flights", monkeypatch)
    reasons = [r[1] for r in got["quarantine"]]
    assert any(r.startswith("quarantine:flights v1: long JFK legs") for r in reasons)
    assert any(r.startswith("dep_delay") for r in reasons)


@pytest.mark.parametrize("shape", ["categorical", "dates"])
def test_a_batch_the_one_pass_does_not_take_is_checked_in_memory_on_both_runs(shape: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    month = inject_nulls(flights[flights["month"] == 5].head(2000).reset_index(drop=True), "carrier", 0.01, seed=9)
    if shape == "categorical":  # its Parquet file does not keep the Arrow type: nothing handed back from landing
        month["carrier"] = month["carrier"].astype("category")
    else:  # an extra column of dates (noted, kept out): the rows come back, the one pass does not take them
        month["flown_on"] = [dt.date(2013, 5, 1)] * len(month)
    got = _same_decisions(month, "flights", monkeypatch, after="memory")
    assert got["quarantine"] and got["result"]["status"] == "accepted"


def test_the_rows_handed_back_are_in_the_warehouse_connections_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipewarden.tools.warehouse as warehouse

    opened = warehouse._open_duckdb

    def berlin(url: str, read_only: bool, wait_s: float = 0.0) -> Any:
        wh = opened(url, read_only, wait_s)
        wh.duckdb.execute("SET TimeZone = 'Europe/Berlin'")  # a warehouse session that is not in UTC
        return wh

    monkeypatch.setattr(warehouse, "_open_duckdb", berlin)
    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    got = _same_decisions(flights[flights["month"] == 6].head(1000).reset_index(drop=True), "flights", monkeypatch,
                          keep_accepted=True)
    assert str(got["accepted"]["time_hour"].dtype) == "datetime64[us, Europe/Berlin]"


def test_a_drifted_batch_halts_with_the_same_schema_drift_event(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.flows.data import inject_drift

    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    month = inject_drift(flights[flights["month"] == 7].head(1500).reset_index(drop=True),
                         renames={"dep_delay": "departureDelay"}, to_string=["flight"])
    got = _same_decisions(month, "flights", monkeypatch)
    assert got["result"]["halted_at"] == "validate" and got["status"] == [("halted_schema",)]
    assert [e["kind"] for e in got["emitted"]] == ["schema_drift"]
