"""Keep the knowledge index in step with the policies, the SQL models' lineage and the decided proposals.

flows/ is where both sides meet: knowledge/ may not import tools/, so the lineage chunks are built here. Decisions
are read from the state DB (the truth) every time, so a decision whose indexing failed when it was made is indexed
here.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from pipewarden.knowledge.index import IndexReport
from pipewarden.settings import get_settings


class KnowledgeSyncReport(BaseModel):
    policies: IndexReport
    lineage: IndexReport
    decisions: IndexReport = IndexReport()

    def __str__(self) -> str:
        p, ln, d = self.policies, self.lineage, self.decisions
        return (f"policies: {p.added} added, {p.replaced} replaced, {p.unchanged} unchanged, {p.removed} removed; "
                f"lineage: {ln.added} added, {ln.replaced} replaced, {ln.unchanged} unchanged; "
                f"decisions: {d.added} added, {d.replaced} replaced, {d.unchanged} unchanged")


def sync_knowledge(progress: Callable[[int, int], None] | None = None) -> KnowledgeSyncReport:
    """Index contracts, runbooks, column lineage of the SQL models and every decided proposal. Unchanged chunks are
    skipped."""
    from pipewarden.knowledge.decisions import index_decisions
    from pipewarden.knowledge.documents import lineage_chunks
    from pipewarden.knowledge.index import index_chunks, index_policies
    from pipewarden.tools.lineage import column_lineage

    settings = get_settings()
    report = index_policies(progress=progress)
    edges = [e.model_dump() for e in column_lineage(settings.models_dir)]
    owner = _models_owner(edges)
    chunks = lineage_chunks(edges, owner=owner, allowed_roles=["owner", "steward", "engineer", "analyst"],
                            source=str(settings.models_dir))
    lineage_report = index_chunks(chunks, progress=progress)
    return KnowledgeSyncReport(policies=report, lineage=lineage_report, decisions=index_decisions(progress=progress))


def _models_owner(edges: list[dict[str, object]]) -> str:
    """Who owns the models' lineage: the owners of the datasets whose raw tables the models read (`raw_<dataset>`),
    else of every dataset of the project."""
    from pipewarden.policies.contract import list_contracts, load_contract

    datasets = list_contracts()
    read = {str(e.get("upstream_table", "")).removeprefix("raw_") for e in edges}
    owners = sorted({load_contract(d).owner for d in datasets if d in read} or
                    {load_contract(d).owner for d in datasets})
    return ", ".join(owners) or "unknown"
