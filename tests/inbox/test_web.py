"""The web inbox's pages through FastAPI's TestClient: signed in with real personal tokens, deciding through the
real decision service and approval rules. The server never applies anything itself: a decision is stored with its
durable resume request, and `work_once` plays the supervisor's worker (lease, fake resumer, release).

Every refusal asserts that the queue, the decisions, the versions and the audit log are as they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from pipewarden.ids import utcnow
from pipewarden.inbox import service
from pipewarden.inbox.render import age_words
from pipewarden.inbox.web import create_app
from pipewarden.models import ProposalStatus, Risk, Verdict
from pipewarden.store import StateStore
from tests.inbox import fake_resumer
from tests.inbox.conftest import make_proposal
from tests.inbox.web_client import csrf_of, page_csrf, sign_in, snapshot, work_once
from tests.pipewarden.factories import pending_proposal

EVIL = "<script>alert(1)</script>"


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app())


@pytest.fixture
def alice(client: TestClient, store: StateStore) -> TestClient:
    """The client signed in as alice, an owner of flights."""
    sign_in(client, "alice", store)
    return client


def approve(client: TestClient, pid: object, **data: str):
    csrf = page_csrf(client, f"/proposals/{pid}")
    return client.post(f"/proposals/{pid}/approve", data={"csrf_token": csrf, **data}, follow_redirects=False)


def reject(client: TestClient, pid: object, reason: str):
    csrf = page_csrf(client, f"/proposals/{pid}")
    return client.post(f"/proposals/{pid}/reject", data={"csrf_token": csrf, "reason": reason}, follow_redirects=False)


# --------------------------------------------------------------------------- pages
def test_pages_need_sign_in(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    for path in ("/", f"/proposals/{p.id}", "/?agent=schema_drift"):
        resp = client.get(path, follow_redirects=False)
        assert resp.status_code == 303
        assert resp.headers["location"].startswith("/login?next=%2F")
    assert "Personal token" in client.get("/login").text


def test_queue_page_shows_a_pending_proposal(alice: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    html = alice.get("/").text
    assert p.title in html and p.short_id in html
    assert "schema_drift" in html and "flights" in html and "low" in html
    assert "1&ndash;1 of 1" in html
    assert f'href="http://testserver/proposals/{p.id}"' in html
    assert 'signed in as <strong id="signed-in-as">alice</strong>' in html


def test_detail_page_shows_mapping_evidence_citations_approvers_and_audit(alice: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    resp = alice.get(f"/proposals/{p.short_id}")
    assert resp.status_code == 200
    html = resp.text
    assert "<td><code>dep_delay_min</code></td><td>&rarr;</td><td><code>dep_delay</code></td><td>float</td>" in html
    assert "casts" in html and "integer" in html
    assert "No mapping of flights is active yet; this would be v1." in html
    assert "The change heals the failing batch." in html
    assert "contract column &#39;dep_delay&#39; (integer) is missing" in html
    assert "dep_delay not null" in html
    assert "<th>carrier</th>" in html and "N14228" in html and ">null<" in html  # the sample of affected rows
    # the citation with its provenance and age in words
    assert "contracts/flights.yaml" in html and "data-platform" in html and "2026-11-01 09:30:00 UTC" in html
    # its age in words, whatever day the test runs on (the page and the test read the same clock)
    assert f"updated {age_words(datetime(2026, 11, 1, 9, 30, tzinfo=UTC))} ago" in html
    # who must approve, from the approval rules
    assert 'id="needs">needs 1 more approval from: owner or steward<' in html
    assert "owner-or-steward" in html
    assert ">proposed<" in html  # the audit trail
    assert 'action="http://testserver/proposals/' in html and "Approve" in html and "Reject" in html
    assert html.count('name="csrf_token"') >= 3  # approve, reject, edit (and sign out)
    assert 'http-equiv="refresh"' not in html


def test_detail_page_escapes_data_and_llm_text(alice: TestClient, store: StateStore) -> None:
    p = make_proposal(
        store, title=EVIL, diagnosis=f"see {EVIL}", renames={"<img src=x onerror=alert(2)>": "dep_delay"},
        sample=[{"<b>col</b>": "<i>v</i>"}],
    )
    for html in (alice.get(f"/proposals/{p.id}").text, alice.get("/").text):
        assert "<script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    detail = alice.get(f"/proposals/{p.id}").text
    assert "<img" not in detail and "&lt;img src=x onerror=alert(2)&gt;" in detail
    assert "<b>col</b>" not in detail and "&lt;b&gt;col&lt;/b&gt;" in detail
    assert "<i>v</i>" not in detail


# --------------------------------------------------------------------------- deciding
def progress_of(html: str) -> str:
    return html.split('id="progress" data-stage="', 1)[1].split('"', 1)[0] if 'id="progress"' in html else "none"


def test_approving_stores_the_decision_and_the_hand_off_and_applies_nothing_here(
    alice: TestClient, store: StateStore, resumer: list[str]
) -> None:
    p = make_proposal(store)
    # a free-text actor field is ignored: the decision is the signed-in person's
    resp = approve(alice, p.id, reason="matches the runbook", actor="mallory")
    assert resp.status_code == 303
    assert resp.headers["location"] == f"/proposals/{p.id}?flash=approved"
    decisions = store.decisions_for(p.id)
    assert [(d.verdict, d.actor, d.via, d.reason) for d in decisions] == [
        (Verdict.approve, "alice", "web", "matches the runbook")
    ]
    assert resumer == []  # nothing ran in the server: no resume, no background task
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert store.resume_requested() == [str(p.id)]  # the durable hand-off, stored with the decision

    page = alice.get(resp.headers["location"]).text
    assert 'id="status">approved<' in page and progress_of(page) == "waiting_for_worker"
    assert "waiting for the worker to apply it" in page and 'http-equiv="refresh" content="2"' in page

    assert work_once(store) == [str(p.id)]  # the worker picks it up
    page = alice.get(resp.headers["location"]).text
    assert 'id="status">verified<' in page and progress_of(page) == "verified"
    assert "Approved, and the agent has finished applying the change." in page  # it had, by the time of the GET
    assert 'http-equiv="refresh"' not in page
    assert 'id="decide"' not in page and 'id="needs"' not in page  # decided: no buttons, no "who must approve"
    assert 'id="outcome">' in page and "Approved by <strong>alice</strong>" in page
    assert 'id="rerun"' in page and "the re-run passed the contract" in page  # the verification, from the audit
    assert "<td>approve</td><td>alice</td><td>web</td>" in page  # history


def test_the_page_follows_the_worker_applying_and_re_running(alice: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    service.decide(p.id, Verdict.approve, "alice", resume=False)
    store.take_proposal_lease(p.id, "host-a:42")
    html = alice.get(f"/proposals/{p.id}").text
    assert progress_of(html) == "applying" and "applying the change (host-a:42)" in html
    assert 'http-equiv="refresh" content="2"' in html
    store.transition(p.id, ProposalStatus.applying, "supervisor", "applying")
    store.transition(p.id, ProposalStatus.applied, "supervisor", "applied")
    html = alice.get(f"/proposals/{p.id}").text
    assert progress_of(html) == "re_running" and "re-running the batch and verifying (host-a:42)" in html


def test_a_failed_apply_is_shown_and_a_person_may_ask_again(
    alice: TestClient, store: StateStore, resumer: list[str]
) -> None:
    p = make_proposal(store)
    approve(alice, p.id)
    assert work_once(store, fake_resumer.fail) == []  # the worker fails and gives up
    page = alice.get(f"/proposals/{p.id}").text
    assert store.get_proposal(p.id).status == ProposalStatus.approved and store.approved_decision(p.id)
    assert progress_of(page) == "needs_retry"
    assert "Applying the approved change failed" in page and "checkpoint database is locked" in page
    assert 'http-equiv="refresh"' not in page  # no endless refresh on a failure
    assert store.resume_requested() == []

    resp = alice.post(f"/proposals/{p.id}/resume", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=resuming")
    assert store.get_proposal(p.id).status == ProposalStatus.approved  # still nothing applied in the server
    assert store.resume_requested() == [str(p.id)]
    assert [(e.action, e.actor) for e in store.audit_entries(str(p.id))][-1] == ("resume_requested", "alice")
    assert work_once(store) == [str(p.id)]
    assert store.get_proposal(p.id).status == ProposalStatus.verified


def test_an_engineer_cannot_ask_the_worker_to_apply_again(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    service.decide(p.id, Verdict.approve, "alice", resume=False)
    work_once(store, fake_resumer.fail)
    sign_in(client, "dave", store)  # an engineer of every dataset: reads it, holds no approving role
    page = client.get(f"/proposals/{p.id}").text
    assert 'id="retry" disabled' in page and "dave cannot retry applying" in page
    before = snapshot(store)
    resp = client.post(f"/proposals/{p.id}/resume", data={"csrf_token": csrf_of(page)})
    assert resp.status_code == 403 and "needs owner or steward of flights" in resp.text
    assert snapshot(store) == before and store.resume_requested() == []


def test_reject_needs_a_reason_then_is_stored(alice: TestClient, store: StateStore, resumer: list[str]) -> None:
    p = make_proposal(store)
    before = snapshot(store)
    resp = reject(alice, p.id, "")
    assert resp.status_code == 400
    assert "needs a reason" in resp.text
    assert snapshot(store) == before

    resp = reject(alice, p.id, "units are hours")
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=rejected")
    assert store.get_proposal(p.id).status == ProposalStatus.rejected
    assert [(d.actor, d.reason) for d in store.decisions_for(p.id)] == [("alice", "units are hours")]
    assert resumer == []  # nothing runs in the server; the worker lets the graph end
    assert store.resume_requested() == [str(p.id)]
    work_once(store)
    assert store.get_proposal(p.id).status == ProposalStatus.rejected
    assert "Rejected." in alice.get(resp.headers["location"]).text


def test_second_decision_is_409_and_nothing_changes(alice: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    assert approve(alice, p.id).status_code == 303
    work_once(store)
    csrf = page_csrf(alice, f"/proposals/{p.id}")  # the page has no forms now; the session's token still works
    before = snapshot(store)
    for path, data in (("approve", {}), ("reject", {"reason": "late"})):
        resp = alice.post(f"/proposals/{p.id}/{path}", data={"csrf_token": csrf, **data})
        assert resp.status_code == 409
        assert f"proposal {p.short_id} is already verified" in resp.text
    assert snapshot(store) == before
    assert store.verify_audit().ok


def test_approver_without_the_role_is_403_and_nothing_changes(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    sign_in(client, "dave", store)  # an engineer: reads the inbox, cannot decide
    page = client.get(f"/proposals/{p.id}").text
    assert 'id="approve" disabled' in page and "dave cannot approve" in page  # shown before trying
    before = snapshot(store)
    resp = client.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf_of(page)})
    assert resp.status_code == 403
    assert "needs owner or steward of flights" in resp.text
    assert snapshot(store) == before


def test_two_person_rule_needs_a_steward_after_an_owner(
    client: TestClient, store: StateStore, resumer: list[str]
) -> None:
    high = pending_proposal(store, title="high risk mapping", risk=Risk.high)  # rule: an owner and a steward
    sign_in(client, "alice", store)
    resp = approve(client, high.id)
    assert resp.headers["location"].endswith("flash=approval_recorded")
    page = client.get(resp.headers["location"]).text
    assert "Your approval is recorded." in page
    assert 'id="needs">needs 1 more approval from: steward<' in page
    assert store.get_proposal(high.id).status == ProposalStatus.pending and resumer == []

    # another owner cannot fill the steward's seat: 403 naming what is needed, nothing changes
    carol = TestClient(create_app())
    sign_in(carol, "carol", store)
    before = snapshot(store)
    resp = carol.post(f"/proposals/{high.id}/approve", data={"csrf_token": page_csrf(carol, f"/proposals/{high.id}")})
    assert resp.status_code == 403
    assert "needs 1 more approval from: steward" in resp.text
    assert snapshot(store) == before

    bob = TestClient(create_app())
    sign_in(bob, "bob", store)
    resp = approve(bob, high.id)
    assert resp.headers["location"].endswith("flash=approved")
    assert store.get_proposal(high.id).status == ProposalStatus.approved and resumer == []
    assert work_once(store) == [str(high.id)]
    assert store.get_proposal(high.id).status == ProposalStatus.verified
    assert [d.actor for d in store.decisions_for(high.id)] == ["alice", "bob"]


def test_expired_proposal_is_409_and_nothing_changes(alice: TestClient, store: StateStore) -> None:
    p = pending_proposal(store, expires_at=utcnow() - timedelta(hours=1))
    before = snapshot(store)
    resp = approve(alice, p.id)
    assert resp.status_code == 409 and "expired" in resp.text
    assert snapshot(store) == before


def test_needs_human_proposal_offers_only_reject(alice: TestClient, store: StateStore) -> None:
    p = make_proposal(store, status=ProposalStatus.needs_human)
    html = alice.get(f"/proposals/{p.id}").text
    assert "No valid change: no incoming column matches dep_delay" in html
    assert "/approve" not in html and "/reject" in html
    assert alice.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf_of(html)}).status_code == 409


def test_unknown_id_is_404(alice: TestClient, store: StateStore) -> None:
    make_proposal(store)
    resp = alice.get("/proposals/ffffffff")
    assert resp.status_code == 404 and "no proposal &#39;ffffffff&#39; that you may read" in resp.text
    csrf = page_csrf(alice, "/")
    assert alice.post("/proposals/ffffffff/approve", data={"csrf_token": csrf}).status_code == 404


def test_healthz_and_static_are_open(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    css = client.get("/static/inbox.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_a_changed_approvers_file_is_read_again(monkeypatch: pytest.MonkeyPatch, tmp_path, store: StateStore) -> None:
    from pathlib import Path

    from pipewarden.settings import get_settings

    original = Path(get_settings().approvers_path).read_text()
    path = tmp_path / "approvers.yaml"
    path.write_text(original)
    monkeypatch.setenv("PIPEWARDEN_APPROVERS_FILE", str(path))
    get_settings.cache_clear()
    p = make_proposal(store)
    client = TestClient(create_app())
    sign_in(client, "zed", store)
    csrf = page_csrf(client, "/")
    refused = client.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf})
    assert refused.status_code == 404  # zed is nobody yet: may not even read it
    path.write_text(original + "  - {name: zed, roles: [owner], datasets: [flights]}\n")
    resp = approve(client, p.id)
    assert resp.status_code == 303 and store.decisions_for(p.id)[0].actor == "zed"


def test_the_decision_bar_comes_before_the_evidence_and_citations(alice: TestClient, store: StateStore) -> None:
    """What is proposed, the risk, who still must approve, whether you can, and the buttons: all above the change."""
    p = make_proposal(store)
    html = alice.get(f"/proposals/{p.id}").text
    bar = html.index('id="decision-bar"')
    assert bar < html.index('id="needs"') < html.index('id="approve"') < html.index('id="reject"') \
        < html.index('id="change"') < html.index('id="evidence"') < html.index('id="citations"')
    assert 'id="proposed"' in html and "Column mapping for flights: dep_delay_min \u2192 dep_delay" in html
    assert "You (alice) can approve." in html
    assert '<details class="citations">' in html  # folded
    assert "just now ago" not in html


def test_the_re_run_links_its_prefect_flow_run(alice: TestClient, store: StateStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    p = make_proposal(store)
    service.decide(p.id, Verdict.approve, "alice", resume=False)
    store.transition(p.id, ProposalStatus.applying, "worker", "applying")
    store.transition(p.id, ProposalStatus.applied, "worker", "applied")
    store.transition(p.id, ProposalStatus.verified, "worker", "the re-run passed its checks",
                     detail={"rerun_status": "completed", "load_id": "feb", "rows_in": 8, "rows_quarantined": 1,
                             "flow_run_id": "0b7c1e6e-0000-4000-8000-000000000001"})
    html = alice.get(f"/proposals/{p.id}").text
    assert "Verified by the re-run" in html and "<dt>rows in</dt><dd>8</dd>" in html
    assert "<dt>rows quarantined</dt><dd>1</dd>" in html
    assert 'href="http://127.0.0.1:4200/runs/flow-run/0b7c1e6e-0000-4000-8000-000000000001"' in html
    assert html.index('id="rerun"') < html.index('id="change"')
