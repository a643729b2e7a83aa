"""The knowledge index: documents with provenance, an offline embedder, a vector store and filtered retrieval.

Importing this package is cheap: its public names load on first use (PEP 562), so `pipewarden.knowledge.embedder`
alone (`pipewarden schema match`) does not load the index, retrieval, contracts and settings; sentence-transformers
and qdrant-client load only when used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipewarden.knowledge.documents import Chunk
    from pipewarden.knowledge.index import IndexReport, index_chunks, index_policies
    from pipewarden.knowledge.retrieval import search, to_citation
    from pipewarden.knowledge.store import Hit

__all__ = ["Chunk", "Hit", "IndexReport", "index_chunks", "index_policies", "search", "to_citation"]

_MODULE_OF = {"Chunk": "documents", "Hit": "store", "IndexReport": "index", "index_chunks": "index",
              "index_policies": "index", "search": "retrieval", "to_citation": "retrieval"}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value
