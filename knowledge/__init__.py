"""The knowledge index: documents with provenance, an offline embedder, a vector store and filtered retrieval.

Importing this package is cheap: sentence-transformers and qdrant-client load only when used.
"""

from pipewarden.knowledge.documents import Chunk
from pipewarden.knowledge.index import IndexReport, index_chunks, index_policies
from pipewarden.knowledge.retrieval import search, to_citation
from pipewarden.knowledge.store import Hit

__all__ = ["Chunk", "Hit", "IndexReport", "index_chunks", "index_policies", "search", "to_citation"]
