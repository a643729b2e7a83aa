"""Indexing the policies and the SQL models' lineage for real (MiniLM + Qdrant local mode)."""

from __future__ import annotations

from pipewarden.flows.knowledge_sync import sync_knowledge
from pipewarden.knowledge.retrieval import search


def test_sync_indexes_contracts_runbooks_and_lineage_once() -> None:
    seen: list[tuple[int, int]] = []
    first = sync_knowledge(progress=lambda done, total: seen.append((done, total)))
    assert first.policies.added > 0 and first.lineage.added > 0
    assert seen and seen[-1][0] == seen[-1][1]  # progress reached the end
    again = sync_knowledge()
    assert again.policies.added == 0 and again.lineage.added == 0
    assert again.policies.unchanged == first.policies.added

    hits = search("which models read dep_delay", role="engineer", kinds=["lineage"], limit=3)
    assert hits and all(h.chunk.kind == "lineage" for h in hits)
    assert any("dep_delay" in h.chunk.text for h in hits)
    # owned by the teams whose raw tables the models read (flights, planes, weather)
    assert {h.chunk.owner for h in hits} == {"fleet-data-team, flights-data-team, weather-data-team"}
