"""The guard's faster path (issue 10) decides exactly as the path before it: the same accepted rows (values and
dtypes), the same quarantined rows with the same reasons, the same events and load status.

"Before" is the guard with each step opening and closing its own warehouse connection, the contract's YAML parsed
on every read and GX fingerprinting every batch; "after" is the guard as it runs now (one connection per guard,
the parsed contract reused, no fingerprint). Both guard the same faulty batch in the same home, before first: the
second run replaces the first's rows, so each is read right after its own run.
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

    import pipewarden.policies.contract as contract_module
    import pipewarden.tools.warehouse as warehouse
    from pipewarden.tools.checks import _gx_batch_definition

    _gx_batch_definition()  # sets GX's threshold to 0 once per process; set it back for this run
    with monkeypatch.context() as m:
        m.setattr(warehouse, "one_connection", lambda url=None: contextlib.nullcontext())
        m.setattr(contract_module, "_parse_contract", contract_module._parse_contract.__wrapped__)
        m.setattr(pandas_execution_engine, "HASH_THRESHOLD", 1e9)
        yield


def _guard(data: pd.DataFrame, dataset: str) -> dict[str, Any]:
    """Guard `data`; what was decided, read right after (accepted rows sorted by `key`, quarantine, events)."""
    from pipewarden.flows.guard import guard_batch
    from pipewarden.flows.ingest import connect

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
            "status": status, "events": sorted(e["id"] for e in StateStore().list_events())}


def _same_decisions(data: pd.DataFrame, dataset: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    with _old_path(monkeypatch):
        before = _guard(data, dataset)
    after = _guard(data, dataset)
    pd.testing.assert_frame_equal(after.pop("accepted"), before.pop("accepted"))
    assert after == before
    return after


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
