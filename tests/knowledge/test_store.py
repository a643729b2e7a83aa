"""Vector store conformance: the same behaviour from the in-memory fake and Qdrant local mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipewarden.errors import ConfigError, UnknownNameError, UserError
from pipewarden.ids import utcnow
from pipewarden.knowledge.documents import Chunk
from pipewarden.knowledge.store import ChunkFilter, MemoryStore, QdrantStore, VectorStore

DIM = 4
E = [[1.0 if i == j else 0.0 for i in range(DIM)] for j in range(DIM)]  # unit basis vectors


def chunk(key: str, *, roles=("owner",), source="s.md", kind="runbook", dataset=None, age_days=0.0, text=None) -> Chunk:
    return Chunk.make(
        text=text or f"text {key}", source=source, kind=kind, key=key, allowed_roles=list(roles),
        dataset=dataset, updated_at=utcnow() - timedelta(days=age_days),
    )


def between(a: list[float], b: list[float], wa: float) -> list[float]:
    return [wa * x + (1 - wa) * y for x, y in zip(a, b, strict=True)]


@pytest.fixture(params=["memory", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> VectorStore:
    if request.param == "memory":
        return MemoryStore()
    return QdrantStore(path=tmp_path / "qdrant")


def test_satisfies_the_protocol_and_starts_empty(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)
    assert store.count() == 0
    assert store.chunks() == []
    assert store.query(E[0], 5, ChunkFilter(role="owner")) == []
    assert store.delete_source("nothing") == 0


def test_upsert_then_query_ranks_by_cosine(store: VectorStore) -> None:
    a, b, c = chunk("a"), chunk("b"), chunk("c")
    store.upsert([a, b, c], [E[0], between(E[0], E[1], 0.5), E[2]])
    hits = store.query(E[0], 2, ChunkFilter(role="owner"))
    assert [h.chunk.id for h in hits] == [a.id, b.id]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].score > hits[1].score
    assert hits[0].chunk == a  # the chunk comes back with all its provenance


def test_upsert_is_by_id(store: VectorStore) -> None:
    store.upsert([chunk("a", text="old")], [E[0]])
    store.upsert([chunk("a", text="new")], [E[1]])
    assert store.count() == 1
    [hit] = store.query(E[1], 5, ChunkFilter(role="owner"))
    assert hit.chunk.text == "new" and hit.score == pytest.approx(1.0, abs=1e-4)


def test_a_role_not_allowed_never_sees_the_chunk(store: VectorStore) -> None:
    secret = chunk("secret", roles=["steward"])
    public = chunk("public", roles=["steward", "analyst"])
    store.upsert([secret, public], [E[0], E[1]])
    assert [h.chunk.id for h in store.query(E[0], 10, ChunkFilter(role="analyst"))] == [public.id]
    assert {h.chunk.id for h in store.query(E[0], 10, ChunkFilter(role="steward"))} == {secret.id, public.id}
    assert store.query(E[0], 10, ChunkFilter(role="nobody")) == []


def test_access_filter_is_applied_inside_the_query_not_after_the_limit(store: VectorStore) -> None:
    hidden = [chunk(f"h{i}", roles=["steward"]) for i in range(10)]
    visible = chunk("v", roles=["analyst"])
    # the ten hidden chunks are all closer to the query than the visible one
    store.upsert(hidden + [visible], [E[0]] * 10 + [between(E[0], E[1], 0.2)])
    hits = store.query(E[0], 1, ChunkFilter(role="analyst"))
    assert [h.chunk.id for h in hits] == [visible.id]


def test_stale_chunks_are_excluded_inside_the_query(store: VectorStore) -> None:
    stale = [chunk(f"old{i}", age_days=400) for i in range(5)]
    fresh = chunk("fresh", age_days=1)
    store.upsert(stale + [fresh], [E[0]] * 5 + [E[1]])
    since = utcnow() - timedelta(days=365)
    assert [h.chunk.id for h in store.query(E[0], 1, ChunkFilter(role="owner", updated_since=since))] == [fresh.id]
    assert len(store.query(E[0], 10, ChunkFilter(role="owner"))) == 6


def test_kind_and_dataset_filters(store: VectorStore) -> None:
    a = chunk("a", kind="contract", dataset="flights")
    b = chunk("b", kind="runbook", dataset="flights")
    c = chunk("c", kind="contract", dataset="planes")
    store.upsert([a, b, c], [E[0], E[0], E[0]])
    assert {h.chunk.id for h in store.query(E[0], 10, ChunkFilter(role="owner", kinds=["contract"]))} == {a.id, c.id}
    assert {h.chunk.id for h in store.query(E[0], 10, ChunkFilter(role="owner", dataset="flights"))} == {a.id, b.id}
    f = ChunkFilter(role="owner", kinds=["runbook", "lineage"], dataset="planes")
    assert store.query(E[0], 10, f) == []


def test_chunks_delete_and_delete_source(store: VectorStore) -> None:
    a1, a2, b1 = chunk("1", source="a.md"), chunk("2", source="a.md"), chunk("1", source="b.md")
    store.upsert([a1, a2, b1], [E[0], E[1], E[2]])
    assert {c.id for c in store.chunks("a.md")} == {a1.id, a2.id}
    assert len(store.chunks()) == 3
    assert store.delete_source("a.md") == 2
    assert store.count() == 1 and store.chunks("a.md") == []
    store.delete([b1.id])
    assert store.count() == 0


def test_upsert_rejects_mismatched_batches(store: VectorStore) -> None:
    with pytest.raises(UserError, match="2 chunks but 1 vectors"):
        store.upsert([chunk("a"), chunk("b")], [E[0]])


def test_filter_validates_its_input() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'runbook'"):
        ChunkFilter(role="owner", kinds=["runbok"])
    with pytest.raises(UserError, match="time zone"):
        ChunkFilter(role="owner", updated_since=datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        ChunkFilter(role="")
    assert ChunkFilter(role="owner", updated_since=datetime(2024, 1, 1, tzinfo=UTC)).updated_since


# --------------------------------------------------------------------------- qdrant only
def test_qdrant_store_persists_across_reopening_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    a = chunk("a", roles=["analyst"], dataset="flights")
    QdrantStore(path=folder).upsert([a], [E[0]])
    reopened = QdrantStore(path=folder)
    assert reopened.count() == 1
    [hit] = reopened.query(E[0], 5, ChunkFilter(role="analyst"))
    assert hit.chunk == a


def test_qdrant_store_defaults_to_local_mode_under_home(pw_home: Path) -> None:
    store = QdrantStore()
    assert store.url is None and store.path == pw_home / "qdrant"
    store.upsert([chunk("a")], [E[0]])
    assert (pw_home / "qdrant").is_dir()


def test_a_held_folder_fails_with_a_clear_error_after_waiting(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    holder = QdrantStore(path=folder)
    with holder:
        holder.upsert([chunk("a")], [E[0]])
        assert holder.count() == 1  # the same client serves every call inside the block
        with pytest.raises(UserError, match="in use by another process"):
            QdrantStore(path=folder, lock_wait_s=0.2).count()
    assert QdrantStore(path=folder).count() == 1  # released on exit


def test_a_vector_size_mismatch_is_a_config_error(tmp_path: Path) -> None:
    store = QdrantStore(path=tmp_path / "qdrant")
    store.upsert([chunk("a")], [E[0]])
    with pytest.raises(ConfigError, match="holds 4-dimension vectors but the embedder gives 3"):
        store.query([1.0, 0.0, 0.0], 1, ChunkFilter(role="owner"))
    with pytest.raises(ConfigError, match="holds 4-dimension"):
        store.upsert([chunk("b")], [[1.0, 0.0, 0.0]])


def test_path_and_url_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="both a path and a url"):
        QdrantStore(path=tmp_path, url="http://localhost:6333")


def test_qdrant_url_setting_selects_server_mode_and_an_unreachable_server_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipewarden.settings import get_settings

    monkeypatch.setenv("PIPEWARDEN_QDRANT_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    store = QdrantStore()
    assert store.url == "http://127.0.0.1:9" and store.path is None
    with pytest.raises(ConfigError, match="cannot reach the Qdrant server"):
        store.count()
    store.close()
