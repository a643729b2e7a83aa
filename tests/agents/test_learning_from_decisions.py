"""Agents learn from decisions, through the supervisor, on real batches: the real store, checkpoints, Qdrant local
mode and the packaged MiniLM embedder. A change a person rejected for a fault is never proposed again for that
fault (the next alternative, else a needs-a-human proposal naming the rejection); a change people accepted for it
comes first; a rolled-back change is not an accepted one. Every precedent is cited."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipewarden.agents.supervisor import supervise_once
from pipewarden.evals.mock_llm import MockLLMServer, answer
from pipewarden.flows import data as D
from pipewarden.inbox.service import approve, reject
from pipewarden.knowledge.retrieval import search
from pipewarden.models import Proposal, ProposalStatus
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.agents import fake_runner, quality_runner
from tests.agents.conftest import drifted_event
from tests.agents.test_quality_agent import _llm, history_home, m3  # noqa: F401  # the quality agent's world
from tests.fakes.runtimes import swap
from tests.quality_history import land_and_check

NEVER_LOOSEN = "delays over 1500 minutes are sensor errors; never loosen dep_delay"


@pytest.fixture
def knowledge_index() -> None:
    """A knowledge index exists (the flights contract, in Qdrant local mode in the home), as `supervise` builds it."""
    from pipewarden.knowledge.documents import contract_chunks
    from pipewarden.knowledge.index import index_chunks
    from pipewarden.policies.contract import load_contract

    index_chunks(contract_chunks(load_contract("flights")))


def _decision_cites(p: Proposal, precedent: Proposal) -> list:
    return [c for c in p.citations if c.kind == "decision" and c.source == f"proposal:{precedent.id}"]


def _quality_proposal(df: pd.DataFrame, folder: Path, name: str, seed: int | None = None) -> Proposal:
    """Land a batch (shuffled by `seed`: the same fault in a new load, not the same bytes twice) and propose."""
    if seed is not None:
        df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    land_and_check(df, folder, name)
    report = supervise_once()
    [handled] = [h for h in report.handled if h.proposal_id]
    assert handled.agent == "quality" and handled.status != "attached", report.lines()
    return StateStore().get_proposal(handled.proposal_id)


def test_a_rejected_mapping_is_not_proposed_again_the_proposal_names_the_rejection(
    february: pd.DataFrame, tmp_path: Path, knowledge_index: None
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first = drifted_event(february, tmp_path / "1")
    supervise_once()
    p1 = StateStore().proposal_for_event(first.id)
    assert p1.change.kind == "column_mapping"
    reject(p1.id, "alice", reason="the feed renames it back tomorrow; wait for it")
    # indexed as soon as it was decided, with its provenance
    [hit] = search("departureDelay rejected feed renames it back", role="engineer", kinds=["decision"])
    assert hit.chunk.source == f"proposal:{p1.id}" and hit.chunk.owner == "alice" and "renames it back" in hit.chunk.text

    later = february.sample(frac=1.0, random_state=3).reset_index(drop=True)
    second = drifted_event(later, tmp_path / "2")  # the same drifted schema, a new load
    supervise_once()
    p2 = StateStore().proposal_for_event(second.id)
    assert p2.id != p1.id and p2.status == ProposalStatus.needs_human and p2.change.kind == "no_change"
    assert p1.short_id in p2.title and p1.short_id in p2.change.reason and "rejected before" in p2.title
    # the offline planner heard the rejection before drafting: it did not prove the rejected mapping again
    assert "the feed renames it back tomorrow" in p2.change.reason and "rejected by alice" in p2.change.reason
    assert p2.tried == [f"offline attempt 1: a person rejected this change for this fault: the feed renames it back "
                        f"tomorrow; wait for it (proposal {p1.short_id}, rejected by alice); propose a different change"]
    [cited] = _decision_cites(p2, p1)
    assert cited.score == 1.0 and cited.owner == "alice" and "rejected" in cited.excerpt


def test_a_rejected_change_gives_way_to_the_next_alternative_citing_the_rejection(m3: pd.DataFrame,  # noqa: F811
                                                                                  tmp_path: Path) -> None:
    df = D.inject_out_of_range(m3, "dep_delay", 0.02, dataset="flights")
    p1 = _quality_proposal(df, tmp_path, "first")
    assert p1.change.kind == "contract_change"  # the planner's first choice: loosen the bound
    reject(p1.id, "alice", reason=NEVER_LOOSEN)

    p2 = _quality_proposal(df, tmp_path, "second", seed=5)
    assert p2.status == ProposalStatus.pending and p2.change.kind == "quarantine" and p2.dry_run.heals
    assert "Proposed by the offline planner: quarantine." in p2.diagnosis  # the loosening was left out before proving
    assert p2.change.predicate == "dep_delay < -120 OR dep_delay > 1500"
    assert f"rejected for this fault on proposal {p1.short_id} by alice: {NEVER_LOOSEN}" in p2.diagnosis
    assert _decision_cites(p2, p1)  # cited from the store: no index was built, the exact match is enough


def test_an_accepted_change_is_preferred_and_cited_when_the_fault_comes_back(
    m3: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, knowledge_index: None  # noqa: F811
) -> None:
    df = D.inject_out_of_range(m3, "dep_delay", 0.02, dataset="flights")
    quarantine = {"action": "quarantine", "predicate": "dep_delay < -120 OR dep_delay > 1500",
                  "reason": "dep_delay out of range", "keys": [], "keep": "last", "order_by": None, "bounds": [],
                  "rationale": "sensor errors", "cited_chunks": []}
    with MockLLMServer([answer(quarantine)]) as srv:  # this time a planner chose the quarantine
        _llm(srv, monkeypatch)
        p1 = _quality_proposal(df, tmp_path, "first")
    assert p1.planner == "openai" and p1.change.kind == "quarantine"
    assert approve(p1.id, "alice").proposal.status == ProposalStatus.verified
    monkeypatch.delenv("PIPEWARDEN_OPENAI_API_KEY")
    get_settings.cache_clear()

    p2 = _quality_proposal(df, tmp_path, "second", seed=5)  # the offline planner's first choice is the loosening
    assert p2.change.kind == "quarantine" and p2.change.predicate == p1.change.predicate
    assert p2.change.load_id != p1.change.load_id and p2.dry_run.heals  # proven on its own batch
    assert "Proposed by the offline planner: quarantine." in p2.diagnosis  # its pick, before proving: not heed's swap
    assert f"accepted for this fault on proposal {p1.short_id} is preferred" in p2.diagnosis
    [cited] = _decision_cites(p2, p1)
    assert "approved and verified by alice" in cited.excerpt


def test_a_rolled_back_change_is_not_accepted_the_next_alternative_comes_first(
    m3: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    df = D.inject_out_of_range(m3, "dep_delay", 0.02, dataset="flights")
    p1 = _quality_proposal(df, tmp_path, "first")
    assert p1.change.kind == "contract_change"
    swap(monkeypatch, pipeline_runner=fake_runner.run)
    fake_runner.OUTCOMES[:] = ["halted"]  # the re-run under the loosened contract still halts
    approve(p1.id, "alice")  # a loosening is high risk: an owner and a steward approve it
    rolled = approve(p1.id, "bob").proposal  # the steward
    assert rolled.status == ProposalStatus.pending and rolled.round == 1  # applied, rolled back, re-opened
    StateStore().transition(p1.id, ProposalStatus.expired, "policy", "nobody decided again")
    swap(monkeypatch, pipeline_runner=quality_runner.run)

    p2 = _quality_proposal(df, tmp_path, "second", seed=5)
    assert p2.change.kind == "quarantine" and p2.status == ProposalStatus.pending
    assert f"was rolled back on proposal {p1.short_id}" in p2.diagnosis
    [cited] = _decision_cites(p2, p1)
    assert "rolled back" in cited.excerpt and "accepted" not in cited.excerpt.split("Outcome:")[-1]



def test_a_precedent_on_a_dataset_the_agents_may_not_read_counts_but_is_not_cited(pw_project: Path) -> None:
    from pipewarden.agents.precedent import heed, precedent_citation
    from pipewarden.events import ColumnSpec, SchemaDrift
    from pipewarden.knowledge.decisions import record_for
    from pipewarden.models import ColumnMapping, DryRun, Verdict
    from pipewarden.policies.approval import decision_gate

    contract = pw_project / "contracts" / "airlines.yaml"
    contract.write_text(contract.read_text().replace("allowed_roles: [owner, steward, engineer, analyst]",
                                                     "allowed_roles: [owner, steward]"))
    store = StateStore()
    event = SchemaDrift(dataset="airlines", load_id="l1", batch_path="/b.csv", contract_version="airlines@v1",
                        added=[ColumnSpec(name="airline", type="string")], dropped=[ColumnSpec(name="name", type="string")],
                        schema_fingerprint="fp")
    store.append_event(event)
    change = ColumnMapping(dataset="airlines", renames={"airline": "name"}, source_fingerprint="fp")
    p1 = store.create_proposal(Proposal(event_id=event.id, agent="schema_drift", dataset="airlines", title="airline -> name",
                                        diagnosis="renamed", change=change, thread_id="t1"))
    store.decide(p1.id, Verdict.reject, "alice", "the vendor fixes it", policy=decision_gate())
    record = record_for(p1.id)
    assert precedent_citation(record) is None and precedent_citation(record, role="steward") is not None
    dry = {"before": {"passed": False, "rows": 3}, "after": {"passed": True, "rows": 3}}
    drafted = p1.model_copy(update={"id": Proposal.model_fields["id"].default_factory(), "status": ProposalStatus.pending,
                                    "dry_run": DryRun.model_validate(dry)})
    out = heed(drafted, [record], lambda: [])
    assert out.status == ProposalStatus.needs_human and p1.short_id in out.change.reason  # it still counts
    assert [c for c in out.citations if c.kind == "decision"] == []  # but the agents' role may not read it
