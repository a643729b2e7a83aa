"""Keep the knowledge index in step with the policies and the SQL models' lineage.

flows/ is where both sides meet: knowledge/ may not import tools/, so the lineage chunks are built here.
"""

from __future__ import annotations

from typing import Any

from pipewarden.settings import get_settings


def sync_knowledge(progress: bool = False) -> Any:
    """Index contracts, runbooks and column lineage of the SQL models. Unchanged chunks are skipped."""
    from knowledge.documents import lineage_chunks
    from knowledge.index import index_chunks, index_policies
    from policies.contract import load_contract
    from tools.lineage import column_lineage

    settings = get_settings()
    report = index_policies()
    edges = [e.model_dump() for e in column_lineage(settings.models_dir)]
    owner = load_contract("flights").owner
    chunks = lineage_chunks(edges, owner=owner, allowed_roles=["owner", "steward", "engineer", "analyst"],
                            source=str(settings.models_dir))
    lineage_report = index_chunks(chunks)
    return report.merge(lineage_report) if hasattr(report, "merge") else {"policies": report, "lineage": lineage_report}
