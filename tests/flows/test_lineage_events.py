"""OpenLineage run events from the guard and `build`, sent to a local HTTP receiver that checks every event
(tests/flows/openlineage_receiver.py), to a file, or nowhere (the default)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pipewarden.errors import BatchHalted, ConfigError
from pipewarden.flows.lineage_events import PRODUCER, file_naming, lineage_settings, warehouse_naming
from pipewarden.settings import get_settings
from tests.flows.openlineage_receiver import InvalidEvent, receiver, validate_event
from tests.flows.orders_project import make_orders_project, orders, renamed_shape


@pytest.fixture(autouse=True)
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> Path:
    monkeypatch.setenv("PIPEWARDEN_CHECK_ENGINE", "pandas")  # the same rules as GX, without its start-up cost
    return make_orders_project(tmp_path / "shop", monkeypatch)


def _send_to(monkeypatch: pytest.MonkeyPatch, url: str, **env: str) -> None:
    monkeypatch.setenv("PIPEWARDEN_OPENLINEAGE_TRANSPORT", "http")
    monkeypatch.setenv("PIPEWARDEN_OPENLINEAGE_URL", url)
    for k, v in env.items():
        monkeypatch.setenv(f"PIPEWARDEN_OPENLINEAGE_{k}", v)
    get_settings.cache_clear()


def _facet(dataset: dict[str, Any], kind: str, name: str) -> Any:
    return dataset.get(kind, {}).get(name)


# --------------------------------------------------------------------------- the guard
def test_a_clean_batch_sends_start_then_complete_with_schema_and_passing_assertions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden import guard_batch

    with receiver() as got:
        _send_to(monkeypatch, got.url, API_KEY="ol-secret")
        result = guard_batch(orders(20), "orders")
    for event in got.events:
        validate_event(event)
    assert got.states("guard.orders") == ["START", "COMPLETE"]
    assert set(got.paths) == {"/api/v1/lineage"} and set(got.auth) == {"Bearer ol-secret"}
    start, done = got.of("guard.orders", "START"), got.of("guard.orders", "COMPLETE")
    assert start["run"]["runId"] == done["run"]["runId"] and start["job"]["namespace"] == "shop"
    assert done["producer"] == PRODUCER
    [batch] = done["inputs"]
    assert batch["namespace"] == "file" and batch["name"].endswith(".parquet")
    assert [f["name"] for f in batch["facets"]["schema"]["fields"]] == ["order_id", "customer", "amount",
                                                                        "ordered_at"]
    assertions = _facet(batch, "inputFacets", "dataQualityAssertions")["assertions"]
    assert assertions and all(a["success"] for a in assertions)
    assert {("not_null", "order_id"), ("between", "amount"), ("length", "customer")} <= {
        (a["assertion"], a["column"]) for a in assertions}
    [raw] = done["outputs"]
    assert raw["namespace"].startswith("duckdb://") and raw["name"] == "main.raw_orders"
    assert {f["name"]: f["type"] for f in raw["facets"]["schema"]["fields"]}["amount"] == "float"
    assert _facet(raw, "outputFacets", "outputStatistics")["rowCount"] == result.rows_accepted == 20
    assert "dataQualityAssertions" not in start["inputs"][0].get("inputFacets", {})  # judged only at the end


def test_a_failing_row_rule_is_a_failed_assertion(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden import guard_batch

    df = orders(20)
    df.loc[3, "amount"] = -5.0  # below the contract's min 0: quarantined, the batch still passes (20% allowed)
    with receiver() as got:
        _send_to(monkeypatch, got.url)
        guard_batch(df, "orders")
    done = got.of("guard.orders", "COMPLETE")
    validate_event(done)
    by = {(a["assertion"], a["column"]): a["success"]
          for a in done["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]}
    assert by[("between", "amount")] is False and by[("not_null", "amount")] is True


def test_a_halted_batch_fails_its_run_with_the_reason_and_the_missing_column(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden import guard_batch

    with receiver() as got:
        _send_to(monkeypatch, got.url)
        with pytest.raises(BatchHalted):
            guard_batch(renamed_shape(orders(30)), "orders")  # amount arrives as total
    for event in got.events:
        validate_event(event)
    assert got.states("guard.orders") == ["START", "FAIL"]
    fail = got.of("guard.orders", "FAIL")
    assert fail["run"]["facets"]["errorMessage"]["message"].startswith("halted at validate:")
    assertions = fail["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert [(a["assertion"], a["column"]) for a in assertions if not a["success"]] == [("exists", "amount")]
    assert [a["assertion"] for a in assertions if a["column"] == "amount"] == ["exists"]  # its rules did not run
    assert "outputStatistics" not in fail["outputs"][0].get("outputFacets", {})


def test_off_by_default_and_a_dead_receiver_never_breaks_the_guard(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from pipewarden import guard_batch

    with receiver() as got:
        guard_batch(orders(10), "orders")  # nothing configured
        assert got.events == []
        url = got.url
    _send_to(monkeypatch, url, TIMEOUT_S="1")  # the receiver is gone now
    with caplog.at_level(logging.WARNING, logger="pipewarden.flows.lineage_events"):
        result = guard_batch(orders(12), "orders")
    assert result.status == "accepted"
    assert "could not send the" in caplog.text and "guard.orders" in caplog.text


def test_the_file_transport_appends_json_lines_from_the_project_file(shop: Path) -> None:
    (shop / "pipewarden.toml").write_text((shop / "pipewarden.toml").read_text() +
                                          '\n[openlineage]\ntransport = "file"\npath = "lineage/events.jsonl"\n'
                                          'namespace = "shop-prod"\n')
    get_settings.cache_clear()
    from pipewarden import guard_batch

    guard_batch(orders(10), "orders")
    lines = (shop / "lineage" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        validate_event(event)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {e["job"]["namespace"] for e in events} == {"shop-prod"}


def test_a_transport_without_its_address_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEWARDEN_OPENLINEAGE_TRANSPORT", "http")
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="needs a url"):
        lineage_settings()
    monkeypatch.setenv("PIPEWARDEN_OPENLINEAGE_TRANSPORT", "kafka")
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="transport"):
        lineage_settings()


def test_the_receiver_check_refuses_what_the_spec_refuses() -> None:
    good = {"eventType": "START", "eventTime": "2026-01-02T03:04:05+00:00", "producer": PRODUCER,
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": "01890f3c-8c2c-7a54-9a4b-2f0c2f1e5a11"}, "job": {"namespace": "n", "name": "j"}}
    validate_event(good)
    for bad, problem in [
        ({**good, "eventType": "STARTED"}, "is not one of"),
        ({**good, "run": {"runId": "42"}}, "Run"),
        ({**good, "eventTime": "yesterday"}, "RunEvent"),
        ({**good, "jobb": {}}, "no field"),
        ({k: v for k, v in good.items() if k != "job"}, "needs 'job'"),
        ({**good, "run": {"runId": good["run"]["runId"], "facets": {"mystery": {}}}}, "is not one of"),
    ]:
        with pytest.raises(InvalidEvent, match=problem):
            validate_event(bad)


# --------------------------------------------------------------------------- build
MODELS = {
    "stg_orders": "SELECT order_id, customer, amount * 1.2 AS gross FROM raw_orders WHERE amount > 0",
    "by_customer": "SELECT customer, SUM(gross) AS total, COUNT(*) AS n FROM stg_orders GROUP BY customer",
    "broken": "SELECT no_such_column FROM raw_orders",
}


def test_build_sends_a_run_per_model_with_column_lineage_under_the_builds_run(
        shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden import guard_batch
    from pipewarden.flows.build import build_models

    (shop / "models").mkdir()
    for name, sql in MODELS.items():
        (shop / "models" / f"{name}.sql").write_text(sql + "\n")
    guard_batch(orders(10), "orders")  # raw_orders, before lineage is on
    with receiver() as got:
        _send_to(monkeypatch, got.url)
        report = build_models()
    for event in got.events:
        validate_event(event)
    assert {m.model: m.status for m in report.models} == {"stg_orders": "ok", "by_customer": "ok",
                                                          "broken": "failed"}
    assert got.states("build") == ["START", "FAIL"]
    assert got.states("build.stg_orders") == ["START", "COMPLETE"]
    assert got.states("build.broken") == ["START", "FAIL"]
    parent = got.of("build", "START")["run"]["runId"]
    done = got.of("build.by_customer", "COMPLETE")
    assert done["run"]["facets"]["parent"]["run"]["runId"] == parent
    assert [i["name"] for i in done["inputs"]] == ["main.stg_orders"]
    [out] = done["outputs"]
    rows = {m.model: m.rows_out for m in report.models}["by_customer"]
    assert out["name"] == "main.by_customer" and out["outputFacets"]["outputStatistics"]["rowCount"] == rows > 0
    lineage = out["facets"]["columnLineage"]["fields"]
    assert [(f["namespace"], f["name"], f["field"]) for f in lineage["total"]["inputFields"]] == [
        (out["namespace"], "main.stg_orders", "gross")]
    stg = got.of("build.stg_orders", "COMPLETE")["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert stg["gross"]["inputFields"][0]["field"] == "amount"
    assert got.of("build.stg_orders", "START")["job"]["facets"]["sql"]["query"].startswith("SELECT order_id")
    assert "no_such_column" in got.of("build.broken", "FAIL")["run"]["facets"]["errorMessage"]["message"]


# --------------------------------------------------------------------------- naming
def test_dataset_names_follow_the_naming_conventions(tmp_path: Path) -> None:
    assert warehouse_naming("postgresql+psycopg://u:secret@db.example:6432/shop") == ("postgres://db.example:6432",
                                                                                       "shop.public.")
    ns, prefix = warehouse_naming(f"duckdb:///{tmp_path / 'w.duckdb'}")
    assert ns == f"duckdb://{(tmp_path / 'w.duckdb').resolve()}" and prefix == "main."
    assert file_naming("s3://landing/orders/a.parquet") == ("s3://landing", "orders/a.parquet")
    assert file_naming(str(tmp_path / "a.parquet")) == ("file", str((tmp_path / "a.parquet").resolve()))
