"""Who may read what: a person sees, in the pages and the API, only the proposals of the datasets where
approvers.yaml gives them a role (any but reporter). Anything else is the same 404 as an id that does not exist,
the queue's counts do not name the other datasets, and nothing can be decided on them."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from pipewarden.inbox.web import create_app
from pipewarden.store import StateStore
from tests.inbox.conftest import make_proposal
from tests.inbox.web_client import bearer, page_csrf, sign_in, snapshot
from tests.pipewarden.factories import pending_proposal


def test_an_owner_reads_only_their_datasets_in_the_pages(store: StateStore) -> None:
    flights = make_proposal(store, title="a flights proposal")
    planes = pending_proposal(store, dataset="planes", title="a planes proposal")
    alice = TestClient(create_app())
    sign_in(alice, "alice", store)  # owner of flights, airlines, airports
    queue = alice.get("/?status=all").text
    assert "a flights proposal" in queue and "a planes proposal" not in queue
    section = queue.split('id="facet-dataset"', 1)[1].split("</section>", 1)[0]
    assert "flights" in section and "planes" not in section  # the counts do not name others' datasets
    assert alice.get(f"/proposals/{flights.id}").status_code == 200
    hidden = alice.get(f"/proposals/{planes.id}")
    assert hidden.status_code == 404 and "that you may read" in hidden.text and "planes" not in hidden.text
    assert alice.get("/?dataset=planes").text.count("a planes proposal") == 0
    before = snapshot(store)
    resp = alice.post(f"/proposals/{planes.id}/approve", data={"csrf_token": page_csrf(alice, "/")})
    assert resp.status_code == 404 and snapshot(store) == before


def test_the_api_reads_and_decides_only_on_the_callers_datasets(store: StateStore) -> None:
    flights = make_proposal(store)
    planes = pending_proposal(store, dataset="planes")
    client = TestClient(create_app())
    frank = bearer(store.issue_token("frank"))  # owner of planes and weather
    listed = client.get("/api/proposals", headers=frank).json()
    assert [p["id"] for p in listed["proposals"]] == [str(planes.id)] and listed["count"] == 1
    assert set(listed["facets"]["dataset"]) == {"planes"}
    assert client.get(f"/api/proposals/{flights.id}", headers=frank).status_code == 404
    before = snapshot(store)
    refused = client.post(f"/api/proposals/{flights.id}/decision", headers=frank, json={"verdict": "approve"})
    assert refused.status_code == 404 and "that you may read" in refused.json()["error"]
    assert snapshot(store) == before
    # the unknown-id answer lists no ids either (it used to suggest existing ones)
    unknown = client.get("/api/proposals/ffffffff", headers=frank).json()
    assert not re.search(str(flights.id)[:8], unknown["error"] + unknown["hint"])


def test_a_steward_of_every_dataset_reads_everything_and_a_reporter_nothing(store: StateStore,
                                                                           pw_project: Path) -> None:
    approvers = pw_project / "approvers.yaml"
    approvers.write_text(approvers.read_text() + "  - {name: ingest-bot, roles: [reporter], datasets: ['*']}\n")
    make_proposal(store)
    pending_proposal(store, dataset="planes")
    client = TestClient(create_app())
    bob = bearer(store.issue_token("bob"))  # steward of "*"
    assert client.get("/api/proposals", headers=bob).json()["count"] == 2
    reporter = bearer(store.issue_token("ingest-bot"))  # reports events on every dataset
    body = client.get("/api/proposals", headers=reporter).json()
    assert body["count"] == 0 and body["proposals"] == [] and body["facets"]["dataset"] == {}
