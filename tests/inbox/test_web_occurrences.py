"""The proposal page and one fault, one proposal: a proposal that absorbed repeats of its fault shows how many
batches it covers and which loads; a proposal of one load shows no such block."""

from __future__ import annotations

from fastapi.testclient import TestClient

from pipewarden.events import SchemaDrift
from pipewarden.fault_signature import FaultSignature
from pipewarden.inbox.web import create_app
from pipewarden.store import StateStore
from tests.inbox.conftest import make_proposal
from tests.inbox.web_client import sign_in


def test_the_page_shows_the_batches_and_loads_a_proposal_covers(store: StateStore) -> None:
    alice = TestClient(create_app())
    sign_in(alice, "alice", store)
    p = make_proposal(store)
    single = alice.get(f"/proposals/{p.id}").text
    assert 'id="occurrences"' not in single

    sig = FaultSignature(dataset="flights", kind="schema_drift", fault="fp-1")
    assert store.attach_occurrence(store.get_event(p.event_id), sig, p.id, "w").role == "origin"
    repeat = SchemaDrift(dataset="flights", load_id="load-0043", batch_path="/data/flights_0043.csv",
                         contract_version="flights@v1", schema_fingerprint="fp-1")
    store.append_event(repeat)
    assert store.attach_occurrence(repeat, sig, p.id, "w").role == "attached"
    html = alice.get(f"/proposals/{p.id}").text
    assert 'id="occurrences"' in html and "Seen in 2 batches" in html
    assert "<code>load-0042</code>" in html and "<code>load-0043</code>" in html
