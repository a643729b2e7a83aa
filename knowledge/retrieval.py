"""Retrieval: the chunks a role may see, fresh enough, most similar to a question; and their citations.

The access check (the role must be in a chunk's `allowed_roles`) and the freshness check (`updated_at` no
older than `max_age`) are part of the store query, so they cannot be forgotten by a caller and a `limit`
counts only chunks the caller may see.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from pipewarden.errors import PipewardenError, UserError
from pipewarden.ids import utcnow
from pipewarden.knowledge.store import ChunkFilter, Hit, VectorStore, default_store
from pipewarden.models import Citation
from pipewarden.ports import Embedder

DEFAULT_MAX_AGE = timedelta(days=365)
"""Chunks not updated for longer than this are left out unless the caller passes another `max_age`."""

EXCERPT_CHARS = 280
log = logging.getLogger(__name__)


def search(
    query: str,
    *,
    role: str,
    limit: int = 5,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    kinds: list[str] | None = None,
    dataset: str | None = None,
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
) -> list[Hit]:
    """The `limit` chunks most similar to `query` that `role` may see, best first.

    `max_age=None` means no freshness limit; `kinds` and `dataset` narrow the search further.
    """
    if not query.strip():
        raise UserError("the search query is empty", hint="ask a question, e.g. 'what does dep_delay mean?'")
    if not role.strip():
        raise UserError("no role given for the search", hint="pass the caller's role, e.g. --as analyst")
    if limit < 1:
        raise UserError(f"limit={limit} is not positive", hint="ask for at least one result")
    flt = ChunkFilter(
        role=role,
        updated_since=(utcnow() - max_age) if max_age is not None else None,
        kinds=kinds,
        dataset=dataset,
    )
    if embedder is None:
        from pipewarden import runtime

        embedder = runtime.current().embedder()
    store = store if store is not None else default_store()
    [vector] = embedder.embed([query])
    return store.query(vector, limit, flt)


def to_citation(hit: Hit) -> Citation:
    """A citation carrying the hit's provenance as it is now (source, kind, owner, time, hash) and its score."""
    c = hit.chunk
    text = " ".join(c.text.split())
    excerpt = text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"
    return Citation(
        chunk_id=c.id, source=c.source, kind=c.kind, dataset=c.dataset, owner=c.owner,
        updated_at=c.updated_at, content_hash=c.content_hash, score=hit.score, excerpt=excerpt,
    )


def cite(query: str, *, role: str, limit: int = 4, kinds: list[str] | None = None,
         dataset: str | None = None, embedder: Embedder | None = None) -> list[Citation]:
    """What an agent cites: the citations of `search(query, role=role, limit=limit, kinds=kinds, dataset=dataset)`,
    or none when no index has been built (nothing to cite, and no reason to load the embedder) or the search fails.
    The index is optional evidence: a failure is logged, never raised, so a proposal is made without citations
    rather than not at all."""
    from pipewarden.settings import get_settings

    settings = get_settings()
    if settings.qdrant_url is None and not settings.qdrant_path.exists():
        return []
    try:
        return [to_citation(h) for h in search(query, role=role, limit=limit, kinds=kinds, dataset=dataset,
                                                embedder=embedder)]
    except (PipewardenError, OSError, RuntimeError, ValueError) as exc:
        log.warning("knowledge search failed, proposing without citations: %s", exc)
        return []
