"""Indexing is idempotent per source; retrieval obeys access and freshness; citations carry provenance."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from pipewarden.errors import UserError
from pipewarden.ids import utcnow
from pipewarden.knowledge.documents import Chunk, text_chunks
from pipewarden.knowledge.embedder import HashEmbedder
from pipewarden.knowledge.index import index_chunks, index_policies
from pipewarden.knowledge.retrieval import DEFAULT_MAX_AGE, search, to_citation
from pipewarden.knowledge.store import MemoryStore, QdrantStore, VectorStore

FLIGHTS = Path(__file__).resolve().parents[2] / "examples" / "flights"


class CountingEmbedder(HashEmbedder):
    """The hashing fake, counting how many texts it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += len(texts)
        return super().embed(texts)


def runbook(tmp_path: Path, body: str, roles: str = "[owner, steward]") -> Path:
    p = tmp_path / "rb.md"
    p.write_text(f"---\nowner: team-a\ndataset: flights\nallowed_roles: {roles}\n---\n{body}", encoding="utf-8")
    return p


@pytest.fixture(params=["memory", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> VectorStore:
    return MemoryStore() if request.param == "memory" else QdrantStore(path=tmp_path / "qdrant")


def test_reindexing_unchanged_content_is_a_no_op(store: VectorStore, tmp_path: Path) -> None:
    doc = runbook(tmp_path, "# A\n\none\n\n# B\n\ntwo\n")
    emb = CountingEmbedder()
    first = index_chunks(text_chunks(doc), emb, store)
    assert (first.added, first.unchanged, first.replaced, first.total) == (2, 0, 0, 2)
    os.utime(doc, (doc.stat().st_atime, doc.stat().st_mtime + 60))  # touched, not changed
    calls = emb.calls
    again = index_chunks(text_chunks(doc), emb, store)
    assert (again.added, again.unchanged, again.replaced, again.removed, again.total) == (0, 2, 0, 0, 2)
    assert emb.calls == calls  # nothing was embedded again


def test_changed_content_replaces_the_old_chunks_of_that_source(store: VectorStore, tmp_path: Path) -> None:
    doc = runbook(tmp_path, "# A\n\none\n\n# B\n\ntwo\n\n# C\n\nthree\n")
    other = Chunk.make(text="other doc", source="other.md", kind="runbook", key=0, allowed_roles=["owner"])
    emb = HashEmbedder()
    index_chunks(text_chunks(doc) + [other], emb, store)
    assert store.count() == 4
    doc.write_text(doc.read_text().replace("# A\n\none\n\n# B\n\ntwo\n\n# C\n\nthree\n", "# A\n\nONE, rewritten\n"))
    report = index_chunks(text_chunks(doc), emb, store)
    assert (report.replaced, report.removed, report.total) == (1, 2, 2)
    texts = {c.text for c in store.chunks(text_chunks(doc)[0].source)}
    assert texts == {"A\n\nONE, rewritten"}
    assert store.chunks("other.md") == [other]  # other sources are untouched


def test_changing_only_the_allowed_roles_is_a_change(store: VectorStore, tmp_path: Path) -> None:
    emb = HashEmbedder()
    index_chunks(text_chunks(runbook(tmp_path, "# A\n\none\n", roles="[owner, analyst]")), emb, store)
    assert search("one", role="analyst", embedder=emb, store=store)
    report = index_chunks(text_chunks(runbook(tmp_path, "# A\n\none\n", roles="[owner]")), emb, store)
    assert report.replaced == 1
    assert search("one", role="analyst", embedder=emb, store=store) == []


def test_search_respects_access(store: VectorStore) -> None:
    emb = HashEmbedder()
    steward_only = Chunk.make(text="dep_delay steward notes", source="s.md", kind="runbook", key=0,
                              allowed_roles=["steward"])
    index_chunks([steward_only], emb, store)
    assert search("dep_delay", role="analyst", embedder=emb, store=store) == []
    [hit] = search("dep_delay", role="steward", embedder=emb, store=store)
    assert hit.chunk.id == steward_only.id


def test_search_respects_staleness_with_a_default_and_none_means_no_limit(store: VectorStore) -> None:
    emb = HashEmbedder()
    old = Chunk.make(text="dep_delay old runbook", source="old.md", kind="runbook", key=0, allowed_roles=["owner"],
                     updated_at=utcnow() - DEFAULT_MAX_AGE - timedelta(days=1))
    recent = Chunk.make(text="arr_delay recent runbook", source="new.md", kind="runbook", key=0,
                        allowed_roles=["owner"], updated_at=utcnow() - timedelta(days=10))
    index_chunks([old, recent], emb, store)
    assert [h.chunk.id for h in search("dep_delay", role="owner", embedder=emb, store=store)] == [recent.id]
    assert [h.chunk.id for h in search("dep_delay", role="owner", max_age=timedelta(days=5), embedder=emb,
                                       store=store)] == []
    everything = search("dep_delay", role="owner", max_age=None, embedder=emb, store=store)
    assert [h.chunk.id for h in everything] == [old.id, recent.id]


def test_citations_carry_provenance(store: VectorStore, tmp_path: Path) -> None:
    emb = HashEmbedder()
    chunks = text_chunks(runbook(tmp_path, "# Renames\n\n" + "Map departureDelay to dep_delay. " * 20))
    index_chunks(chunks, emb, store)
    [hit] = search("departureDelay", role="owner", embedder=emb, store=store, kinds=["runbook"], dataset="flights")
    cit = to_citation(hit)
    c = chunks[0]
    assert (cit.chunk_id, cit.source, cit.kind, cit.dataset, cit.owner) == (c.id, c.source, "runbook", "flights",
                                                                              "team-a")
    assert cit.updated_at == c.updated_at and cit.content_hash == c.content_hash
    assert cit.score == pytest.approx(hit.score) and cit.score > 0
    assert cit.excerpt.startswith("Renames Map departureDelay") and len(cit.excerpt) <= 280


def test_search_refuses_bad_input() -> None:
    emb, store = HashEmbedder(), MemoryStore()
    with pytest.raises(UserError, match="no role"):
        search("x", role=" ", embedder=emb, store=store)
    with pytest.raises(UserError, match="query is empty"):
        search("  ", role="owner", embedder=emb, store=store)
    with pytest.raises(UserError, match="limit=0"):
        search("x", role="owner", limit=0, embedder=emb, store=store)


def test_duplicate_chunks_in_one_call_are_refused() -> None:
    c = Chunk.make(text="x", source="s", kind="runbook", key=0, allowed_roles=["owner"])
    with pytest.raises(UserError, match="given twice"):
        index_chunks([c, c], HashEmbedder(), MemoryStore())


def test_index_policies_indexes_contracts_and_runbooks_with_progress_and_prunes(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(FLIGHTS / "contracts", policies / "contracts")
    shutil.copytree(FLIGHTS / "runbooks", policies / "runbooks")
    store, emb = QdrantStore(path=tmp_path / "qdrant"), HashEmbedder()
    seen: list[tuple[int, int]] = []
    report = index_policies(emb, store, progress=lambda done, total: seen.append((done, total)),
                            project_dir=policies)
    assert report.added == report.total == store.count() > 20
    assert seen[0] == (0, report.added) and seen[-1] == (report.added, report.added)
    kinds = {c.kind for c in store.chunks()}
    assert kinds == {"contract", "runbook"}

    again = index_policies(emb, store, project_dir=policies)
    assert again.unchanged == report.added and again.added == again.replaced == 0

    for doc in (policies / "runbooks").glob("*.md"):
        doc.unlink()
    pruned = index_policies(emb, store, project_dir=policies)
    assert pruned.removed > 0
    assert {c.kind for c in store.chunks()} == {"contract"}


def test_index_policies_defaults_to_the_configured_store(pw_home: Path) -> None:
    report = index_policies(HashEmbedder())
    assert report.total == QdrantStore(path=pw_home / "qdrant").count() == report.added
    hits = search("renamed column mapping", role="analyst", embedder=HashEmbedder())
    assert hits and all("analyst" in h.chunk.allowed_roles for h in hits)


def test_minilm_finds_the_runbook_and_the_column_for_a_renamed_column(minilm, tmp_path: Path) -> None:
    store = QdrantStore(path=tmp_path / "qdrant")
    index_policies(minilm, store)
    hits = search("incoming column departureDelay is not in the contract", role="analyst", limit=5,
                  embedder=minilm, store=store)
    titles = [h.chunk.title for h in hits]
    assert "flights.dep_delay" in titles, titles
    runbook_hits = search("what do we do when an upstream feed renames a column?", role="analyst", limit=1,
                          kinds=["runbook"], embedder=minilm, store=store)
    assert runbook_hits[0].chunk.title == "Schema drift > Renamed columns"


def test_cite_is_empty_without_an_index_and_never_raises(pw_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Agents cite through `cite`: no index means no citations (and no search); a failing search is logged."""
    import pipewarden.knowledge.retrieval as retrieval
    from pipewarden.knowledge.store import Hit

    calls: list[str] = []

    def fake_search(query: str, *, role: str, limit: int = 5, kinds: object = None, dataset: object = None,
                    embedder: object = None) -> list[Hit]:
        calls.append(role)
        chunk = Chunk.make(text="dep_delay: minutes", source="contracts/flights.yaml", kind="contract", key=0,
                           allowed_roles=[role])
        return [Hit(chunk=chunk, score=0.9)]

    monkeypatch.setattr(retrieval, "search", fake_search)
    assert retrieval.cite("dep_delay", role="engineer") == [] and calls == []  # no index folder: not searched
    (pw_home / "qdrant").mkdir(parents=True)
    (cited,) = retrieval.cite("dep_delay", role="engineer")
    assert calls == ["engineer"] and cited.source == "contracts/flights.yaml" and cited.score == 0.9

    def broken(query: str, *, role: str, limit: int = 5, kinds: object = None, dataset: object = None,
               embedder: object = None) -> list[Hit]:
        raise OSError("the index is locked by another process")

    monkeypatch.setattr(retrieval, "search", broken)
    assert retrieval.cite("dep_delay", role="engineer") == []
    assert "knowledge search failed" in caplog.text and "locked" in caplog.text
