"""Searching as a person reads with all their roles, on their datasets only; a bare role reads what it may."""

from __future__ import annotations

import pytest

from pipewarden.errors import UnknownNameError
from pipewarden.knowledge.documents import Chunk
from pipewarden.knowledge.embedder import HashEmbedder
from pipewarden.knowledge.index import index_chunks
from pipewarden.knowledge.reader import Reader, known_roles, resolve_reader, search_as
from pipewarden.knowledge.store import MemoryStore


@pytest.fixture
def indexed() -> tuple[HashEmbedder, MemoryStore]:
    emb, store = HashEmbedder(), MemoryStore()
    index_chunks([
        Chunk.make(text="delay runbook, flights", source="flights.md", kind="runbook", key=0, dataset="flights",
                   allowed_roles=["owner"]),
        Chunk.make(text="delay runbook, planes", source="planes.md", kind="runbook", key=0, dataset="planes",
                   allowed_roles=["owner", "analyst"]),
        Chunk.make(text="delay runbook, any dataset", source="all.md", kind="runbook", key=0,
                   allowed_roles=["steward", "analyst"]),
    ], emb, store)
    return emb, store


def _sources(reader: Reader, indexed: tuple[HashEmbedder, MemoryStore], limit: int = 10) -> list[str]:
    emb, store = indexed
    return [c.source for c in search_as("delay runbook", reader, limit=limit, embedder=emb, store=store)]


def test_a_person_reads_with_their_roles_on_their_datasets(indexed) -> None:
    alice = resolve_reader("alice")  # owner of flights, airlines, airports
    assert (alice.roles, "flights" in alice.datasets) == (["owner"], True)
    assert _sources(alice, indexed) == ["flights.md"]
    assert _sources(resolve_reader("frank"), indexed) == ["planes.md"]  # owner of planes and weather
    assert sorted(_sources(resolve_reader("analyst"), indexed)) == ["all.md", "planes.md"]  # a bare role
    assert _sources(resolve_reader("dave"), indexed) == []  # an engineer may read none of these


def test_results_are_merged_across_roles_and_limited(indexed) -> None:
    both = Reader(name="x", roles=["owner", "analyst"], datasets=["*"])
    found = _sources(both, indexed)
    assert sorted(found) == ["all.md", "flights.md", "planes.md"] and len(set(found)) == 3  # planes.md once
    assert len(_sources(both, indexed, limit=2)) == 2


def test_an_unknown_reader_names_people_and_roles() -> None:
    assert "analyst" in known_roles()  # a role only contracts name still counts
    with pytest.raises(UnknownNameError) as info:
        resolve_reader("stewart")
    assert info.value.hint == "did you mean 'steward'?"
    assert {"alice", "bob", "owner", "steward", "analyst"} <= set(info.value.known)
