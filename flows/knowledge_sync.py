"""Keep the knowledge index in step with the policies and the SQL models' lineage.

flows/ is where both sides meet: knowledge/ may not import tools/, so the lineage chunks are built here.
"""

from __future__ import annotations

from collections.abc import Callable

from pipewarden.knowledge.index import IndexReport
from pydantic import BaseModel

from pipewarden.settings import get_settings


class KnowledgeSyncReport(BaseModel):
    policies: IndexReport
    lineage: IndexReport

    def __str__(self) -> str:
        p, ln = self.policies, self.lineage
        return (f"policies: {p.added} added, {p.replaced} replaced, {p.unchanged} unchanged, {p.removed} removed; "
                f"lineage: {ln.added} added, {ln.replaced} replaced, {ln.unchanged} unchanged")


def sync_knowledge(progress: Callable[[int, int], None] | None = None) -> KnowledgeSyncReport:
    """Index contracts, runbooks and column lineage of the SQL models. Unchanged chunks are skipped."""
    from pipewarden.knowledge.documents import lineage_chunks
    from pipewarden.knowledge.index import index_chunks, index_policies
    from pipewarden.policies.contract import load_contract
    from pipewarden.tools.lineage import column_lineage

    settings = get_settings()
    report = index_policies(progress=progress)
    edges = [e.model_dump() for e in column_lineage(settings.models_dir)]
    owner = load_contract("flights").owner
    chunks = lineage_chunks(edges, owner=owner, allowed_roles=["owner", "steward", "engineer", "analyst"],
                            source=str(settings.models_dir))
    lineage_report = index_chunks(chunks, progress=progress)
    return KnowledgeSyncReport(policies=report, lineage=lineage_report)
