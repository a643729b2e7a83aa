"""Indexing: embed chunks and write them to the store, skipping what has not changed.

Chunks are handled per source. A source whose stored chunks have the same ids and fingerprints (text plus
every access-relevant field) is left alone; a changed source has its chunks re-embedded and overwritten and
its chunks that no longer exist deleted; a new source is added. Re-indexing unchanged content is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipewarden.errors import UserError
from pipewarden.knowledge.documents import Chunk, contract_chunks, source_for, text_chunks
from pipewarden.knowledge.store import VectorStore, default_store
from pipewarden.policies.contract import list_contracts, load_contract
from pipewarden.ports import Embedder
from pipewarden.settings import get_settings

Progress = Callable[[int, int], None]
"""Called as `progress(done, total)` with the number of chunks embedded so far and in all."""

EMBED_BATCH = 64
POLICY_KINDS = frozenset({"contract", "runbook"})


class IndexReport(BaseModel):
    """What an indexing pass did, counted in chunks (sources: how many distinct sources were given)."""

    sources: int = 0
    added: int = 0
    unchanged: int = 0
    replaced: int = 0
    removed: int = 0
    total: int = 0


def _session(store: Any) -> AbstractContextManager[Any]:
    """Keep one connection open for the whole pass when the store supports it (QdrantStore does)."""
    return store if hasattr(store, "__enter__") and hasattr(store, "__exit__") else nullcontext(store)


def index_chunks(
    chunks: list[Chunk],
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
    *,
    progress: Progress | None = None,
) -> IndexReport:
    """Write `chunks` to the store (default: the configured Qdrant) with their embeddings.

    Every source among `chunks` is treated as complete: its stored chunks that are not in `chunks` are removed.
    """
    store = store if store is not None else default_store()
    by_source: dict[str, list[Chunk]] = {}
    seen: set[str] = set()
    for c in chunks:
        if c.id in seen:
            raise UserError(f"chunk {c.id} ({c.source}, {c.title or c.kind}) is given twice",
                            hint="give each (source, kind, key) once")
        seen.add(c.id)
        by_source.setdefault(c.source, []).append(c)

    report = IndexReport(sources=len(by_source))
    with _session(store):
        to_write: list[Chunk] = []
        stale: list[str] = []
        for source, new in by_source.items():
            old = {c.id: c for c in store.chunks(source)}
            new_ids = {c.id for c in new}
            if not old:
                report.added += len(new)
                to_write += new
            elif set(old) == new_ids and all(old[c.id].fingerprint() == c.fingerprint() for c in new):
                report.unchanged += len(new)
            else:
                report.replaced += len(new)
                to_write += new
                stale += [i for i in old if i not in new_ids]
        if to_write:
            if embedder is None:
                from pipewarden import runtime

                embedder = runtime.current().embedder()
            total = len(to_write)
            if progress:
                progress(0, total)
            for start in range(0, total, EMBED_BATCH):
                batch = to_write[start : start + EMBED_BATCH]
                store.upsert(batch, embedder.embed([c.text for c in batch]))
                if progress:
                    progress(min(start + EMBED_BATCH, total), total)
        if stale:
            store.delete(stale)
            report.removed += len(stale)
        report.total = store.count()
    return report


def policy_chunks(project_dir: Path | None = None) -> list[Chunk]:
    """Every contract of the project and every runbook under `<project>/runbooks`, as chunks."""
    if project_dir is None:
        names, contracts = list_contracts(), None
        runbooks = get_settings().runbooks_dir
    else:
        contracts = project_dir / "contracts"
        names, runbooks = list_contracts(contracts), project_dir / "runbooks"
    chunks: list[Chunk] = []
    for name in names:
        chunks += contract_chunks(load_contract(name, contracts))
    for path in sorted(runbooks.glob("*.md")):
        chunks += text_chunks(path, "runbook")
    return chunks


def index_policies(
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
    *,
    progress: Progress | None = None,
    prune: bool = True,
    project_dir: Path | None = None,
) -> IndexReport:
    """Index every contract and runbook of the project.

    With `prune`, contract and runbook chunks from files under the project's folder that no longer exist are removed.
    """
    base = project_dir or get_settings().project_root
    store = store if store is not None else default_store()
    chunks = policy_chunks(project_dir)
    with _session(store):
        report = index_chunks(chunks, embedder, store, progress=progress)
        if prune:
            prefix = source_for(base).rstrip("/") + "/"
            current = {c.source for c in chunks}
            gone = {c.source for c in store.chunks() if c.kind in POLICY_KINDS and c.source.startswith(prefix)}
            for source in sorted(gone - current):
                report.removed += store.delete_source(source)
            report.total = store.count()
    return report
