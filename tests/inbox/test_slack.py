"""Slack end to end: proposals posted by the real `slack_sdk` client to a local fake of Slack's Web API, and
properly signed interactions through the web app's real `POST /slack/events` route (slack-bolt).

Each test waits for the work bolt does after its acknowledgement by watching the fake's recorded calls (with a
timeout that only turns a hang into a failure); nothing here measures time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pipewarden import ports, runtime
from pipewarden.errors import ConfigError
from pipewarden.inbox import slack
from pipewarden.inbox import slack_blocks as sb
from pipewarden.inbox.web import create_app
from pipewarden.models import ColumnMapping, Proposal, ProposalStatus, Risk, Verdict
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.fakes.runtimes import swap
from tests.fakes.slack_api import (
    FakeSlack,
    SlackMessage,
    block_actions_payload,
    form_body,
    signed_headers,
    view_submission_payload,
)
from tests.inbox.conftest import make_proposal
from tests.inbox.web_client import work_once
from tests.pipewarden.factories import drift_event, pending_proposal

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-test-bot-token"
PUBLIC = "https://inbox.example.test"
ALICE = "U0FLIGHTS"  # owner of flights (examples/flights/approvers.yaml)
BOB = "U0STEWARD"  # steward of every dataset
DAVE = "U0ENGINEER"  # engineer: no approval rights


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token=TOKEN) as f:
        yield f


@pytest.fixture
def slack_on(fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> FakeSlack:
    monkeypatch.setenv("PIPEWARDEN_SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("PIPEWARDEN_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("PIPEWARDEN_SLACK_API_URL", fake.url)
    monkeypatch.setenv("PIPEWARDEN_PUBLIC_URL", PUBLIC)
    get_settings.cache_clear()
    return fake


@pytest.fixture
def client(slack_on: FakeSlack) -> TestClient:
    return TestClient(create_app())


def created(store: StateStore, **kw: Any) -> Proposal:
    """A proposal stored the way an agent stores it, then announced through the kernel's hook (as `submit` does)."""
    p = make_proposal(store, **kw)
    ports.proposal_created(p.id)
    return p


def post(client: TestClient, payload: dict[str, Any], *, timestamp: int | None = None,
         secret: str = SECRET) -> Any:
    body = form_body(payload)
    return client.post("/slack/events", content=body, headers=signed_headers(secret, body, timestamp=timestamp))


def click(client: TestClient, fake: FakeSlack, p: Proposal, user: str, action: str, **kw: Any) -> Any:
    posted = StateStore().slack_message_for(p.id)
    assert posted is not None, "the proposal was never posted"
    payload = block_actions_payload(user_id=user, action_id=action, value=str(p.id), channel=posted.channel,
                                    message_ts=posted.ts)
    return post(client, payload, **kw)


def message_of(fake: FakeSlack, p: Proposal) -> SlackMessage:
    posted = StateStore().slack_message_for(p.id)
    assert posted is not None
    return fake.message(posted.channel, posted.ts)


def blocks_of(msg: SlackMessage) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in msg.blocks}


def wait_for_status(fake: FakeSlack, p: Proposal, word: str) -> SlackMessage:
    fake.wait_until(lambda f: word in message_of(f, p).text, f"the message of {p.short_id} to say {word!r}")
    return message_of(fake, p)


def snapshot(store: StateStore) -> dict[str, Any]:
    """Everything a refused request must leave as it was: the queue, decisions, versions and the audit log."""
    proposals = store.list_proposals()
    return {
        "queue": [(str(p.id), p.status.value) for p in proposals],
        "decisions": [d.model_dump() for p in proposals for d in store.decisions_for(p.id)],
        "versions": store.list_versions("mapping:flights"),
        "audit": [(e.seq, e.action, e.hash) for e in store.audit_entries()],
    }


# --------------------------------------------------------------------------- posting
def test_a_new_proposal_is_posted_to_its_owners_channel_with_its_evidence(slack_on: FakeSlack,
                                                                           store: StateStore) -> None:
    p = created(store)
    (call,) = slack_on.calls_to("chat.postMessage")
    assert call.args["channel"] == "#flights-data"  # alice owns flights and names this channel
    assert call.token == TOKEN
    posted = store.slack_message_for(p.id)
    assert posted is not None and posted.channel == slack_on.channel_id("#flights-data")
    assert posted.thread_ts is None and posted.fault_key == "schema_drift:flights:mapping:flights"
    blocks = blocks_of(message_of(slack_on, p))
    assert blocks["title"]["text"]["text"] == p.title
    facts = " ".join(f["text"] for f in blocks["facts"]["fields"])
    assert "schema_drift" in facts and "`flights`" in facts and "low" in facts
    assert "needs 1 more approval from: owner or steward (alice, carol, bob)" in facts
    assert f"<{PUBLIC}/proposals/{p.id}|{p.short_id}>" in facts
    assert "`dep_delay_min` → `dep_delay`" in blocks["change"]["text"]["text"]
    assert "Before: :x: failed — 120 rows" in blocks["dry_run"]["text"]["text"]
    assert "After: :white_check_mark: passed" in blocks["dry_run"]["text"]["text"]
    assert [(b["action_id"], b["value"]) for b in blocks["decide"]["elements"]] == [
        ("approve", str(p.id)), ("reject", str(p.id))]


def test_a_repeated_fault_goes_to_the_first_messages_thread(slack_on: FakeSlack, store: StateStore) -> None:
    first = created(store)
    again = created(store, title="The same drift, next batch")
    other = pending_proposal(store)  # another agent and fault: a message of its own
    ports.proposal_created(other.id)
    posts = slack_on.calls_to("chat.postMessage")
    assert len(posts) == 3
    head = store.slack_message_for(first.id)
    reply = store.slack_message_for(again.id)
    assert head is not None and reply is not None
    assert posts[1].args["thread_ts"] == head.ts and reply.thread_ts == head.ts and reply.ts != head.ts
    assert message_of(slack_on, again).thread_ts == head.ts
    assert message_of(slack_on, again).text.startswith("Again: ")
    assert len(slack_on.top_level()) == 2  # the first proposal and the other fault; the repeat is threaded


def test_posting_twice_for_one_proposal_posts_once(slack_on: FakeSlack, store: StateStore) -> None:
    p = created(store)
    slack.notify("proposal_created", str(p.id))
    assert len(slack_on.calls_to("chat.postMessage")) == 1


def test_the_channel_comes_from_slack_yaml_then_the_owner_then_the_default(tmp_path: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.policies.approvers import Approvers

    approvers = Approvers.load()
    chosen = slack.SlackChannels(default_channel="#inbox", channels={"planes": "#aircraft"})
    assert slack.channel_for("planes", approvers, chosen) == "#aircraft"
    assert slack.channel_for("flights", approvers, chosen) == "#flights-data"
    assert slack.channel_for("unknown_dataset", approvers, chosen) == "#inbox"
    bad = tmp_path / "slack.yaml"
    bad.write_text("default_channel: '#x'\nchanels: {}\n")
    with pytest.raises(ConfigError, match=r"slack\.yaml: field 'chanels'"):
        slack.SlackChannels.load(bad)


# --------------------------------------------------------------------------- approving
def test_an_owner_approves_with_a_click(state_url: str, client: TestClient, slack_on: FakeSlack,
                                        resumer: list[str]) -> None:
    store = StateStore()
    p = created(store)
    resp = click(client, slack_on, p, ALICE, "approve")
    assert resp.status_code == 200 and resp.text == ""  # the ack: an empty 200
    msg = wait_for_status(slack_on, p, "approved")
    (decision,) = store.decisions_for(p.id)
    assert (decision.actor, decision.verdict, decision.via) == ("alice", Verdict.approve, "slack")
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert resumer == [] and store.resume_requested() == [str(p.id)]  # handed to the worker, not applied here
    assert "decide" not in blocks_of(msg)  # decided: the buttons are gone at once
    assert work_once(store) == [str(p.id)]  # the supervisor's worker applies it and tells Slack
    msg = wait_for_status(slack_on, p, "applied and verified")
    assert store.get_proposal(p.id).status == ProposalStatus.verified
    blocks = blocks_of(msg)
    assert "decide" not in blocks  # the buttons are gone
    assert "Approved by *alice* via slack" in blocks["decisions"]["text"]["text"]
    assert "Applied and verified" in blocks["outcome"]["text"]["text"]
    assert slack_on.calls_to("chat.postEphemeral") == []
    assert slack_on.calls_to("auth.test") == []  # no Slack API round trip on the way to the ack


def test_a_click_without_the_role_is_refused_in_slack_and_changes_nothing(client: TestClient, slack_on: FakeSlack,
                                                                          store: StateStore,
                                                                          resumer: list[str]) -> None:
    p = created(store)
    before = snapshot(store)
    resp = click(client, slack_on, p, DAVE, "approve")
    assert resp.status_code == 200
    (eph,) = slack_on.wait_for("chat.postEphemeral")
    assert eph.args["user"] == DAVE and eph.args["channel"] == slack_on.channel_id("#flights-data")
    text = eph.args["text"]
    assert "You can't approve this" in text and "needs owner or steward of flights" in text
    assert "ask alice, carol, bob" in text
    assert snapshot(store) == before
    assert slack_on.calls_to("chat.update") == [] and resumer == []


def test_a_slack_user_who_is_no_approver_is_told_how_to_become_one(client: TestClient, slack_on: FakeSlack,
                                                                   store: StateStore) -> None:
    p = created(store)
    before = snapshot(store)
    assert click(client, slack_on, p, "U0STRANGER", "approve").status_code == 200
    (eph,) = slack_on.wait_for("chat.postEphemeral")
    assert "is not an approver" in eph.args["text"] and "slack_user_id: U0STRANGER" in eph.args["text"]
    assert snapshot(store) == before


def test_the_ack_is_sent_before_the_decision_and_nothing_is_applied_in_the_server(
        client: TestClient, slack_on: FakeSlack, store: StateStore, use_resumer: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = created(store)
    use_resumer(blocking_resume)  # would show up in `order` if the server resumed
    swap(monkeypatch, notifier=blocking_notify)
    BLOCKING.update(order=[], release=threading.Event())
    resp = click(client, slack_on, p, ALICE, "approve")
    BLOCKING["order"].append("http response")
    BLOCKING["release"].set()
    assert resp.status_code == 200
    deadline = time.monotonic() + 10
    while "notified (decision stored)" not in BLOCKING["order"] and time.monotonic() < deadline:
        time.sleep(0.02)
    # The work after the ack (decide, then notify) waited for the test, which released it only once the response
    # was in: had the ack waited for the work, "notify timed out" would come before the response.
    order = BLOCKING["order"]
    assert "notify timed out" not in order and order.index("http response") < order.index("notified (decision stored)")
    assert not any(o.startswith("resume") for o in order)  # the server never resumes: the worker does
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert store.resume_requested() == [str(p.id)]


BLOCKING: dict[str, Any] = {"order": [], "release": threading.Event()}


def blocking_resume(proposal_id: str) -> Proposal:
    """A Resumer that records being called: the server must never call it."""
    BLOCKING["order"].append("resume started")
    return StateStore().get_proposal(proposal_id)


def blocking_notify(kind: str, proposal_id: str) -> None:
    """A Notifier that waits for the test to release it (at most 10 s) and records whether the decision was
    stored before it ran."""
    if kind != "proposal_decided":
        return
    released = BLOCKING["release"].wait(timeout=10)
    stored = StateStore().approved_decision(proposal_id) is not None
    BLOCKING["order"].append(("notified (decision stored)" if stored else "notified (NO decision)")
                             if released else "notify timed out")


def test_two_person_rule_keeps_the_buttons_and_says_who_is_missing(client: TestClient, slack_on: FakeSlack,
                                                                   store: StateStore) -> None:
    ev = drift_event()
    store.append_event(ev)
    p = store.create_proposal(Proposal(
        event_id=ev.id, agent="schema_drift", dataset="flights", title="Drop the dep_delay bounds", diagnosis="d",
        change=ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}), risk=Risk.high,
        thread_id=f"t-{ev.id}"))
    ports.proposal_created(p.id)
    assert click(client, slack_on, p, ALICE, "approve").status_code == 200
    slack_on.wait_for("chat.update")
    blocks = blocks_of(message_of(slack_on, p))
    assert "Approved by *alice* via slack" in blocks["decisions"]["text"]["text"]
    facts = " ".join(f["text"] for f in blocks["facts"]["fields"])
    assert "needs 1 more approval from: steward (bob)" in facts
    assert [b["action_id"] for b in blocks["decide"]["elements"]] == ["approve", "reject"]
    assert store.get_proposal(p.id).status == ProposalStatus.pending


# --------------------------------------------------------------------------- rejecting
def test_reject_opens_a_modal_and_its_submission_stores_the_reason(client: TestClient, slack_on: FakeSlack,
                                                                   store: StateStore) -> None:
    p = created(store)
    assert click(client, slack_on, p, BOB, "reject").status_code == 200
    (opened,) = slack_on.wait_for("views.open")
    assert opened.args["trigger_id"] == "1337.42.trigger"
    view = opened.args["view"]
    assert view["callback_id"] == sb.REJECT_CALLBACK
    assert store.decisions_for(p.id) == []  # the click alone decides nothing

    empty = view_submission_payload(user_id=BOB, view=view, values={sb.REASON_BLOCK: {sb.REASON_INPUT: {
        "type": "plain_text_input", "value": "  "}}})
    resp = post(client, empty)
    assert resp.status_code == 200
    assert resp.json() == {"response_action": "errors", "errors": {
        sb.REASON_BLOCK: "Say why (at least 3 characters): the next agent reads this reason."}}
    assert store.decisions_for(p.id) == []

    reason = "departureDelay is in minutes; cast it, do not rename"
    filled = view_submission_payload(user_id=BOB, view=view, values={sb.REASON_BLOCK: {sb.REASON_INPUT: {
        "type": "plain_text_input", "value": reason}}})
    resp = post(client, filled)
    assert resp.status_code == 200 and resp.text == ""  # the ack closes the modal
    msg = wait_for_status(slack_on, p, "(rejected)")
    (decision,) = store.decisions_for(p.id)
    assert (decision.actor, decision.verdict, decision.reason, decision.via) == ("bob", Verdict.reject, reason,
                                                                                 "slack")
    assert store.get_proposal(p.id).status == ProposalStatus.rejected
    blocks = blocks_of(msg)
    assert "decide" not in blocks and "Rejected by *bob* via slack" in blocks["decisions"]["text"]["text"]
    assert "cast it, do not rename" in blocks["decisions"]["text"]["text"]


def test_a_reject_click_without_the_role_opens_no_modal(client: TestClient, slack_on: FakeSlack,
                                                        store: StateStore) -> None:
    p = created(store)
    before = snapshot(store)
    assert click(client, slack_on, p, DAVE, "reject").status_code == 200
    (eph,) = slack_on.wait_for("chat.postEphemeral")
    assert "You can't reject this" in eph.args["text"]
    assert slack_on.calls_to("views.open") == [] and snapshot(store) == before


# --------------------------------------------------------------------------- decided elsewhere
def test_a_decision_in_the_cli_updates_the_slack_message(slack_on: FakeSlack, store: StateStore) -> None:
    from pipewarden.cli import app

    p = created(store)
    token = store.issue_token("carol")
    result = CliRunner().invoke(app, ["inbox", "approve", p.short_id, "--as", "carol"],
                                env={"PIPEWARDEN_TOKEN": token})
    assert result.exit_code == 0, result.output
    msg = message_of(slack_on, p)  # the CLI notifies synchronously: no waiting
    blocks = blocks_of(msg)
    assert "Approved by *carol* via cli" in blocks["decisions"]["text"]["text"]
    assert "decide" not in blocks and "applied and verified" in msg.text
    assert msg.updates >= 1


def test_a_click_on_a_proposal_decided_elsewhere_says_so_and_refreshes_the_message(
        client: TestClient, slack_on: FakeSlack, store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.inbox import service

    p = created(store)
    with runtime.use(runtime.current().replace(notifier=lambda kind, pid: None)):  # Slack missed this decision...
        service.decide(p.id, Verdict.reject, "carol", "not needed", via="web")
    assert "decide" in blocks_of(message_of(slack_on, p))  # ...so its message still shows the buttons
    assert click(client, slack_on, p, ALICE, "approve").status_code == 200
    (eph,) = slack_on.wait_for("chat.postEphemeral")
    assert "already rejected" in eph.args["text"]
    wait_for_status(slack_on, p, "(rejected)")  # the click refreshed it
    assert [d.actor for d in store.decisions_for(p.id)] == ["carol"]


# --------------------------------------------------------------------------- refused requests
def test_a_forged_signature_is_401_and_changes_nothing(client: TestClient, slack_on: FakeSlack,
                                                       store: StateStore) -> None:
    p = created(store)
    before = snapshot(store)
    resp = click(client, slack_on, p, ALICE, "approve", secret="not-the-signing-secret")
    assert resp.status_code == 401 and resp.json() == {"error": "invalid request"}
    unsigned = client.post("/slack/events", content=form_body({"type": "block_actions"}),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401
    assert snapshot(store) == before
    assert [c.method for c in slack_on.calls] == ["chat.postMessage"]  # nothing after the post


def test_a_stale_timestamp_is_401_and_changes_nothing(client: TestClient, slack_on: FakeSlack,
                                                      store: StateStore) -> None:
    p = created(store)
    before = snapshot(store)
    resp = click(client, slack_on, p, ALICE, "approve", timestamp=int(time.time()) - 6 * 60)
    assert resp.status_code == 401
    assert snapshot(store) == before and [c.method for c in slack_on.calls] == ["chat.postMessage"]


def test_a_replayed_request_is_refused(state_url: str, client: TestClient, slack_on: FakeSlack) -> None:
    store = StateStore()
    p = created(store)
    posted = store.slack_message_for(p.id)
    assert posted is not None
    # A person without the role, so the first request changes nothing either: the replay is refused as such.
    body = form_body(block_actions_payload(user_id=DAVE, action_id="approve", value=str(p.id),
                                           channel=posted.channel, message_ts=posted.ts))
    headers = signed_headers(SECRET, body)
    assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    slack_on.wait_for("chat.postEphemeral")
    before = snapshot(store)
    again = client.post("/slack/events", content=body, headers=headers)
    assert again.status_code == 401
    assert again.json()["error"] == "replayed request: this signature was already used"
    assert snapshot(store) == before
    assert len(slack_on.calls_to("chat.postEphemeral")) == 1


def test_oversized_and_malformed_bodies_are_refused(client: TestClient, slack_on: FakeSlack) -> None:
    big = "payload=" + "x" * (slack.MAX_BODY_BYTES + 1)
    resp = client.post("/slack/events", content=big, headers=signed_headers(SECRET, big))
    assert resp.status_code == 413 and "over" in resp.json()["error"]
    chunked = client.post("/slack/events", content=iter([b"payload=", b"x" * slack.MAX_BODY_BYTES]))  # no length
    assert chunked.status_code == 413
    bad = "payload={not json"
    resp = client.post("/slack/events", content=bad, headers=signed_headers(SECRET, bad))
    assert resp.status_code == 400 and "malformed Slack request body" in resp.json()["error"]


# --------------------------------------------------------------------------- Slack off, Slack down
def test_without_a_token_notify_does_nothing_and_the_route_says_what_to_set(fake: FakeSlack,
                                                                            store: StateStore) -> None:
    p = make_proposal(store)
    slack.notify("proposal_created", str(p.id))
    ports.proposal_created(p.id)
    assert fake.calls == [] and store.slack_message_for(p.id) is None
    resp = TestClient(create_app()).post("/slack/events", content="payload={}")
    assert resp.status_code == 503 and "PIPEWARDEN_SLACK_SIGNING_SECRET" in resp.json()["hint"]


def test_a_slack_failure_is_audited_and_never_breaks_a_decision(slack_on: FakeSlack, store: StateStore,
                                                                resumer: list[str]) -> None:
    from pipewarden.inbox import service

    slack_on.fail("chat.postMessage", "channel_not_found")
    p = created(store)
    assert store.slack_message_for(p.id) is None
    failed = [e for e in store.audit_entries(str(p.id)) if e.action == slack.SLACK_FAILED]
    assert len(failed) == 1 and "channel_not_found" in failed[0].detail["error"]
    assert failed[0].detail["call"] == "chat.postMessage"

    q = created(store, title="second")  # posted; then every update fails
    slack_on.fail("chat.update", "fatal_error", times=100)
    outcome = service.decide(q.id, Verdict.approve, "alice", via="web")
    assert outcome.proposal.status == ProposalStatus.verified and resumer == [str(q.id)]
    errors = [e.detail for e in store.audit_entries(str(q.id)) if e.action == slack.SLACK_FAILED]
    assert errors and {e["call"] for e in errors} == {"chat.update"} and "fatal_error" in errors[0]["error"]

    slack_on.stop()  # Slack unreachable: a refused connection is audited the same way
    slack.notify("proposal_updated", str(q.id))
    last = store.audit_entries(str(q.id))[-1]
    assert last.action == slack.SLACK_FAILED and "Connection refused" in last.detail["error"]
    assert store.verify_audit().ok


def test_the_fakes_signatures_match_slacks_own_verifier() -> None:
    """The fake's signing matches Slack's (and bolt's) verifier: the same helper other tests rely on."""
    from slack_sdk.signature import SignatureVerifier

    body = form_body({"type": "block_actions", "x": json.dumps({"y": 1})})
    h = signed_headers(SECRET, body)
    assert SignatureVerifier(SECRET).is_valid(body, h["X-Slack-Request-Timestamp"], h["X-Slack-Signature"])
    assert not SignatureVerifier("other").is_valid(body, h["X-Slack-Request-Timestamp"], h["X-Slack-Signature"])


def test_the_fake_answers_like_slack_for_the_calls_we_make(fake: FakeSlack) -> None:
    """The fake keeps Slack's contract where our code depends on it: tokens, channel ids, threads, errors."""
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    web = WebClient(token=TOKEN, base_url=fake.url)
    assert web.auth_test()["user_id"] == "U0PWBOT"
    with pytest.raises(SlackApiError, match="invalid_auth"):
        WebClient(token="xoxb-wrong", base_url=fake.url).auth_test()
    top = web.chat_postMessage(channel="#flights-data", text="hello")
    assert top["channel"].startswith("C") and top["channel"] == fake.channel_id("#flights-data")
    with pytest.raises(SlackApiError, match="channel_not_found"):  # updates take the channel id, not its name
        web.chat_update(channel="#flights-data", ts=top["ts"], text="edited")
    with pytest.raises(SlackApiError, match="thread_not_found"):
        web.chat_postMessage(channel=top["channel"], thread_ts="1.000000", text="reply")
    web.chat_update(channel=top["channel"], ts=top["ts"], text="edited")
    assert fake.message(top["channel"], top["ts"]).text == "edited"


def test_the_supervisor_worker_tells_slack_how_a_resume_ended(client: TestClient, slack_on: FakeSlack,
                                                              resumer: list[str]) -> None:
    from pipewarden.agents.supervisor import supervise_once

    store = StateStore()
    p = created(store)
    click(client, slack_on, p, ALICE, "approve")
    wait_for_status(slack_on, p, "approved")
    report = supervise_once(worker="test-worker", limit=0)  # the real loop, resumes only (no event claimed)
    assert [(r.proposal_id, r.status) for r in report.resumed] == [(str(p.id), "verified")]
    assert resumer == [str(p.id)]  # through the Resumer port
    msg = message_of(slack_on, p)  # the worker notifies synchronously: no waiting
    assert "applied and verified" in msg.text
    assert "Applied and verified" in blocks_of(msg)["outcome"]["text"]["text"]
