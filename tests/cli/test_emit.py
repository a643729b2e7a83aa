"""`pipewarden emit KIND --dataset NAME [--field k=v ...] [--json-body FILE|-] [--idempotency-key K] [--json]`
through the console-script entry point: the event lands in the outbox through the store (no server), claimable by
the supervisor, with who reported it audited; the reporter proves who they are (a token, or `os_user`) and needs the
reporter role on the dataset; a key stores it once; bad input is one message naming the field."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipewarden.events import EVENT_NAMES
from pipewarden.report import EVENT_MODELS
from pipewarden.store import StateStore
from tests.cli.conftest import CliResult

REPORTER = "  - {name: nightly-cron, roles: [reporter], datasets: [flights, weather]}\n"


@pytest.fixture(autouse=True)
def reporter_name(monkeypatch: pytest.MonkeyPatch, pw_project: Path) -> str:
    """A reporter identity in the project's approvers.yaml, proven by its personal token (as a cron job would)."""
    with (pw_project / "approvers.yaml").open("a", encoding="utf-8") as f:
        f.write(REPORTER)
    monkeypatch.setenv("PIPEWARDEN_TOKEN", StateStore().issue_token("nightly-cron"))
    return "nightly-cron"


def emitted(res: CliResult) -> dict:
    assert res.code == 0, res.err
    return json.loads(res.out)


def test_emit_writes_a_typed_event_to_the_outbox(pw: Callable[..., CliResult]) -> None:
    res = pw("emit", "cost_regression", "--dataset", "flights", "--field", "model=route_daily",
             "--field", "baseline=120", "--field", "observed=480.5", "--field", "ratio=4.0",
             "--field", "metric=rows_scanned", "--json")
    out = emitted(res)
    assert out["created"] is True and out["kind"] == "cost_regression" and out["dataset"] == "flights"
    store = StateStore()
    event = store.get_event(out["id"])
    assert (event.model, event.baseline, event.observed, event.metric) == (  # type: ignore[union-attr]
        "route_daily", 120.0, 480.5, "rows_scanned")
    [row] = store.list_events()
    assert row["status"] == "pending" and row["payload"] == event.model_dump(mode="json")
    [entry] = [e for e in store.audit_entries() if e.action == "event_reported"]
    assert entry.actor == "nightly-cron"
    assert entry.detail == {"event_id": out["id"], "kind": "cost_regression", "dataset": "flights", "via": "cli"}


def test_an_emitted_event_is_claimed_by_the_supervisors_outbox_claim(pw: Callable[..., CliResult]) -> None:
    out = emitted(pw("emit", "run_failed", "--dataset", "flights", "--field", "stage=dbt_run",
                     "--field", "error=exit code 2", "--field", "crashed=true", "--json"))
    [claimed] = StateStore().claim_events("supervisor-1")
    assert str(claimed.id) == out["id"] and claimed.crashed is True  # type: ignore[union-attr]


def test_emit_without_json_says_where_the_event_went(pw: Callable[..., CliResult]) -> None:
    res = pw("emit", "run_failed", "--dataset", "flights", "--field", "stage=s", "--field", "error=e")
    assert res.code == 0, res.err
    [row] = StateStore().list_events()
    assert f"event {row['id']}" in res.out_text and "is in the outbox" in res.out_text


def test_emit_reads_the_event_from_a_json_file_or_stdin(
    pw: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"batch_path": "lake/flights/2026-11-22.csv", "failure_rate": 0.3, "threshold": 0.05,
            "failed": [{"check": "not_null", "column": "arr_delay", "failed_rows": 90}]}
    path = tmp_path / "event.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    first = emitted(pw("emit", "check_failed", "--dataset", "flights", "--json-body", path, "--json"))

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({**body, "dataset": "weather"})))
    second = emitted(pw("emit", "check_failed", "--json-body", "-", "--field", "halted=false", "--json"))
    store = StateStore()
    a, b = store.get_event(first["id"]), store.get_event(second["id"])
    assert a.failed[0].column == "arr_delay" and a.halted is True  # type: ignore[union-attr]
    assert b.dataset == "weather" and b.halted is False  # type: ignore[union-attr]


def test_the_same_idempotency_key_stores_the_event_once(pw: Callable[..., CliResult], state_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert StateStore().url == state_url  # once on SQLite, once on PostgreSQL
    monkeypatch.setenv("PIPEWARDEN_TOKEN", StateStore().issue_token("nightly-cron"))  # a token of this state DB
    args = ("emit", "run_failed", "--dataset", "flights", "--field", "stage=load", "--field", "error=timeout",
            "--idempotency-key", "airflow:flights_load:2026-11-22")
    first = emitted(pw(*args, "--json"))
    again = emitted(pw(*args, "--json"))
    assert first["created"] is True and again == {**first, "created": False}
    plain = pw(*args)
    assert plain.code == 0 and "already reported" in plain.out_text and first["id"] in plain.out_text
    store = StateStore()
    assert [e["id"] for e in store.list_events()] == [first["id"]]
    assert len([e for e in store.audit_entries() if e.action == "event_reported"]) == 1

    reused = pw("emit", "run_failed", "--dataset", "flights", "--field", "stage=load", "--field", "error=other",
                "--idempotency-key", "airflow:flights_load:2026-11-22")
    assert reused.code == 2 and "field 'idempotency_key'" in reused.err_text
    assert "already used for another event" in reused.err_text
    assert len(store.list_events()) == 1


RUN_FAILED = ("emit", "run_failed", "--dataset", "flights", "--field", "stage=s", "--field", "error=e")


def test_a_name_alone_proves_nothing_and_stores_nothing(pw: Callable[..., CliResult],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEWARDEN_TOKEN")
    monkeypatch.setenv("PIPEWARDEN_USER", "nightly-cron")
    res = pw(*RUN_FAILED)
    assert res.code == 2 and "proves nothing" in res.err_text and "PIPEWARDEN_TOKEN" in res.err_text
    assert StateStore().list_events() == []


def test_a_proven_identity_needs_the_reporter_role_on_the_dataset(pw: Callable[..., CliResult],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEWARDEN_TOKEN", StateStore().issue_token("alice"))  # an owner, not a reporter
    res = pw(*RUN_FAILED)
    assert res.code == 4 and "reporting needs the reporter role" in res.err_text
    monkeypatch.setenv("PIPEWARDEN_TOKEN", StateStore().issue_token("nightly-cron"))
    res = pw("emit", "run_failed", "--dataset", "planes", "--field", "stage=s", "--field", "error=e")
    assert res.code == 4 and "cannot report events on planes" in res.err_text
    res = pw(*RUN_FAILED, "--as", "alice")  # --as only chooses among proven identities
    assert res.code == 4 and "you cannot decide as 'alice'" in res.err_text
    assert StateStore().list_events() == []


@pytest.mark.parametrize(("args", "words"), [
    (("emit", "run_faild", "--dataset", "flights"), ["field 'kind'", "unknown event kind 'run_faild'",
                                                      "did you mean 'run_failed'"]),
    (("emit", "run_failed", "--dataset", "flights", "--field", "stage=s"), ["field 'error': Field required",
                                                                            "pass --field error=VALUE"]),
    (("emit", "run_failed", "--field", "stage=s", "--field", "error=e"), ["field 'dataset'", "pass --dataset NAME"]),
    (("emit", "cost_regression", "--dataset", "flights", "--field", "model=m", "--field", "baseline=ten",
      "--field", "observed=1", "--field", "ratio=1"), ["field 'baseline'", "valid number"]),
    (("emit", "run_failed", "--dataset", "flights", "--field", "stage"), ["'stage' is not key=value"]),
    (("emit", "run_failed", "--dataset", "flights", "--field", "stag=s", "--field", "error=e"),
     ["field 'stag'", "no such field", "a run_failed event needs dataset, stage, error"]),
    (("emit", "run_failed", "--dataset", "flights", "--field", "stage=s", "--field", "stage=t", "--field", "error=e"),
     ["field 'stage'", "given twice"]),
    (("emit", "check_failed", "--dataset", "flights", "--field", "batch_path=b", "--field", "failure_rate=1",
      "--field", "threshold=1", "--field", "failed=[{oops}]"), ["field 'failed'", "not valid JSON"]),
    (("emit", "run_failed", "--dataset", "flights", "--json-body", "missing.json"), ["missing.json: no such file"]),
    (("emit", "run_failed", "--dataset", "flights", "--field", "stage=s", "--field", "error=e",
      "--idempotency-key", " "), ["field 'idempotency_key'", "must not be empty"]),
])
def test_bad_input_is_one_message_naming_the_field_and_stores_nothing(
    pw: Callable[..., CliResult], args: tuple[str, ...], words: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = pw(*args)
    assert res.code == 2, (res.out, res.err)
    assert res.err.startswith("error: ") and "hint: " in res.err and "Traceback" not in res.err
    for w in words:
        assert w in res.err_text, res.err_text
    assert res.out == ""
    assert StateStore().list_events() == []


def test_bad_json_files_are_named(pw: Callable[..., CliResult], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    broken, array = tmp_path / "broken.json", tmp_path / "array.json"
    broken.write_text('{"stage": "s",', encoding="utf-8")
    array.write_text('["s"]', encoding="utf-8")
    res = pw("emit", "run_failed", "--dataset", "flights", "--json-body", broken)
    assert res.code == 2 and "broken.json: not valid JSON" in res.err_text and "line 1" in res.err_text
    res = pw("emit", "run_failed", "--dataset", "flights", "--json-body", array)
    assert res.code == 2 and "not an object" in res.err_text
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    res = pw("emit", "run_failed", "--dataset", "weather", "--json-body", "-", "--field", "stage=s")
    assert res.code == 2 and "stdin: not valid JSON" in res.err_text
    assert StateStore().list_events() == []


def test_emit_help_lists_every_event_kind_with_the_fields_it_needs(pw: Callable[..., CliResult]) -> None:
    res = pw("emit", "--help")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert set(EVENT_MODELS) == set(EVENT_NAMES)  # the kinds the help must name are the union's
    for kind, model in EVENT_MODELS.items():
        required = [n for n, f in model.model_fields.items() if f.is_required() and n != "dataset"]
        line = next((ln for ln in lines if ln.strip().startswith(kind)), "")
        assert all(name in line for name in required), (kind, required, line)
    for option in ("--dataset", "--field", "--json-body", "--idempotency-key", "--json"):
        assert option in res.out
