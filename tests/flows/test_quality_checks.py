"""The quality stage after validate: events with stable ids, halting takes the load's rows back out, and validate
applies approved dedupe and quarantine versions (rows quarantined with the rule's reason)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipewarden.events import QualityAnomaly
from pipewarden.flows import data as D
from pipewarden.flows.ingest import list_loads
from pipewarden.flows.quality_checks import anomaly_event_id, check_quality
from pipewarden.flows.validate import validate
from pipewarden.flows.warehouse import connect
from pipewarden.models import DedupeRule, Quarantine
from pipewarden.store import StateStore
from tests.quality_history import build_history, land_and_check, use_history


@pytest.fixture(scope="module")
def history_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, pd.DataFrame]]:
    folder = tmp_path_factory.mktemp("quality-flow-history")
    return folder, build_history(folder)


@pytest.fixture
def m3(history_home, pw_home: Path) -> pd.DataFrame:
    folder, samples = history_home
    use_history(folder, pw_home)
    return samples[3]


def _q(sql: str, params: list[object]) -> list[tuple]:
    with connect(read_only=True) as con:
        return con.execute(sql, params).fetchall()


def test_a_clean_batch_passes_and_emits_nothing(m3, tmp_path: Path) -> None:
    _, v, q = land_and_check(m3, tmp_path)
    assert not v.halted and q is not None and not q.halted and q.findings == [] and StateStore().list_events() == []


def test_a_halting_finding_emits_a_stable_event_and_withdraws_the_load(m3, tmp_path: Path) -> None:
    landed, v, q = land_and_check(D.inject_duplicates(m3, 0.03), tmp_path)
    assert q.halted and q.rows_withdrawn == v.rows_accepted > 0
    assert q.event_ids == [str(anomaly_event_id("flights", landed.load_id, "duplicates", None))]
    (event,) = [StateStore().get_event(e) for e in q.event_ids]
    assert isinstance(event, QualityAnomaly) and event.check == "duplicates" and event.batch_path == landed.uri
    assert event.observed == 175 and "repeat the key" in event.detail["message"]
    assert _q("SELECT count(*) FROM raw_flights WHERE _load_id = ?", [landed.load_id]) == [(0,)]
    assert next(r["status"] for r in list_loads("flights") if r["load_id"] == landed.load_id) == "halted_quality"
    again = check_quality(landed)  # the re-run finds the same fault: the same event, once in the outbox
    assert again.event_ids == q.event_ids and len(StateStore().list_events()) == 1


def test_a_warning_finding_keeps_the_batch(m3, tmp_path: Path) -> None:
    landed, v, q = land_and_check(D.inject_late(m3, 7), tmp_path)
    checks = {f.check: f.halt for f in q.findings}
    assert checks.get("freshness") is False
    assert all(StateStore().get_event(e).kind == "quality_anomaly" for e in q.event_ids)


def test_validate_applies_the_active_dedupe_and_quarantine_versions(m3, tmp_path: Path) -> None:
    store = StateStore()
    bad = D.inject_nulls(D.inject_duplicates(m3, 0.02), "carrier", 0.15)  # halts on its own: 15% null carrier
    landed, v, _ = land_and_check(bad, tmp_path)
    assert v.halted
    store.activate_new_version("dedupe:flights", DedupeRule(dataset="flights", keys=["carrier", "flight", "origin",
                               "time_hour"]).model_dump(mode="json"), "00000000-0000-0000-0000-000000000001", "test")
    store.activate_new_version("quarantine:flights", Quarantine(
        dataset="flights", load_id=landed.load_id, predicate="carrier IS NULL", reason="carrier codes lost upstream",
    ).model_dump(mode="json"), "00000000-0000-0000-0000-000000000002", "test")
    again = validate(landed, engine="pandas")
    assert not again.halted
    reasons = dict(_q("SELECT split_part(reason, ':', 1) || ':' || split_part(reason, ':', 2), count(*) FROM "
                      "quarantine WHERE load_id = ? GROUP BY 1", [landed.load_id]))
    assert reasons["dedupe:flights v1"] > 0 and reasons["quarantine:flights v1"] > 800
    accepted = _q("SELECT count(*), count(DISTINCT (carrier, flight, origin, time_hour)), count(*) FILTER "
                  "(WHERE carrier IS NULL) FROM raw_flights WHERE _load_id = ?", [landed.load_id])[0]
    assert accepted[0] == accepted[1] and accepted[2] == 0
    other = validate(land_and_check(D.inject_nulls(m3, "carrier", 0.15), tmp_path, "other")[0], engine="pandas")
    assert other.halted  # the quarantine is scoped to its load; another load is judged by the contract alone
