"""The web inbox and its JSON API, through FastAPI's TestClient with the fake resumer."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from inbox import service
from inbox.web import create_app
from pipewarden.models import ProposalStatus, Verdict
from pipewarden.store import StateStore
from tests.inbox.conftest import FAILING_RESUMER, GOOD_RESUMER, make_proposal

EVIL = "<script>alert(1)</script>"


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app())


@pytest.fixture
def sync_client() -> TestClient:
    return TestClient(create_app(resume_in_background=False))


# --------------------------------------------------------------------------- pages
def test_list_page_shows_a_pending_proposal(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    html = client.get("/").text
    assert "Waiting for a decision (1)" in html
    assert p.title in html and p.short_id in html
    assert "schema_drift" in html and "flights" in html and "low" in html
    assert "pending: 1" in html
    assert f'href="http://testserver/proposals/{p.id}"' in html


def test_list_page_separates_decided_proposals(client: TestClient, store: StateStore) -> None:
    done = make_proposal(store, title="already handled")
    service.reject(done.id, "ana", "not needed")
    make_proposal(store, title="still open")
    html = client.get("/").text
    waiting, decided = html.split("Recently decided")
    assert "still open" in waiting and "already handled" not in waiting
    assert "already handled" in decided
    assert "rejected: 1" in html and "pending: 1" in html


def test_detail_page_shows_mapping_evidence_citations_and_audit(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    resp = client.get(f"/proposals/{p.short_id}")
    assert resp.status_code == 200
    html = resp.text
    assert "<code>dep_delay_min</code></td><td>&rarr;</td><td><code>dep_delay</code>" in html
    assert "casts" in html and "integer" in html
    assert "The change heals the failing batch." in html
    assert "contract column &#39;dep_delay&#39; (integer) is missing" in html
    assert "dep_delay not null" in html
    assert "<th>carrier</th>" in html and "N14228" in html and ">null<" in html  # sample table
    assert "policies/contracts/flights.yaml" in html and "data-platform" in html and "2026-11-01 09:30:00 UTC" in html
    assert "owner, steward" in html
    assert "new column <code>dep_delay_min</code>" in html  # the event's drift
    assert ">proposed<" in html  # audit trail
    assert 'action="http://testserver/proposals/' in html and "Approve" in html and "Reject" in html
    assert 'http-equiv="refresh"' not in html


def test_detail_page_escapes_data_and_llm_text(client: TestClient, store: StateStore) -> None:
    p = make_proposal(
        store, title=EVIL, diagnosis=f"see {EVIL}", renames={"<img src=x onerror=alert(2)>": "dep_delay"},
        sample=[{"<b>col</b>": "<i>v</i>"}],
    )
    for html in (client.get(f"/proposals/{p.id}").text, client.get("/").text):
        assert "<script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    detail = client.get(f"/proposals/{p.id}").text
    assert "<img" not in detail and "&lt;img src=x onerror=alert(2)&gt;" in detail
    assert "<b>col</b>" not in detail and "&lt;b&gt;col&lt;/b&gt;" in detail
    assert "<i>v</i>" not in detail


def test_approve_via_form_stores_decision_resumes_and_verifies(
    client: TestClient, store: StateStore, resumer: list[str]
) -> None:
    p = make_proposal(store)
    resp = client.post(f"/proposals/{p.id}/approve", data={"actor": "ana", "reason": "matches the runbook"},
                       follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == f"/proposals/{p.id}?flash=approved"
    decisions = store.decisions_for(p.id)
    assert [(d.verdict, d.actor, d.via, d.reason) for d in decisions] == [
        (Verdict.approve, "ana", "web", "matches the runbook")
    ]
    assert resumer == [str(p.id)]  # the background task ran after the response
    assert store.get_proposal(p.id).status == ProposalStatus.verified

    page = client.get(resp.headers["location"]).text
    assert 'id="status">verified<' in page
    assert "Approved. The agent is applying the change..." in page
    assert 'http-equiv="refresh"' not in page
    assert "Decide" not in page


def test_approve_in_the_foreground(sync_client: TestClient, store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    page = sync_client.post(f"/proposals/{p.id}/approve", data={"actor": "ana"})
    assert page.status_code == 200
    assert "Approved, and the agent has finished applying the change." in page.text
    assert resumer == [str(p.id)]
    assert store.get_proposal(p.id).status == ProposalStatus.verified


def test_page_shows_applying_and_refreshes_while_approved(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    service.approve(p.id, "ana", resume=False)
    html = client.get(f"/proposals/{p.id}").text
    assert 'http-equiv="refresh" content="2"' in html
    assert "applying&hellip;" in html


def test_failed_resume_is_shown_and_can_be_retried(client: TestClient, store: StateStore, use_resumer) -> None:
    p = make_proposal(store)
    use_resumer(FAILING_RESUMER)
    page = client.post(f"/proposals/{p.id}/approve", data={"actor": "ana"}).text
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert store.approved_decision(p.id) is not None
    assert "Applying the approved change failed" in page and "checkpoint database is locked" in page
    assert 'http-equiv="refresh"' not in page  # no endless refresh on a failure

    use_resumer(GOOD_RESUMER)
    client.post(f"/proposals/{p.id}/resume")
    assert store.get_proposal(p.id).status == ProposalStatus.verified


def test_reject_needs_a_reason(client: TestClient, store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    resp = client.post(f"/proposals/{p.id}/reject", data={"actor": "ana", "reason": ""})
    assert resp.status_code == 400
    assert "needs a reason" in resp.text
    assert store.decisions_for(p.id) == []
    assert store.get_proposal(p.id).status == ProposalStatus.pending

    resp = client.post(f"/proposals/{p.id}/reject", data={"actor": "ana", "reason": "units are hours"},
                       follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=rejected")
    assert store.get_proposal(p.id).status == ProposalStatus.rejected
    assert store.decisions_for(p.id)[0].reason == "units are hours"
    assert resumer == [str(p.id)]  # the graph is resumed only so it ends; the status stays rejected
    assert store.get_proposal(p.id).status == ProposalStatus.rejected
    assert "Rejected." in client.get(resp.headers["location"]).text


def test_second_decision_is_409_and_audit_unchanged(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    client.post(f"/proposals/{p.id}/approve", data={"actor": "ana"})
    audit_before = store.audit_entries()
    decisions_before = store.decisions_for(p.id)

    for path, data in (("approve", {"actor": "bo"}), ("reject", {"actor": "bo", "reason": "late"})):
        resp = client.post(f"/proposals/{p.id}/{path}", data=data)
        assert resp.status_code == 409
        assert f"proposal {p.short_id} is already verified; nothing to decide" in resp.text
    assert store.audit_entries() == audit_before
    assert store.decisions_for(p.id) == decisions_before
    assert store.verify_audit().ok


def test_system_actor_is_403(client: TestClient, store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    resp = client.post(f"/proposals/{p.id}/approve", data={"actor": "system"})
    assert resp.status_code == 403
    assert "system identity" in resp.text
    assert store.get_proposal(p.id).status == ProposalStatus.pending
    assert store.decisions_for(p.id) == [] and resumer == []


def test_needs_human_proposal_offers_only_reject(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store, status=ProposalStatus.needs_human)
    html = client.get(f"/proposals/{p.id}").text
    assert "No valid change: no incoming column matches dep_delay" in html
    assert "/approve" not in html and "/reject" in html
    assert client.post(f"/proposals/{p.id}/approve", data={"actor": "ana"}).status_code == 409


def test_unknown_id_is_404(client: TestClient, store: StateStore) -> None:
    make_proposal(store)
    assert client.get("/proposals/ffffffff").status_code == 404
    assert "unknown proposal" in client.get("/proposals/ffffffff").text
    assert client.post("/proposals/ffffffff/approve", data={"actor": "ana"}).status_code == 404
    assert client.get("/api/proposals/ffffffff").status_code == 404
    resp = client.post("/api/proposals/ffffffff/decision", json={"verdict": "approve", "actor": "ana"})
    assert resp.status_code == 404 and "unknown proposal" in resp.json()["error"]


# --------------------------------------------------------------------------- JSON API
def test_api_list_and_filter(client: TestClient, store: StateStore) -> None:
    a = make_proposal(store, title="a")
    b = make_proposal(store, title="b")
    service.reject(b.id, "ana", "no")
    body = client.get("/api/proposals").json()
    assert body["count"] == 2
    assert body["proposals"][0]["id"] == str(a.id)  # open first
    assert client.get("/api/proposals?status=pending").json()["proposals"][0]["title"] == "a"
    assert [p["title"] for p in client.get("/api/proposals?status=rejected,verified").json()["proposals"]] == ["b"]
    bad = client.get("/api/proposals?status=done")
    assert bad.status_code == 400 and "unknown status 'done'" in bad.json()["error"]


def test_api_get(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    body = client.get(f"/api/proposals/{p.short_id}").json()
    assert body["proposal"]["id"] == str(p.id)
    assert body["proposal"]["change"]["renames"] == {"dep_delay_min": "dep_delay"}
    assert body["event"]["kind"] == "schema_drift"
    assert body["decisions"] == [] and [e["action"] for e in body["audit"]] == ["proposed"]


def test_api_decision_approve_and_reject(client: TestClient, store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    resp = client.post(f"/api/proposals/{p.id}/decision", json={"verdict": "approve", "actor": "ana"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["decision"]["verdict"] == "approve" and body["decision"]["via"] == "web"
    assert body["resume"] == "scheduled"
    assert resumer == [str(p.id)]
    assert store.get_proposal(p.id).status == ProposalStatus.verified

    again = client.post(f"/api/proposals/{p.id}/decision", json={"verdict": "reject", "actor": "bo", "reason": "x"})
    assert again.status_code == 409 and "already verified" in again.json()["error"]

    q = make_proposal(store)
    no_reason = client.post(f"/api/proposals/{q.id}/decision", json={"verdict": "reject", "actor": "bo"})
    assert no_reason.status_code == 400
    sys_ = client.post(f"/api/proposals/{q.id}/decision", json={"verdict": "approve", "actor": "agent"})
    assert sys_.status_code == 403
    ok = client.post(f"/api/proposals/{q.id}/decision", json={"verdict": "reject", "actor": "bo", "reason": "no"})
    assert ok.status_code == 200 and ok.json()["proposal"]["status"] == "rejected" and ok.json()["resume"] in (
        "resumed", "scheduled"
    )
    assert client.post(f"/api/proposals/{q.id}/decision", json={"verdict": "maybe", "actor": "bo"}).status_code == 422


def test_api_decision_in_the_foreground(sync_client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    body = sync_client.post(f"/api/proposals/{p.id}/decision", json={"verdict": "approve", "actor": "ana"}).json()
    assert body["resume"] == "resumed" and body["proposal"]["status"] == "verified"


def test_healthz_and_static(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    css = client.get("/static/inbox.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
