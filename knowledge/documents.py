"""Chunks: the unit of the knowledge index, each carrying its provenance, and the builders that cut them.

A chunk's id is a uuid5 of (source, kind, key), so indexing the same document twice yields the same ids.
Its `content_hash` is the sha256 of its text. `source` is a path relative to the repository when the file
lies inside it (so ids match across checkouts), otherwise an absolute path or a URI.

Builders: `contract_chunks` (a contract's summary and one chunk per column), `lineage_chunks` (one chunk per
SQL model with its upstream columns) and `text_chunks` (a Markdown runbook split on headings). Decided proposals
become chunks in `knowledge.decisions`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipewarden.errors import ConfigError, InputFileError
from pipewarden.ids import utcnow
from pipewarden.policies.contract import Contract
from pipewarden.settings import get_settings

ChunkKind = Literal["contract", "lineage", "runbook", "decision"]
KINDS: tuple[str, ...] = get_args(ChunkKind)

# Fixed namespace for chunk ids: changing it changes every id, so it never changes.
CHUNK_NAMESPACE = uuid.UUID("6f1d3c52-8a0e-4c1b-9a57-3f2b7e4d9c10")

MAX_SECTION_CHARS = 1000  # MiniLM reads ~256 word pieces; longer sections are split on paragraphs


def content_hash(text: str) -> str:
    """The sha256 hex digest of a chunk's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_id(source: str, kind: str, key: int | str) -> str:
    """The stable id of the chunk `key` (an index or a name) of `source` of this `kind`."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{source}\x1f{kind}\x1f{key}"))


def source_for(path: str | Path) -> str:
    """A document's `source`: its POSIX path relative to the project's folder when inside it, else absolute."""
    p = Path(path).expanduser().resolve()
    try:
        return p.relative_to(get_settings().project_root).as_posix()
    except ValueError:
        return p.as_posix()


def file_mtime(path: str | Path) -> datetime:
    """A file's modification time, in UTC."""
    return datetime.fromtimestamp(Path(path).stat().st_mtime, tz=UTC)


class Chunk(BaseModel):
    """A piece of a document with its provenance. Build one with `Chunk.make`, which fills id and hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(description="uuid5 of (source, kind, key): the same document yields the same ids.")
    text: str
    source: str = Field(description="Repo-relative path, absolute path or URI of the document.")
    kind: ChunkKind
    dataset: str | None = None
    owner: str | None = None
    allowed_roles: list[str] = Field(min_length=1, description="Roles that may retrieve this chunk.")
    updated_at: datetime = Field(description="When the document last changed (UTC).")
    content_hash: str = Field(description="sha256 of `text`.")
    lineage: list[str] = Field(default_factory=list, description="Upstream refs, e.g. `flights.dep_delay`.")
    title: str = Field(default="", description="A heading or name for display.")

    @field_validator("updated_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @classmethod
    def make(
        cls,
        *,
        text: str,
        source: str,
        kind: ChunkKind,
        key: int | str,
        allowed_roles: list[str],
        updated_at: datetime | None = None,
        dataset: str | None = None,
        owner: str | None = None,
        lineage: list[str] | None = None,
        title: str = "",
    ) -> Chunk:
        """Build a chunk, deriving `id` from (source, kind, key) and `content_hash` from the text."""
        if not allowed_roles:
            raise ConfigError(
                f"{source}: a {kind} chunk needs at least one allowed role",
                hint="pass allowed_roles (or set `allowed_roles:` in the document's front matter)",
            )
        return cls(
            id=chunk_id(source, kind, key),
            text=text,
            source=source,
            kind=kind,
            dataset=dataset,
            owner=owner,
            allowed_roles=sorted(set(allowed_roles)),
            updated_at=updated_at or utcnow(),
            content_hash=content_hash(text),
            lineage=list(lineage or []),
            title=title,
        )

    def fingerprint(self) -> str:
        """What must match for re-indexing to be a no-op: the text and every access-relevant field.

        `updated_at` is left out on purpose: touching a file without changing it is not a change.
        """
        body = "\x1f".join(
            [self.content_hash, self.kind, self.dataset or "", self.owner or "", ",".join(self.allowed_roles),
             ",".join(self.lineage), self.title]
        )
        return hashlib.sha256(body.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- contracts
def _column_text(contract: Contract, col: Any) -> str:
    rules = [col.type, "nullable" if col.nullable else "not null"]
    if col.min is not None:
        rules.append(f"min {col.min:g}")
    if col.max is not None:
        rules.append(f"max {col.max:g}")
    if col.allowed:
        rules.append(f"allowed values {', '.join(col.allowed)}")
    if col.max_length is not None:
        rules.append(f"max length {col.max_length}")
    desc = f" {col.description}" if col.description else ""
    return f"Column {col.name} of dataset {contract.dataset} ({contract.version_tag}): {'; '.join(rules)}.{desc}"


def contract_chunks(contract: Contract) -> list[Chunk]:
    """One chunk for the contract's summary and one per column with its rules and description.

    `updated_at` is the contract file's mtime (now, for a contract built in memory without a path).
    """
    if contract.path:
        path = Path(contract.path)
        if not path.exists():
            raise InputFileError(path, "the contract file no longer exists", hint="reload the contract")
        source, updated = source_for(path), file_mtime(path)
    else:
        source, updated = f"contract:{contract.dataset}", utcnow()
    common: dict[str, Any] = {
        "source": source, "kind": "contract", "dataset": contract.dataset, "owner": contract.owner,
        "allowed_roles": list(contract.allowed_roles), "updated_at": updated,
    }
    stewards = ", ".join(contract.stewards) or "none"
    cols = ", ".join(f"{c.name} ({c.type})" for c in contract.columns)
    summary = (
        f"Data contract for dataset {contract.dataset} ({contract.version_tag}). {contract.description} "
        f"Source: {contract.source or 'unspecified'}. Owner: {contract.owner}; stewards: {stewards}. "
        f"A batch halts when more than {contract.max_failure_rate:.0%} of its rows fail or its columns do not "
        f"match. Columns: {cols}."
    )
    chunks = [Chunk.make(text=summary, key="summary", title=f"{contract.dataset} contract", **common)]
    for col in contract.columns:
        chunks.append(
            Chunk.make(text=_column_text(contract, col), key=f"column:{col.name}",
                       title=f"{contract.dataset}.{col.name}", lineage=[f"{contract.dataset}.{col.name}"], **common)
        )
    return chunks


# --------------------------------------------------------------------------- lineage
def lineage_chunks(
    edges: list[dict[str, str]],
    owner: str | None,
    allowed_roles: list[str],
    source: str,
    *,
    updated_at: datetime | None = None,
) -> list[Chunk]:
    """One chunk per SQL model, listing which upstream table columns feed each of its columns.

    Each edge is a dict with `model`, `column`, `upstream_table`, `upstream_column`.
    """
    by_model: dict[str, list[dict[str, str]]] = defaultdict(list)
    for i, edge in enumerate(edges):
        missing = [k for k in ("model", "column", "upstream_table", "upstream_column") if not edge.get(k)]
        if missing:
            raise ConfigError(
                f"{source}: lineage edge #{i} {edge!r} lacks {', '.join(missing)}",
                hint="each edge needs model, column, upstream_table and upstream_column",
            )
        by_model[edge["model"]].append(edge)
    chunks = []
    for model in sorted(by_model):
        rows = sorted(by_model[model], key=lambda e: (e["column"], e["upstream_table"], e["upstream_column"]))
        refs = sorted({f"{e['upstream_table']}.{e['upstream_column']}" for e in rows})
        parts = [f"{e['column']} <- {e['upstream_table']}.{e['upstream_column']}" for e in rows]
        text = f"Lineage of SQL model {model}: " + "; ".join(parts) + ". Upstream tables: " + ", ".join(
            sorted({e["upstream_table"] for e in rows})) + "."
        chunks.append(
            Chunk.make(text=text, source=source, kind="lineage", key=model, dataset=model, owner=owner,
                       allowed_roles=allowed_roles, updated_at=updated_at, lineage=refs, title=f"lineage of {model}")
        )
    return chunks


# --------------------------------------------------------------------------- markdown
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split a leading `---` YAML block from a Markdown body."""
    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        return {}, text
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError:
        return {}, text
    if not isinstance(meta, dict):
        return {}, text
    return meta, text[end + 4 :].lstrip("\n")


def _sections(body: str) -> list[tuple[str, str]]:
    """(heading trail, body) per heading; code fences are never read as headings."""
    trail: list[str] = []
    out: list[tuple[str, list[str]]] = [("", [])]
    in_fence = False
    for line in body.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            level = len(m.group(1))
            trail = trail[: level - 1] + [""] * max(0, level - 1 - len(trail)) + [m.group(2)]
            out.append((" > ".join(t for t in trail if t), []))
        else:
            out[-1][1].append(line)
    return [(h, "\n".join(lines).strip()) for h, lines in out if "\n".join(lines).strip() or h]


def _split_long(text: str, limit: int = MAX_SECTION_CHARS) -> list[str]:
    if len(text) <= limit:
        return [text]
    pieces, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        if cur and len(cur) + len(para) + 2 > limit:
            pieces.append(cur)
            cur = para
        else:
            cur = f"{cur}\n\n{para}" if cur else para
    if cur:
        pieces.append(cur)
    return pieces


def text_chunks(
    path: str | Path,
    kind: ChunkKind = "runbook",
    dataset: str | None = None,
    owner: str | None = None,
    allowed_roles: list[str] | None = None,
) -> list[Chunk]:
    """Cut a Markdown document into one chunk per heading section (long sections split on paragraphs).

    `dataset`, `owner` and `allowed_roles` default to the document's YAML front matter when not passed;
    a document with no allowed roles anywhere is refused. Each chunk's text starts with its heading trail.
    """
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputFileError(p, "no such file", hint="check the path") from exc
    except UnicodeDecodeError as exc:
        raise InputFileError(p, f"is not UTF-8 ({exc.reason})", hint="save it as UTF-8") from exc
    meta, body = _front_matter(raw)
    roles = allowed_roles if allowed_roles is not None else meta.get("allowed_roles")
    if not roles:
        raise ConfigError(
            f"{p}: no allowed roles for this {kind}",
            hint="pass allowed_roles or add `allowed_roles: [owner, steward, ...]` to its front matter",
        )
    source, updated = source_for(p), file_mtime(p)
    common: dict[str, Any] = {
        "source": source, "kind": kind, "dataset": dataset if dataset is not None else meta.get("dataset"),
        "owner": owner if owner is not None else meta.get("owner"), "allowed_roles": list(roles),
        "updated_at": updated,
    }
    chunks: list[Chunk] = []
    for heading, text in _sections(body):
        if not text:
            continue
        for piece in _split_long(text):
            full = f"{heading}\n\n{piece}" if heading else piece
            chunks.append(Chunk.make(text=full, key=len(chunks), title=heading, **common))
    if not chunks:
        raise InputFileError(p, "has no text to index", hint="add content under a heading")
    return chunks
