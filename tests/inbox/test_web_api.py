"""The JSON API: bearer tokens, filters and counts, decisions, and every refusal with its status and
`{"error", "hint"}` body, leaving the queue, decisions, versions and audit log as they were."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from pipewarden.ids import utcnow
from pipewarden.inbox import service
from pipewarden.inbox.web import MAX_BODY_BYTES, create_app
from pipewarden.models import ProposalStatus, Verdict
from pipewarden.store import StateStore
from tests.inbox.conftest import make_proposal
from tests.inbox.web_client import bearer, snapshot, work_once
from tests.pipewarden.factories import pending_proposal


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app())


@pytest.fixture
def alice_token(store: StateStore) -> str:
    return store.issue_token("alice")


def decide(client: TestClient, pid: object, token: str, body: dict | None = None, **kw):
    return client.post(f"/api/proposals/{pid}/decision", headers=bearer(token), json=body, **kw)


def assert_error(resp, status: int, *words: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "hint"} and body["hint"]
    for w in words:
        assert w in body["error"], body


# --------------------------------------------------------------------------- identity
def test_api_needs_a_valid_bearer_token(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    revoked = store.issue_token("carol")
    store.revoke_tokens("carol")
    before = snapshot(store)
    for n, headers in enumerate(({}, {"Authorization": "Bearer"}, {"Authorization": "Basic YWxpY2U6eA=="},
                                 bearer("pw_not-a-real-token"), bearer(revoked))):
        client = TestClient(create_app(), client=(f"10.0.2.{n}", 40000))  # one address each: under the throttle
        assert_error(client.get("/api/proposals", headers=headers), 401)
        assert_error(client.get(f"/api/proposals/{p.id}", headers=headers), 401)
        resp = client.post(f"/api/proposals/{p.id}/decision", headers=headers, json={"verdict": "approve"})
        assert_error(resp, 401)
    after = snapshot(store)
    assert {k: v for k, v in after.items() if k != "audit"} == {k: v for k, v in before.items() if k != "audit"}
    added = after["audit"][len(before["audit"]):]  # only the refused tokens, audited (3 requests x 2 tokens)
    assert after["audit"][:len(before["audit"])] == before["audit"]
    assert [row[3] for row in added] == ["sign_in_failed"] * 6


def test_the_very_next_decision_sees_a_revocation_and_an_approvers_edit(
        client: TestClient, store: StateStore, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Nothing about who asks is kept between requests: the token's row and the approvers file are read for each."""
    from pathlib import Path

    from pipewarden.settings import get_settings

    original = Path(get_settings().approvers_path).read_text()
    path = tmp_path / "approvers.yaml"
    path.write_text(original)
    monkeypatch.setenv("PIPEWARDEN_APPROVERS_FILE", str(path))
    get_settings.cache_clear()
    first, second, third = (make_proposal(store) for _ in range(3))
    token = store.issue_token("alice")
    assert decide(client, first.id, token, {"verdict": "approve"}).status_code == 200
    store.revoke_tokens("alice")
    assert_error(decide(client, second.id, token, {"verdict": "approve"}), 401, "revoked")
    assert store.decisions_for(second.id) == []

    zed = store.issue_token("zed")  # a token, but nobody in approvers.yaml yet
    assert_error(decide(client, second.id, zed, {"verdict": "approve"}), 404)
    path.write_text(original + "  - {name: zed, roles: [owner], datasets: [flights]}\n")
    assert decide(client, second.id, zed, {"verdict": "approve"}).status_code == 200
    path.write_text(original)  # zed removed again: refused at once
    assert_error(decide(client, third.id, zed, {"verdict": "approve"}), 404)
    assert [d.actor for d in store.decisions_for(second.id)] == ["zed"] and store.decisions_for(third.id) == []


def test_session_cookie_does_not_open_the_api(client: TestClient, store: StateStore) -> None:
    from tests.inbox.web_client import sign_in

    make_proposal(store)
    sign_in(client, "alice", store)
    assert client.get("/").status_code == 200
    assert_error(client.get("/api/proposals"), 401, "Bearer")


# --------------------------------------------------------------------------- reading
def test_api_list_filters_pages_and_counts(client: TestClient, store: StateStore, alice_token: str) -> None:
    a = make_proposal(store, title="a")
    b = make_proposal(store, title="b")
    c = make_proposal(store, title="c")
    service.decide(b.id, Verdict.reject, "alice", "no")
    h = bearer(alice_token)

    body = client.get("/api/proposals", headers=h).json()
    assert body["count"] == 3 and body["limit"] == 50 and body["offset"] == 0
    assert [p["title"] for p in body["proposals"]] == ["c", "b", "a"]  # newest first
    assert body["facets"]["status"] == {"pending": 2, "rejected": 1}
    assert body["facets"]["agent"] == {"schema_drift": 3} and body["facets"]["risk"] == {"low": 3}

    pending = client.get("/api/proposals?status=pending", headers=h).json()
    assert [p["id"] for p in pending["proposals"]] == [str(c.id), str(a.id)] and pending["count"] == 2
    assert pending["facets"]["status"] == {"pending": 2, "rejected": 1}  # a facet ignores its own filter
    both = client.get("/api/proposals?status=rejected,verified&dataset=flights", headers=h).json()
    assert [p["title"] for p in both["proposals"]] == ["b"]
    assert client.get("/api/proposals?status=open", headers=h).json()["count"] == 2
    assert client.get("/api/proposals?agent=quality", headers=h).json()["count"] == 0

    page2 = client.get("/api/proposals?limit=2&offset=2", headers=h).json()
    assert page2["count"] == 3 and [p["title"] for p in page2["proposals"]] == ["a"]

    assert_error(client.get("/api/proposals?status=done", headers=h), 422, "unknown status 'done'")
    assert_error(client.get("/api/proposals?risk=extreme", headers=h), 422, "unknown risk")
    assert_error(client.get("/api/proposals?limit=0", headers=h), 422, "limit")
    assert_error(client.get("/api/proposals?limit=abc", headers=h), 422, "limit")
    assert_error(client.get("/api/proposals?offset=-1", headers=h), 422, "offset")


def test_api_get_has_the_proposal_its_event_and_who_must_approve(
    client: TestClient, store: StateStore, alice_token: str
) -> None:
    p = make_proposal(store)
    body = client.get(f"/api/proposals/{p.short_id}", headers=bearer(alice_token)).json()
    assert body["proposal"]["id"] == str(p.id)
    assert body["proposal"]["change"]["renames"] == {"dep_delay_min": "dep_delay"}
    assert body["event"]["kind"] == "schema_drift"
    assert body["requirement"]["missing"] == "needs 1 more approval from: owner or steward"
    assert body["approvable"] is True
    assert body["decisions"] == [] and [e["action"] for e in body["audit"]] == ["proposed"]
    assert_error(client.get("/api/proposals/ffffffff", headers=bearer(alice_token)), 404,
                 "no proposal 'ffffffff' that you may read")


# --------------------------------------------------------------------------- deciding
def test_api_decision_is_the_token_owners(client: TestClient, store: StateStore, alice_token: str,
                                          resumer: list[str]) -> None:
    p = make_proposal(store)
    resp = decide(client, p.id, alice_token, {"verdict": "approve", "reason": "values match"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["decision"]["verdict"], body["decision"]["actor"], body["decision"]["via"]) == ("approve", "alice", "web")
    assert body["requirement"]["satisfied"] is True and body["proposal"]["status"] == "approved"
    assert body["progress"]["stage"] == "waiting_for_worker"
    assert resumer == []  # nothing is applied in the server: the decision is handed to the worker
    assert store.resume_requested() == [str(p.id)]
    work_once(store)
    assert store.get_proposal(p.id).status == ProposalStatus.verified
    shown = client.get(f"/api/proposals/{p.id}", headers=bearer(alice_token)).json()
    assert shown["progress"]["stage"] == "verified" and shown["proposal"]["status"] == "verified"

    q = make_proposal(store)
    ok = decide(client, q.id, alice_token, {"verdict": "reject", "reason": "no"})
    assert ok.status_code == 200 and ok.json()["proposal"]["status"] == "rejected"
    assert store.decisions_for(q.id)[0].actor == "alice"


@pytest.mark.parametrize(("body", "words"), [
    ({"verdict": "reject"}, ["needs a reason"]),
    ({"verdict": "reject", "reason": "  "}, ["needs a reason"]),
    ({"verdict": "maybe"}, ["verdict"]),
    ({}, ["verdict"]),
    ({"verdict": "approve", "actor": "bob"}, ["actor"]),
    (["approve"], []),
])
def test_api_malformed_decisions_are_422_and_change_nothing(
    client: TestClient, store: StateStore, alice_token: str, body: object, words: list[str]
) -> None:
    p = make_proposal(store)
    before = snapshot(store)
    assert_error(decide(client, p.id, alice_token, body), 422, *words)
    assert snapshot(store) == before


def test_api_actor_field_hint_says_the_token_decides(client: TestClient, store: StateStore, alice_token: str) -> None:
    p = make_proposal(store)
    resp = decide(client, p.id, alice_token, {"verdict": "approve", "actor": "bob"})
    assert "token's approver" in resp.json()["hint"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b'{"verdict": "approve"'])
def test_api_invalid_json_is_422_and_changes_nothing(
    client: TestClient, store: StateStore, alice_token: str, raw: bytes
) -> None:
    p = make_proposal(store)
    before = snapshot(store)
    resp = client.post(f"/api/proposals/{p.id}/decision", content=raw,
                       headers={**bearer(alice_token), "Content-Type": "application/json"})
    assert_error(resp, 422, "not valid JSON")
    assert snapshot(store) == before


def test_api_oversized_body_is_413_before_parsing(client: TestClient, store: StateStore, alice_token: str) -> None:
    p = make_proposal(store)
    before = snapshot(store)
    big = json.dumps({"verdict": "reject", "reason": "x" * MAX_BODY_BYTES}).encode()
    resp = client.post(f"/api/proposals/{p.id}/decision", content=big,
                       headers={**bearer(alice_token), "Content-Type": "application/json"})
    assert_error(resp, 413, "64 KiB")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield b'{"verdict": "reject", "reason": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'"}'

    resp = client.post(f"/api/proposals/{p.id}/decision", content=chunks(),
                       headers={**bearer(alice_token), "Content-Type": "application/json"})
    assert_error(resp, 413, "64 KiB")
    # the pages' forms are limited too
    resp = client.post(f"/proposals/{p.id}/reject", content=b"reason=" + b"z" * (MAX_BODY_BYTES + 1),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413
    assert snapshot(store) == before


def test_api_refusals_403_404_409(client: TestClient, store: StateStore, alice_token: str) -> None:
    p = make_proposal(store)
    late = pending_proposal(store, expires_at=utcnow() - timedelta(minutes=5))
    dave = store.issue_token("dave")  # an engineer
    before = snapshot(store)
    assert_error(decide(client, p.id, dave, {"verdict": "approve"}), 403, "needs owner or steward of flights")
    assert_error(decide(client, "ffffffff", alice_token, {"verdict": "approve"}), 404, "that you may read")
    assert_error(decide(client, late.id, alice_token, {"verdict": "approve"}), 409, "expired")
    assert snapshot(store) == before

    assert decide(client, p.id, alice_token, {"verdict": "approve"}).status_code == 200
    work_once(store)
    before = snapshot(store)
    bob = store.issue_token("bob")
    before = snapshot(store)  # after the token's own audit entry
    assert_error(decide(client, p.id, bob, {"verdict": "reject", "reason": "late"}), 409, "already verified")
    assert snapshot(store) == before
