"""The audit log's hash chain: each entry's hash covers its content and the previous entry's hash."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from pipewarden.ids import UtcDatetime

GENESIS = "0" * 64


def entry_hash(prev_hash: str, at: datetime, proposal_id: str | None, action: str, actor: str, detail: Any) -> str:
    body = json.dumps(
        {
            "prev": prev_hash,
            "at": _iso(at),
            "proposal_id": proposal_id,
            "action": action,
            "actor": actor,
            "detail": detail,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _iso(at: datetime) -> str:
    # SQLite drops tzinfo on the way back; hash the naive UTC wall time so both sides agree.
    return at.replace(tzinfo=None).isoformat(timespec="microseconds")


class AuditEntry(BaseModel):
    seq: int
    at: UtcDatetime
    proposal_id: str | None
    action: str
    actor: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditReport(BaseModel):
    ok: bool
    entries: int
    first_broken_seq: int | None = None
    problem: str | None = None


def verify_chain(entries: list[AuditEntry]) -> AuditReport:
    """Walk the entries in `seq` order; report the first whose link or content hash does not verify."""
    prev = GENESIS
    for e in entries:
        if e.prev_hash != prev:
            return AuditReport(
                ok=False, entries=len(entries), first_broken_seq=e.seq,
                problem=f"entry {e.seq} links to {e.prev_hash[:12]}..., expected {prev[:12]}... "
                "(an entry before it was removed or reordered)",
            )
        expected = entry_hash(e.prev_hash, e.at, e.proposal_id, e.action, e.actor, e.detail)
        if expected != e.hash:
            return AuditReport(
                ok=False, entries=len(entries), first_broken_seq=e.seq,
                problem=f"entry {e.seq} ({e.action} by {e.actor}) was edited after it was written",
            )
        prev = e.hash
    return AuditReport(ok=True, entries=len(entries))
