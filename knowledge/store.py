"""Vector stores for knowledge chunks: the `VectorStore` Protocol, `QdrantStore` (real) and `MemoryStore` (fake).

Access and freshness are part of every query: `ChunkFilter` carries the caller's role (a chunk is visible only
when its `allowed_roles` contains it) and an optional `updated_since`, and both stores apply it while ranking,
never afterwards, so a limit of 5 returns the 5 best chunks the caller may see.

`QdrantStore` runs Qdrant in local mode in a folder (default: `<PIPEWARDEN_HOME>/qdrant`) or talks to a server
when `PIPEWARDEN_QDRANT_URL` is set. A local folder admits one client at a time, so in local mode the store
opens the folder for each operation and closes it after, unless it is used as a context manager
(`with store: ...`), which keeps one client open for the whole block; a busy folder is retried for
`lock_wait_s` before failing. In server mode one client serves the store's lifetime (`close()` ends it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import ConfigError, UnknownNameError, UserError
from pipewarden.knowledge.documents import KINDS, Chunk
from pipewarden.settings import get_settings

COLLECTION = "knowledge"
_KEYWORD_FIELDS = ("allowed_roles", "kind", "dataset", "source")
_TS_FIELD = "updated_ts"  # float seconds since the epoch, mirrored from updated_at for range filters


class ChunkFilter(BaseModel):
    """What a query may return. `role` is required: there is no query without an access check."""

    model_config = ConfigDict(frozen=True)
    role: str = Field(min_length=1, description="Only chunks whose allowed_roles contain this role.")
    updated_since: datetime | None = Field(default=None, description="Only chunks updated at or after this.")
    kinds: list[str] | None = Field(default=None, description="Only chunks of these kinds.")
    dataset: str | None = Field(default=None, description="Only chunks about this dataset.")

    def model_post_init(self, __context: Any) -> None:
        for k in self.kinds or []:
            if k not in KINDS:
                raise UnknownNameError("chunk kind", k, KINDS)
        if self.updated_since is not None and self.updated_since.tzinfo is None:
            raise UserError(f"updated_since={self.updated_since} has no time zone", hint="pass an aware UTC datetime")

    def matches(self, chunk: Chunk) -> bool:
        """The same predicate the Qdrant filter expresses, for in-memory stores."""
        return (
            self.role in chunk.allowed_roles
            and (self.updated_since is None or chunk.updated_at >= self.updated_since)
            and (self.kinds is None or chunk.kind in self.kinds)
            and (self.dataset is None or chunk.dataset == self.dataset)
        )


class Hit(BaseModel):
    """A retrieved chunk and its cosine similarity to the query."""

    chunk: Chunk
    score: float


@runtime_checkable
class VectorStore(Protocol):
    """Where chunks and their vectors live. Every implementation passes tests/knowledge/test_store.py."""

    def upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        """Insert or overwrite chunks (by id) with one unit vector each."""
        ...

    def query(self, vector: list[float], limit: int, filter: ChunkFilter) -> list[Hit]:
        """The `limit` most similar chunks that pass `filter`, best first."""
        ...

    def count(self) -> int:
        """How many chunks are stored."""
        ...

    def chunks(self, source: str | None = None) -> list[Chunk]:
        """The stored chunks (of one source, when given), without vectors."""
        ...

    def delete(self, ids: list[str]) -> int:
        """Delete chunks by id; returns how many were asked for."""
        ...

    def delete_source(self, source: str) -> int:
        """Delete every chunk of a source; returns how many there were."""
        ...


def _check_batch(chunks: list[Chunk], vectors: list[list[float]]) -> None:
    if len(chunks) != len(vectors):
        raise UserError(f"upsert got {len(chunks)} chunks but {len(vectors)} vectors", hint="pass one vector per chunk")
    dims = {len(v) for v in vectors}
    if len(dims) > 1:
        raise UserError(f"upsert got vectors of mixed sizes {sorted(dims)}", hint="embed every chunk with one embedder")


def _payload(chunk: Chunk) -> dict[str, Any]:
    return {**chunk.model_dump(mode="json"), _TS_FIELD: chunk.updated_at.timestamp()}


def _chunk(payload: dict[str, Any] | None) -> Chunk:
    data = dict(payload or {})
    data.pop(_TS_FIELD, None)
    return Chunk.model_validate(data)


# --------------------------------------------------------------------------- in memory
class MemoryStore:
    """A dict-backed store with exact cosine ranking; the fake for tests."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[Chunk, list[float]]] = {}

    def upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        _check_batch(chunks, vectors)
        for c, v in zip(chunks, vectors, strict=True):
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            self._items[c.id] = (c, [x / norm for x in v])

    def query(self, vector: list[float], limit: int, filter: ChunkFilter) -> list[Hit]:
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        q = [x / norm for x in vector]
        hits = [
            Hit(chunk=c, score=sum(a * b for a, b in zip(q, v, strict=True)))
            for c, v in self._items.values()
            if filter.matches(c)
        ]
        hits.sort(key=lambda h: (-h.score, h.chunk.id))
        return hits[:limit]

    def count(self) -> int:
        return len(self._items)

    def chunks(self, source: str | None = None) -> list[Chunk]:
        return [c for c, _ in self._items.values() if source is None or c.source == source]

    def delete(self, ids: list[str]) -> int:
        for i in ids:
            self._items.pop(i, None)
        return len(ids)

    def delete_source(self, source: str) -> int:
        ids = [i for i, (c, _) in self._items.items() if c.source == source]
        return self.delete(ids)


# --------------------------------------------------------------------------- qdrant
def _qdrant_filter(f: ChunkFilter | None = None, *, source: str | None = None) -> Any:
    from qdrant_client import models as qm

    must: list[Any] = []
    if f is not None:
        must.append(qm.FieldCondition(key="allowed_roles", match=qm.MatchAny(any=[f.role])))
        if f.updated_since is not None:
            must.append(qm.FieldCondition(key=_TS_FIELD, range=qm.Range(gte=f.updated_since.timestamp())))
        if f.kinds is not None:
            must.append(qm.FieldCondition(key="kind", match=qm.MatchAny(any=list(f.kinds))))
        if f.dataset is not None:
            must.append(qm.FieldCondition(key="dataset", match=qm.MatchValue(value=f.dataset)))
    if source is not None:
        must.append(qm.FieldCondition(key="source", match=qm.MatchValue(value=source)))
    return qm.Filter(must=must)


class QdrantStore:
    """Chunks in a Qdrant collection (cosine), local mode on disk by default or a server by URL."""

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        collection: str = COLLECTION,
        lock_wait_s: float = 10.0,
    ) -> None:
        if path is not None and url is not None:
            raise UserError("QdrantStore got both a path and a url", hint="pass one: a local folder or a server URL")
        if path is None and url is None:
            settings = get_settings()
            url = settings.qdrant_url
            path = None if url else settings.qdrant_path
        self.path = Path(path).expanduser().resolve() if path is not None else None
        self.url = url
        self.collection = collection
        self.lock_wait_s = lock_wait_s
        self._client: Any = None
        self._depth = 0

    def __repr__(self) -> str:
        return f"QdrantStore({self.url or self.path}, collection={self.collection!r})"

    # ------------------------------------------------------------------ connection
    def _open(self) -> Any:
        from qdrant_client import QdrantClient

        if self.url is not None:
            # the compatibility check would run in a background thread on every client; we keep one client
            return QdrantClient(url=self.url, check_compatibility=False)
        assert self.path is not None
        self.path.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_wait_s
        delay = 0.05
        while True:
            try:
                return QdrantClient(path=str(self.path))
            except RuntimeError as exc:
                if "already accessed" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise UserError(
                        f"the knowledge index folder {self.path} is in use by another process",
                        hint="wait for it to finish, or run a Qdrant server and set PIPEWARDEN_QDRANT_URL",
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def __enter__(self) -> QdrantStore:
        """Local mode: hold the folder open until the block ends. Server mode: no effect."""
        if self.url is None:
            if self._depth == 0:
                self._client = self._open()
            self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        if self.url is None:
            self._depth -= 1
            if self._depth == 0:
                client, self._client = self._client, None
                client.close()

    def close(self) -> None:
        """Close the server connection (local mode closes after every operation or block by itself)."""
        if self.url is not None and self._client is not None:
            client, self._client = self._client, None
            client.close()

    @contextmanager
    def _session(self) -> Iterator[Any]:
        from qdrant_client.http.exceptions import ResponseHandlingException

        try:
            if self._client is not None:
                yield self._client
            elif self.url is not None:  # a server admits many clients: keep one for the store's lifetime
                self._client = self._open()
                yield self._client
            else:
                with self:
                    yield self._client
        except ResponseHandlingException as exc:
            raise ConfigError(
                f"cannot reach the Qdrant server at {self.url}: {exc}",
                hint="start the server or unset PIPEWARDEN_QDRANT_URL to use local mode",
            ) from exc

    def _dim(self, client: Any) -> int | None:
        """The collection's vector size, or None when it does not exist yet."""
        if not client.collection_exists(self.collection):
            return None
        vectors = client.get_collection(self.collection).config.params.vectors
        return int(vectors.size)

    def _check_dim(self, have: int, want: int) -> None:
        if have != want:
            raise ConfigError(
                f"the knowledge collection {self.collection!r} at {self.url or self.path} holds {have}-dimension "
                f"vectors but the embedder gives {want}",
                hint="use the embedder the index was built with, or delete the index folder and re-index",
            )

    def _ensure(self, client: Any, dim: int) -> None:
        from qdrant_client import models as qm

        have = self._dim(client)
        if have is not None:
            self._check_dim(have, dim)
            return
        client.create_collection(self.collection, vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.COSINE))
        if self.url is not None:  # local mode ignores payload indexes (and warns); a server uses them
            for name in _KEYWORD_FIELDS:
                client.create_payload_index(self.collection, name, field_schema=qm.PayloadSchemaType.KEYWORD)
            client.create_payload_index(self.collection, _TS_FIELD, field_schema=qm.PayloadSchemaType.FLOAT)

    # ------------------------------------------------------------------ the protocol
    def upsert(self, chunks: list[Chunk], vectors: list[list[float]], batch_size: int = 256) -> None:
        _check_batch(chunks, vectors)
        if not chunks:
            return
        from qdrant_client import models as qm

        with self._session() as client:
            self._ensure(client, len(vectors[0]))
            for start in range(0, len(chunks), batch_size):
                points = [
                    qm.PointStruct(id=c.id, vector=list(v), payload=_payload(c))
                    for c, v in zip(chunks[start : start + batch_size], vectors[start : start + batch_size], strict=True)
                ]
                client.upsert(self.collection, points=points, wait=True)

    def query(self, vector: list[float], limit: int, filter: ChunkFilter) -> list[Hit]:
        with self._session() as client:
            have = self._dim(client)
            if have is None:
                return []
            self._check_dim(have, len(vector))
            res = client.query_points(
                self.collection, query=list(vector), query_filter=_qdrant_filter(filter), limit=limit, with_payload=True
            )
        return [Hit(chunk=_chunk(p.payload), score=float(p.score)) for p in res.points]

    def count(self) -> int:
        with self._session() as client:
            if not client.collection_exists(self.collection):
                return 0
            return int(client.count(self.collection, exact=True).count)

    def chunks(self, source: str | None = None) -> list[Chunk]:
        out: list[Chunk] = []
        with self._session() as client:
            if not client.collection_exists(self.collection):
                return out
            flt = _qdrant_filter(source=source) if source is not None else None
            offset = None
            while True:
                points, offset = client.scroll(
                    self.collection, scroll_filter=flt, limit=256, offset=offset, with_payload=True, with_vectors=False
                )
                out.extend(_chunk(p.payload) for p in points)
                if offset is None:
                    return out

    def delete(self, ids: list[str]) -> int:
        if not ids:
            return 0
        from qdrant_client import models as qm

        with self._session() as client:
            if not client.collection_exists(self.collection):
                return 0
            client.delete(self.collection, points_selector=qm.PointIdsList(points=list(ids)), wait=True)
        return len(ids)

    def delete_source(self, source: str) -> int:
        from qdrant_client import models as qm

        with self._session() as client:
            if not client.collection_exists(self.collection):
                return 0
            flt = _qdrant_filter(source=source)
            n = int(client.count(self.collection, count_filter=flt, exact=True).count)
            if n:
                client.delete(self.collection, points_selector=qm.FilterSelector(filter=flt), wait=True)
            return n


def default_store() -> QdrantStore:
    """The configured store: Qdrant local mode under PIPEWARDEN_HOME, or the server at PIPEWARDEN_QDRANT_URL."""
    return QdrantStore()
