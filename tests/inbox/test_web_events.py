"""`POST /api/events`: anything that is not a Prefect flow reports a fault with a reporter's bearer token. The event
lands in the outbox (claimable by the supervisor) with who reported it in the audit log; an `Idempotency-Key` makes
a retry store nothing; every refusal (401, 403, 422) leaves the outbox and the audit log as they were. On SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pipewarden import db
from pipewarden.errors import Forbidden
from pipewarden.inbox.web import create_app
from pipewarden.models import Verdict
from pipewarden.policies.approval import Rule, check_can_decide
from pipewarden.policies.approvers import Approvers
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.inbox.conftest import make_proposal
from tests.inbox.web_client import bearer

APPROVERS = """\
approvers:
  - {name: alice, roles: [owner], datasets: [flights]}
  - {name: bob, roles: [steward], datasets: ["*"]}
  - {name: dave, roles: [engineer], datasets: ["*"]}
  - {name: ingest-bot, roles: [reporter], datasets: [flights, weather]}
  - {name: dbt-ci, roles: [reporter]}
"""
RUN_FAILED = {"kind": "run_failed", "dataset": "flights", "stage": "dbt_run", "error": "relation stg_flights missing",
              "load_id": "load-0042"}


@pytest.fixture(autouse=True)
def approvers_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "approvers.yaml"
    path.write_text(APPROVERS, encoding="utf-8")
    monkeypatch.setenv("PIPEWARDEN_APPROVERS_FILE", str(path))
    get_settings.cache_clear()
    return path


@pytest.fixture
def store(state_url: str) -> StateStore:
    """Every test here runs once on SQLite and once on PostgreSQL."""
    s = StateStore()
    assert s.url == state_url
    return s


@pytest.fixture
def client(store: StateStore) -> TestClient:
    return TestClient(create_app())


@pytest.fixture
def reporter(store: StateStore) -> str:
    return store.issue_token("ingest-bot")


def report(client: TestClient, token: str | None, body: Any, key: str | None = None, **kw: Any):
    headers = bearer(token) if token is not None else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/api/events", headers=headers, json=body, **kw)


def outbox(store: StateStore) -> list[tuple]:
    """The outbox rows, the idempotency keys and every audit entry but token issuance."""
    with store.engine.connect() as conn:
        events = [tuple(r) for r in conn.execute(sa.select(db.events.c.id, db.events.c.kind)
                                                 .order_by(db.events.c.id)).all()]
        keys = [tuple(r) for r in conn.execute(sa.select(db.idempotency_keys).order_by(db.idempotency_keys.c.key))]
        audit = [tuple(r) for r in conn.execute(sa.select(db.audit_log.c.action, db.audit_log.c.actor)
                                                .where(db.audit_log.c.action != "token_issued")
                                                .order_by(db.audit_log.c.seq))]
    return events + keys + audit


def reported_entries(store: StateStore) -> list[Any]:
    return [e for e in store.audit_entries() if e.action == "event_reported"]


# --------------------------------------------------------------------------- 201
def test_a_reporter_reports_an_event_into_the_outbox(client: TestClient, store: StateStore, reporter: str) -> None:
    resp = report(client, reporter, RUN_FAILED)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["created"] is True
    event = store.get_event(body["id"])
    assert (event.kind, event.dataset, event.stage, event.error, event.load_id, event.crashed) == (  # type: ignore[union-attr]
        "run_failed", "flights", "dbt_run", "relation stg_flights missing", "load-0042", False)
    [row] = store.list_events()
    assert row["id"] == body["id"] and row["status"] == "pending" and row["kind"] == "run_failed"
    assert row["load_id"] == "load-0042" and row["payload"] == event.model_dump(mode="json")

    [entry] = reported_entries(store)  # who reported it
    assert entry.actor == "ingest-bot" and entry.proposal_id is None
    assert entry.detail == {"event_id": body["id"], "kind": "run_failed", "dataset": "flights", "via": "api"}
    assert store.verify_audit().ok


def test_a_reported_event_is_claimed_by_the_supervisors_outbox_claim(
    client: TestClient, store: StateStore, reporter: str
) -> None:
    drift = {"kind": "check_failed", "dataset": "weather", "batch_path": "s3://lake/weather/2026-11-22.parquet",
             "failed": [{"check": "not_null", "column": "temp", "failed_rows": 12}], "failure_rate": 0.2,
             "threshold": 0.05}
    event_id = report(client, reporter, drift).json()["id"]
    [claimed] = store.claim_events("supervisor-1")
    assert str(claimed.id) == event_id and claimed.kind == "check_failed"
    assert claimed.failed[0].failed_rows == 12  # type: ignore[union-attr]
    assert store.claim_events("supervisor-2") == []  # claimed once
    assert store.list_events()[0]["status"] == "claimed"


# --------------------------------------------------------------------------- idempotency
def test_the_same_idempotency_key_stores_the_event_once(client: TestClient, store: StateStore, reporter: str) -> None:
    first = report(client, reporter, RUN_FAILED, key="nightly-2026-11-22")
    assert first.status_code == 201, first.text
    again = report(client, reporter, RUN_FAILED, key="nightly-2026-11-22")
    assert again.status_code == 200, again.text
    assert again.json() == {"id": first.json()["id"], "created": False}
    assert [e["id"] for e in store.list_events()] == [first.json()["id"]]
    [entry] = reported_entries(store)
    assert entry.detail["idempotency_key"] == "nightly-2026-11-22"

    # still answered with the first id after the supervisor claimed it
    store.claim_events("w")
    assert report(client, reporter, RUN_FAILED, key="nightly-2026-11-22").json()["id"] == first.json()["id"]

    # keys belong to their reporter; without a key every report is a new event
    other = report(client, store.issue_token("dbt-ci"), RUN_FAILED, key="nightly-2026-11-22")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert report(client, reporter, RUN_FAILED).status_code == 201
    assert len(store.list_events()) == 3 and len(reported_entries(store)) == 3


def test_a_key_reused_for_another_event_is_422_and_stores_nothing(
    client: TestClient, store: StateStore, reporter: str
) -> None:
    report(client, reporter, RUN_FAILED, key="k-1")
    before = outbox(store)
    resp = report(client, reporter, {**RUN_FAILED, "error": "something else"}, key="k-1")
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["loc"] == ["header", "Idempotency-Key"] and "already used for another event" in body["problem"]
    assert body["hint"]
    for bad in ("   ", "x" * 256):
        assert report(client, reporter, RUN_FAILED, key=bad).json()["loc"] == ["header", "Idempotency-Key"]
    assert outbox(store) == before


def test_concurrent_reports_with_one_key_store_one_event(store: StateStore) -> None:
    from pipewarden.report import reported_event

    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def worker() -> None:
        try:
            start.wait()
            results.append(StateStore().report_event(reported_event(RUN_FAILED), "ingest-bot", idempotency_key="race"))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({event_id for event_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 5 + [True]
    assert len(store.list_events()) == 1 and len(reported_entries(store)) == 1
    assert store.verify_audit().ok


# --------------------------------------------------------------------------- 422
@pytest.mark.parametrize(("body", "loc", "problem"), [
    ({k: v for k, v in RUN_FAILED.items() if k != "stage"}, ["body", "stage"], "Field required"),
    ({**RUN_FAILED, "crashed": "perhaps"}, ["body", "crashed"], "valid boolean"),
    ({"kind": "check_failed", "dataset": "flights", "batch_path": "b", "failed": [{"check": "not_null"}],
      "failure_rate": 0.5, "threshold": 0.1}, ["body", "failed", 0, "failed_rows"], "Field required"),
    ({**RUN_FAILED, "kind": "run_faild"}, ["body", "kind"], "unknown event kind 'run_faild'"),
    ({k: v for k, v in RUN_FAILED.items() if k != "kind"}, ["body", "kind"], "Field required"),
    ({**RUN_FAILED, "stag": "dbt"}, ["body", "stag"], "has no such field"),
    ({**RUN_FAILED, "id": "01890000-0000-7000-8000-000000000000"}, ["body", "id"], "given by the outbox"),
    ({**RUN_FAILED, "dataset": " "}, ["body", "dataset"], "must not be empty"),
    ({**RUN_FAILED, "dataset": "d" * 129}, ["body", "dataset"], "at most 128"),
    (["run_failed"], ["body"], "expected a JSON object"),
])
def test_a_bad_body_is_422_naming_the_field_and_stores_nothing(
    client: TestClient, store: StateStore, reporter: str, body: Any, loc: list, problem: str
) -> None:
    before = outbox(store)
    resp = report(client, reporter, body, key="k-bad")
    assert resp.status_code == 422, resp.text
    got = resp.json()
    assert got["loc"] == loc and problem in got["problem"], got
    assert got["hint"] and got["errors"][0]["loc"] == loc
    assert outbox(store) == before


def test_a_body_that_is_not_json_is_422(client: TestClient, store: StateStore, reporter: str) -> None:
    before = outbox(store)
    resp = client.post("/api/events", content=b'{"kind": "run_failed"',
                       headers={**bearer(reporter), "Content-Type": "application/json"})
    assert resp.status_code == 422 and "not valid JSON" in resp.json()["problem"]
    assert resp.json()["loc"] == ["body"]
    assert outbox(store) == before


def test_the_422_hint_lists_the_kinds_fields(client: TestClient, reporter: str) -> None:
    hint = report(client, reporter, {"kind": "cost_regression", "dataset": "flights"}).json()["hint"]
    assert "a cost_regression event needs dataset, model, baseline, observed, ratio" in hint and "metric" in hint


# --------------------------------------------------------------------------- 401, 403
def test_no_unknown_or_revoked_token_is_401(client: TestClient, store: StateStore) -> None:
    revoked = store.issue_token("ingest-bot")
    store.revoke_tokens("ingest-bot")
    before = outbox(store)
    for token in (None, "pw_not-a-real-token", revoked):
        resp = report(client, token, RUN_FAILED, key="k-401")
        assert resp.status_code == 401, resp.text
        assert set(resp.json()) == {"error", "hint"} and resp.json()["hint"]
    resp = client.post("/api/events", json=RUN_FAILED, headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert resp.status_code == 401
    # nothing reported; the two refused tokens are audited as failed sign-ins (anonymous, ingest-bot's revoked one)
    assert outbox(store) == before + [("sign_in_failed", "anonymous"), ("sign_in_failed", "ingest-bot")]


def test_a_token_without_the_reporter_role_is_403(client: TestClient, store: StateStore) -> None:
    alice, dave = store.issue_token("alice"), store.issue_token("dave")
    before = outbox(store)
    for token, who in ((alice, "alice has owner"), (dave, "dave has engineer")):
        resp = report(client, token, RUN_FAILED)
        assert resp.status_code == 403, resp.text
        assert "reporting needs the reporter role" in resp.json()["error"] and who in resp.json()["error"]
        assert "reporter" in resp.json()["hint"]
    # a reporter only reports on its own datasets; the role is checked before the body is looked at
    resp = report(client, store.issue_token("ingest-bot"), {**RUN_FAILED, "dataset": "planes"})
    assert resp.status_code == 403 and "cannot report events on planes" in resp.json()["error"]
    assert report(client, alice, {"not": "an event"}).status_code == 403
    assert outbox(store) == before


def test_a_reporter_can_never_decide_a_proposal(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    token = store.issue_token("ingest-bot")
    resp = client.post(f"/api/proposals/{p.id}/decision", headers=bearer(token), json={"verdict": "approve"})
    assert resp.status_code == 404, resp.text  # a reporter does not even read proposals
    assert "that you may read" in resp.json()["error"]
    assert store.decisions_for(p.id) == []

    approvers = Approvers.load()
    for verdict in Verdict:
        with pytest.raises(Forbidden, match="is a reporter"):
            check_can_decide("dbt-ci", p, verdict, approvers)
    with pytest.raises(ValueError, match="never decides"):
        Rule(name="bad", says="reporters approve", roles=("owner", "reporter"))
