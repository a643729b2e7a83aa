"""Slack and one fault, one proposal: when a repeat of an open proposal's fault attaches to it, a reply in the
proposal's thread says how many batches it now covers and which loads (the fake Slack Web API on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipewarden import ports
from pipewarden.agents.lifecycle import proposal_id_for, thread_id_for
from pipewarden.events import SchemaDrift
from pipewarden.fault_signature import fault_signature
from pipewarden.inbox import slack
from pipewarden.models import ColumnMapping, Proposal
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.fakes.slack_api import FakeSlack

TOKEN = "xoxb-test-bot-token"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack(token=TOKEN) as f:
        monkeypatch.setenv("PIPEWARDEN_SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("PIPEWARDEN_SLACK_API_URL", f.url)
        get_settings.cache_clear()
        yield f
    get_settings.cache_clear()


def drift(load_id: str) -> SchemaDrift:
    return SchemaDrift(dataset="flights", load_id=load_id, batch_path=f"/tmp/{load_id}.parquet",
                       contract_version="flights@v1", schema_fingerprint="fp-1")


def test_a_repeat_is_told_in_the_proposals_thread_with_the_count_and_the_loads(fake: FakeSlack) -> None:
    store = StateStore()
    first, second = drift("load-1"), drift("load-2")
    sig = fault_signature(first)
    assert sig is not None
    for ev in (first, second):
        store.append_event(ev)
    pid = proposal_id_for(str(first.id))
    store.attach_occurrence(first, sig, pid, "w")
    store.create_proposal(Proposal(
        id=pid, event_id=first.id, agent="schema-drift", dataset="flights", title="map it", diagnosis="renamed",
        change=ColumnMapping(dataset="flights", renames={"a": "b"}), thread_id=thread_id_for(str(first.id))))
    ports.proposal_created(pid)  # posted at the top of its channel, no reply: one load so far
    posted = store.slack_message_for(pid)
    assert posted is not None and len(fake.calls_to("chat.postMessage")) == 1

    store.attach_occurrence(second, sig, pid, "w")
    slack.notify("occurrence_attached", str(pid))
    replies = [c for c in fake.calls_to("chat.postMessage") if c.args.get("thread_ts")]
    assert len(replies) == 1
    reply = replies[0].args
    assert reply["channel"] == posted.channel and reply["thread_ts"] == posted.ts
    assert "2 batches" in reply["text"] and "load-1, load-2" in reply["text"]


def test_nothing_is_posted_for_a_proposal_not_posted_yet(fake: FakeSlack) -> None:
    store = StateStore()
    first, second = drift("load-1"), drift("load-2")
    sig = fault_signature(first)
    assert sig is not None
    for ev in (first, second):
        store.append_event(ev)
    pid = proposal_id_for(str(first.id))
    store.attach_occurrence(first, sig, pid, "w")
    store.attach_occurrence(second, sig, pid, "w")  # its agent still drafts the proposal
    assert slack.post_occurrence(str(pid), store=store) is False
    assert fake.calls_to("chat.postMessage") == []
