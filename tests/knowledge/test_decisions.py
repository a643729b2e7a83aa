"""Decided proposals as knowledge: their outcome read from the store, one chunk each with its provenance, readable
only by the dataset's readers, indexed at once when an index exists and rebuilt from the store when it did not."""

from __future__ import annotations

from pathlib import Path

from pipewarden.events import ColumnSpec, SchemaDrift
from pipewarden.knowledge.decisions import decision_chunk, index_decision, index_decisions, record_for
from pipewarden.knowledge.embedder import HashEmbedder
from pipewarden.knowledge.retrieval import search
from pipewarden.knowledge.store import QdrantStore
from pipewarden.models import ColumnMapping, Proposal, ProposalStatus, Verdict
from pipewarden.policies.approval import decision_gate
from pipewarden.store import StateStore


def _proposal(store: StateStore, dataset: str = "flights", renames: dict[str, str] | None = None) -> Proposal:
    event = SchemaDrift(dataset=dataset, load_id="load-1", batch_path="/data/b.csv", contract_version=f"{dataset}@v1",
                        added=[ColumnSpec(name="departureDelay", type="integer")],
                        dropped=[ColumnSpec(name="dep_delay", type="integer")], schema_fingerprint="fp-1")
    store.append_event(event)
    change = ColumnMapping(dataset=dataset, renames=renames or {"departureDelay": "dep_delay"},
                           source_fingerprint="fp-1")
    return store.create_proposal(Proposal(event_id=event.id, agent="schema_drift", dataset=dataset,
                                          title="map departureDelay to dep_delay", diagnosis="dep_delay was renamed.",
                                          change=change, thread_id=f"event-{event.id}"))


def _decide(store: StateStore, p: Proposal, verdict: Verdict, actor: str = "alice", reason: str = "") -> None:
    store.decide(p.id, verdict, actor, reason, policy=decision_gate())


def test_an_open_proposal_has_no_record_a_rejection_has_its_reason() -> None:
    store = StateStore()
    p = _proposal(store)
    assert record_for(p.id) is None
    _decide(store, p, Verdict.reject, reason="the feed renames it back tomorrow")
    r = record_for(p.id)
    assert r is not None and (r.outcome, r.actor, r.reason) == ("rejected", "alice", "the feed renames it back tomorrow")
    assert r.fault == "flights schema_drift: fp-1"
    c = decision_chunk(r)
    assert (c.kind, c.source, c.dataset, c.owner, c.lineage) == ("decision", f"proposal:{p.id}", "flights", "alice",
                                                                  ["flights"])
    assert c.updated_at == store.decisions_for(p.id)[-1].decided_at  # freshness: when it was decided
    assert c.allowed_roles == ["analyst", "engineer", "owner", "steward"]  # the flights contract's readers
    assert "rejected by alice: the feed renames it back tomorrow" in c.text and "departureDelay" in c.text


def test_an_approval_rolled_back_is_not_accepted_and_a_verified_one_is() -> None:
    store = StateStore()
    p = _proposal(store)
    _decide(store, p, Verdict.approve)
    assert record_for(p.id).outcome == "accepted" and not record_for(p.id).verified
    store.transition(p.id, ProposalStatus.applying, "applier")
    store.transition(p.id, ProposalStatus.applied, "applier")
    store.transition(p.id, ProposalStatus.rolled_back, "applier", "re-run halted at validate")
    store.transition(p.id, ProposalStatus.pending, "applier", "re-opened: re-run halted at validate")
    r = record_for(p.id)
    assert (r.outcome, r.actor, r.reason) == ("rolled_back", "alice", "re-run halted at validate")
    assert "then rolled back: re-run halted at validate" in decision_chunk(r).text
    _decide(store, p, Verdict.approve, actor="carol")  # a new round, approved again, and this time it holds
    for status in (ProposalStatus.applying, ProposalStatus.applied, ProposalStatus.verified):
        store.transition(p.id, status, "applier")
    r = record_for(p.id)
    assert (r.outcome, r.actor, r.verified, r.rollbacks) == ("accepted", "carol", True, ["re-run halted at validate"])


def test_a_decision_is_readable_only_by_the_datasets_readers(pw_project: Path, tmp_path: Path) -> None:
    contract = pw_project / "contracts" / "airlines.yaml"
    contract.write_text(contract.read_text().replace("allowed_roles: [owner, steward, engineer, analyst]",
                                                     "allowed_roles: [owner, steward]"))
    store = StateStore()
    p = _proposal(store, dataset="airlines", renames={"departureDelay": "name"})
    _decide(store, p, Verdict.reject, reason="airline names never change")
    emb, qdrant = HashEmbedder(), QdrantStore(path=tmp_path / "qdrant")
    assert index_decision(p.id, emb, qdrant).added == 1
    query = "airlines decision rejected airline names never change"
    assert [h.chunk.source for h in search(query, role="steward", embedder=emb, store=qdrant)] == [f"proposal:{p.id}"]
    assert search(query, role="analyst", embedder=emb, store=qdrant) == []
    assert search(query, role="engineer", embedder=emb, store=qdrant, kinds=["decision"]) == []


def test_indexing_failure_loses_nothing_the_next_index_rebuilds_it(tmp_path: Path) -> None:
    store = StateStore()
    p = _proposal(store)
    _decide(store, p, Verdict.reject, reason="wait for the upstream fix")
    emb, folder = HashEmbedder(), tmp_path / "qdrant"
    with QdrantStore(path=folder):  # another process holds the local folder: indexing now fails
        assert index_decision(p.id, emb, QdrantStore(path=folder, lock_wait_s=0.1)) is None
    assert StateStore().get_proposal(p.id).status == ProposalStatus.rejected  # the decision stands
    assert index_decision(p.id) is None  # no index built, none given: skipped, the next build includes it
    qdrant = QdrantStore(path=folder)
    first = index_decisions(emb, qdrant)
    assert (first.added, first.total) == (1, 1)
    again = index_decisions(emb, qdrant)
    assert (again.added, again.unchanged, again.total) == (0, 1, 1)
    hits = search("wait for the upstream fix", role="engineer", embedder=emb, store=qdrant)
    assert hits and hits[0].chunk.source == f"proposal:{p.id}"
