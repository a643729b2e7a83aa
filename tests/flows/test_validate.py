"""Validate: contract checks on a landed batch, quarantine with reasons, halting, idempotent re-runs; emit."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

from pipewarden.evals.flights_data import source_dir
from pipewarden.events import CheckFailed, RunFailed, SchemaDrift, parse_event
from pipewarden.flows.data import inject_drift, write_batch
from pipewarden.flows.emit import emit, mirror_to_prefect
from pipewarden.flows.ingest import Landed, ingest, list_loads
from pipewarden.flows.validate import validate, write_unchecked
from pipewarden.flows.warehouse import connect
from pipewarden.models import ColumnMapping
from pipewarden.settings import get_settings
from pipewarden.store import StateStore

DRIFT_MAPPING = ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={"flight": "integer"})


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    return flights[flights["month"] == 1].reset_index(drop=True)


def _land(df: pd.DataFrame, tmp_path: Path, name: str = "batch.parquet") -> Landed:
    return ingest("flights", write_batch(df, tmp_path / name))


def _q(sql: str, params: list[object] | None = None) -> list[tuple]:
    with connect(read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _events() -> list[dict[str, object]]:
    return StateStore().list_events()


def _status(load_id: str) -> str:
    return next(r["status"] for r in list_loads("flights") if r["load_id"] == load_id)


# --------------------------------------------------------------------------- a clean month
def test_clean_january_passes_and_quarantines_cancelled_flights_with_reasons(january: pd.DataFrame,
                                                                             tmp_path: Path) -> None:
    landed = _land(january, tmp_path)
    out = validate(landed)

    cancelled = int(january["arr_delay"].isna().sum())
    assert cancelled == 606
    assert not out.halted and out.check_result.passed
    assert out.rows_quarantined == cancelled and out.rows_accepted == len(january) - cancelled
    assert out.check_result.failed_checks == ["arr_delay: not null (606 rows)"]
    assert out.event_ids == [] and _events() == []
    reasons = _q("SELECT DISTINCT reason FROM quarantine WHERE load_id = ?", [landed.load_id])
    assert reasons == [("arr_delay: not null",)]
    rows = _q("SELECT row_number, row_json FROM quarantine ORDER BY row_number LIMIT 1")
    first_bad = int(january.index[january["arr_delay"].isna()][0])
    assert rows[0][0] == first_bad and '"arr_delay":null' in rows[0][1]
    assert _q("SELECT count(*) FROM raw_flights WHERE _load_id = ?", [landed.load_id]) == [(26398,)]
    assert _q("SELECT count(*) FROM raw_flights WHERE arr_delay IS NULL") == [(0,)]
    assert _status(landed.load_id) == "accepted"


def test_revalidating_a_load_replaces_its_rows_instead_of_duplicating_them(january: pd.DataFrame,
                                                                           tmp_path: Path) -> None:
    batch = january.head(2000)
    landed = _land(batch, tmp_path)
    first = validate(landed)
    second = validate(landed)
    assert (second.rows_accepted, second.rows_quarantined) == (first.rows_accepted, first.rows_quarantined)
    assert _q("SELECT count(*) FROM quarantine") == [(first.rows_quarantined,)]
    assert _q("SELECT count(*) FROM raw_flights") == [(first.rows_accepted,)]
    assert first.rows_accepted + first.rows_quarantined == 2000


# --------------------------------------------------------------------------- drift
def test_a_drifted_batch_halts_with_a_schema_drift_event_in_the_outbox(january: pd.DataFrame,
                                                                       tmp_path: Path) -> None:
    drifted = inject_drift(january.head(3000), renames={"dep_delay": "departureDelay"}, to_string=["flight"])
    landed = _land(drifted, tmp_path, "drift.parquet")
    out = validate(landed)

    assert out.halted and out.stage == "validate" and "schema drift" in out.reason
    assert not out.check_result.passed and out.check_result.schema_errors
    stored = _events()
    assert len(stored) == 1 and stored[0]["kind"] == "schema_drift" and stored[0]["status"] == "pending"
    event = parse_event(stored[0]["payload"])
    assert isinstance(event, SchemaDrift) and str(event.id) == out.event_ids[0]
    assert event.batch_path == landed.uri and event.contract_version == "flights@v1"
    assert [c.name for c in event.added] == ["departureDelay"]
    assert [c.name for c in event.dropped] == ["dep_delay"]
    assert [(t.column, t.expected, t.observed) for t in event.retyped] == [("flight", "integer", "string")]
    assert _q("SELECT count(*) FROM information_schema.tables WHERE table_name = 'raw_flights'") == [(0,)]
    assert _status(landed.load_id) == "halted_schema"

    again = validate(landed)
    assert again.event_ids == out.event_ids and len(_events()) == 1, "the same finding is one event"


def test_an_active_mapping_version_heals_the_drifted_batch(january: pd.DataFrame, tmp_path: Path) -> None:
    drifted = inject_drift(january.head(3000), renames={"dep_delay": "departureDelay"}, to_string=["flight"])
    landed = _land(drifted, tmp_path, "drift.parquet")
    assert validate(landed).halted

    StateStore().activate_new_version("mapping:flights", DRIFT_MAPPING.model_dump(mode="json"),
                                      proposal_id=uuid.uuid4(), actor="test")
    healed = validate(landed)
    assert not healed.halted and healed.check_result.passed and healed.mapping_version == 1
    assert healed.rows_accepted + healed.rows_quarantined == 3000
    types = dict(_q("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'raw_flights'"))
    assert types["flight"] == "BIGINT" and types["dep_delay"] == "DOUBLE" and "departureDelay" not in types
    assert _status(landed.load_id) == "accepted"


# --------------------------------------------------------------------------- bad rows
def test_a_batch_where_every_row_is_invalid_halts_with_every_row_quarantined(january: pd.DataFrame,
                                                                             tmp_path: Path) -> None:
    bad = january.head(400).copy()
    bad["origin"] = "XXX"
    landed = _land(bad, tmp_path)
    out = validate(landed)

    assert out.halted and out.failure_rate == 1.0 and out.rows_quarantined == 400 and out.rows_accepted == 0
    assert _q("SELECT count(*) FROM quarantine WHERE reason LIKE '%origin: in {EWR, JFK, LGA} (got ''XXX'')%'") \
        == [(400,)]
    assert _q("SELECT count(*) FROM information_schema.tables WHERE table_name = 'raw_flights'") == [(0,)]
    [stored] = _events()
    event = parse_event(stored["payload"])
    assert isinstance(event, CheckFailed) and event.halted and event.failure_rate == 1.0
    assert event.threshold == 0.10 and event.batch_path == landed.uri
    assert {(f.column, f.failed_rows) for f in event.failed} >= {("origin", 400)}
    assert _status(landed.load_id) == "halted_checks"


def test_over_the_threshold_halts_without_accepting_rows_but_quarantines_the_bad_ones(
    january: pd.DataFrame, tmp_path: Path
) -> None:
    good = _land(january.head(1000), tmp_path, "good.parquet")
    validate(good)
    accepted_before = _q("SELECT count(*) FROM raw_flights")[0][0]

    bad = january.iloc[1000:2000].copy()
    bad.loc[bad.index[:300], "dep_delay"] = 5000.0
    landed = _land(bad, tmp_path, "bad.parquet")
    out = validate(landed)
    assert out.halted and "over the 10.0%" in out.reason
    assert out.rows_accepted == 0
    assert out.rows_quarantined == _q("SELECT count(*) FROM quarantine WHERE load_id = ?", [landed.load_id])[0][0]
    assert out.rows_quarantined >= 300
    assert _q("SELECT count(*) FROM raw_flights WHERE _load_id = ?", [landed.load_id]) == [(0,)]
    assert _q("SELECT count(*) FROM raw_flights") == [(accepted_before,)], "other loads are untouched"
    sample = _q("SELECT reason FROM quarantine WHERE load_id = ? AND reason LIKE 'dep_delay%' LIMIT 1",
                [landed.load_id])
    assert sample == [("dep_delay: between -120 and 1500 (got 5000)",)]


def test_write_unchecked_accepts_every_row_without_checks_or_events(january: pd.DataFrame,
                                                                     tmp_path: Path) -> None:
    batch = january.head(1000)
    landed = _land(batch, tmp_path)
    assert write_unchecked(landed) == 1000
    assert write_unchecked(landed) == 1000, "a re-run replaces the load's rows"
    nulls = int(batch["arr_delay"].isna().sum())
    assert nulls > 0
    assert _q("SELECT count(*), count(*) FILTER (WHERE arr_delay IS NULL) FROM raw_flights") == [(1000, nulls)]
    assert _events() == [] and _status(landed.load_id) == "accepted_unchecked"
    assert _q("SELECT count(*) FROM information_schema.tables WHERE table_name = 'quarantine'") == [(0,)]


# --------------------------------------------------------------------------- emit
def _run_failed() -> RunFailed:
    return RunFailed(dataset="flights", load_id="flights-x", stage="transform", error="boom")


def test_emit_writes_the_outbox_once_per_event_id() -> None:
    assert get_settings().emit_prefect_events is False
    event = _run_failed()
    assert emit(event) is True
    assert emit(event) is False
    [stored] = _events()
    assert stored["id"] == str(event.id) and parse_event(stored["payload"]) == event


def test_a_failed_prefect_mirror_keeps_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events

    def broken(**_: object) -> None:
        raise RuntimeError("events API unreachable")

    monkeypatch.setenv("PIPEWARDEN_EMIT_PREFECT_EVENTS", "true")
    get_settings.cache_clear()
    monkeypatch.setattr(prefect.events, "emit_event", broken)
    event = _run_failed()
    assert emit(event) is True
    assert [e["id"] for e in _events()] == [str(event.id)]


def test_emit_mirrors_to_prefect_under_the_same_id(prefect_harness: None) -> None:
    event = _run_failed()
    sent = mirror_to_prefect(event)
    assert sent is not None, "under the harness Prefect emits events"
    assert sent.id == event.id and sent.event == "pipewarden.run.failed"
    assert sent.resource.id == "pipewarden.dataset.flights"
    assert sent.payload["stage"] == "transform"
