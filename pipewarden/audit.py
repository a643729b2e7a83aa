"""The audit log: a hash chain, anchored.

Each entry's hash covers its content and the previous entry's hash (`entry_hash`), so an entry edited, removed
or reordered in the middle breaks every link after it (`verify_chain`). A chain alone cannot show that its newest
entries were removed, so it is anchored three ways, all checked by `verify_log` (`pipewarden audit verify`):

1. **The anchor** (`audit_anchor` table, one row): the chain's head (last seq and hash) and its entry count,
   signed with HMAC-SHA256 under a key kept in the home (`PIPEWARDEN_HOME/audit_key`, mode 0600, made on first
   use), never in the state DB. `advance_anchor` moves it in the same transaction as every append, after checking
   that the chain's tip is still the head it signed last time; if not (entries removed, the anchor edited or
   signed by another key), it keeps writing but records a sticky `alarm` in the signed row, so a later append
   cannot launder a truncation.
2. **The state against the chain** (`reconcile`): every proposal has its `proposed` entry, its current status is
   the status its audit trail ends at, and the decisions table holds exactly the decisions its trail records
   (each decision's id is in its audit entry): a proposal reset, or a decision deleted or slipped in behind the
   store, is named.
3. **The witness** (`PIPEWARDEN_HOME/audit_witness.json`): each successful verify remembers the head it saw; the
   next verify from this home checks that entry is still in the chain, so a state DB rolled back to an older
   signed anchor with a matching chain (restored from a copy) is caught from any home that verified since.

What it does not catch, and the docs say so (pipewarden/README.md, "What audit verify guarantees"): someone who
can write the state DB *and* read the key can rewrite everything consistently; a rollback to an older copy is
caught only by a home whose witness is newer than the copy.

Hand-written (hashlib, hmac): the log is a few tables and a loop; no library anchors a SQL table's chain.

Public names: `GENESIS`, `entry_hash`, `verify_chain`, `AuditEntry`, `AuditReport`, `Anchor`, `audit_key`,
`key_id`, `advance_anchor`, `read_anchor`, `reconcile`, `verify_log`, `KEY_FILE`, `WITNESS_FILE`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from pipewarden import db
from pipewarden.ids import UtcDatetime, utcnow
from pipewarden.models import ProposalStatus

GENESIS = "0" * 64
CHAIN = "main"
KEY_FILE = "audit_key"
WITNESS_FILE = "audit_witness.json"
_STATUS_ACTIONS = frozenset(s.value for s in ProposalStatus)
"""Audit actions that move a proposal to that status (`StateStore._transition` audits `dst.value`)."""


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
    """What `verify_log` found: `ok`, the first problem (`problem`, `first_broken_seq`) and every problem."""

    ok: bool
    entries: int
    first_broken_seq: int | None = None
    problem: str | None = None
    problems: list[str] = Field(default_factory=list)
    anchored_seq: int | None = None
    """The seq the signed anchor names as the chain's last entry (None: no anchor)."""
    notes: list[str] = Field(default_factory=list)
    """What is true but worth knowing (entries older than the anchor, for one)."""


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


# --------------------------------------------------------------------------- the key
def audit_key(home: Path) -> bytes:
    """The HMAC key of this home's anchor (`home/audit_key`, 64 hex characters, mode 0600), made on first use.

    Every home that writes to one state DB needs the same key: copy the file to each."""
    path = home / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        home.mkdir(parents=True, exist_ok=True)
        # written whole to a private temp file, then linked into place: another process sees no key or all of it,
        # and if two make one at once the first link wins and both use it
        tmp = home / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return _read_key(path)


def _read_key(path: Path) -> bytes:
    text = path.read_text(encoding="utf-8").strip()
    if len(text) < 32:
        from pipewarden.errors import ConfigError

        raise ConfigError(f"{path} is not an audit key (expected 64 hex characters, got {len(text)})",
                          hint="restore it from the home that made it; a new key makes every anchor signed with "
                          "the old one fail `audit verify`")
    return text.encode()


def key_id(key: bytes) -> str:
    """A short public name for a key (the first 12 hex characters of its sha256), to tell two keys apart."""
    return hashlib.sha256(key).hexdigest()[:12]


# --------------------------------------------------------------------------- the anchor
class Anchor(BaseModel):
    """The signed head of the chain (`audit_anchor`)."""

    seq: int
    hash: str
    entries: int
    since_seq: int
    """The first entry the anchor has covered (1 unless the log was written before anchoring)."""
    alarm: str | None = None
    """Set by an append that found the chain not where the anchor said; never cleared by an append."""
    key_id: str
    mac: str
    updated_at: UtcDatetime

    def expected_mac(self, key: bytes) -> str:
        return _mac(key, self.seq, self.hash, self.entries, self.since_seq, self.alarm)

    def signed_by(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, self.expected_mac(key))


def _mac(key: bytes, seq: int, hash_: str, entries: int, since_seq: int, alarm: str | None) -> str:
    body = json.dumps({"chain": CHAIN, "seq": seq, "hash": hash_, "entries": entries, "since": since_seq,
                       "alarm": alarm}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


# Built once: every audited action reads and moves the anchor (building the statements anew cost as much CPU).
_ANCHOR_ROW = sa.select(db.audit_anchor).where(db.audit_anchor.c.chain == sa.bindparam("b_chain"))
_MOVE_ANCHOR = db.audit_anchor.update().where(db.audit_anchor.c.chain == sa.bindparam("b_chain"))  # SET: the params


def read_anchor(conn: Connection) -> Anchor | None:
    row = conn.execute(_ANCHOR_ROW, {"b_chain": CHAIN}).mappings().one_or_none()
    return Anchor.model_validate(dict(row)) if row is not None else None


def advance_anchor(conn: Connection, *, prev_hash: str, seq: int, hash_: str, key: bytes) -> None:
    """Move the anchor to the entry just appended (`seq`, `hash_`, linked to `prev_hash`), in the append's own
    transaction (the caller holds the append lock). An anchor that did not name `prev_hash` as the head, or whose
    signature does not verify with `key`, gets a sticky alarm saying what was found."""
    now = utcnow().replace(tzinfo=None)
    anchor = read_anchor(conn)
    if anchor is None:
        if prev_hash == GENESIS:
            entries, since, alarm = 1, seq, None
        else:  # a log written before anchoring (or an anchor deleted): anchored from here, and verify says since when
            entries = int(conn.execute(sa.select(sa.func.count()).select_from(db.audit_log)).scalar_one())
            since, alarm = seq, None
    else:
        entries, since, alarm = anchor.entries + 1, anchor.since_seq, anchor.alarm
        if alarm is None and not anchor.signed_by(key):
            alarm = (f"at {now:%Y-%m-%d %H:%M:%S} UTC an append found the anchor's signature invalid for this "
                     f"home's key {key_id(key)} (the anchor names key {anchor.key_id}): the anchor was edited, or "
                     "a home with another audit key writes to this state DB")
        elif alarm is None and anchor.hash != prev_hash:
            entries = int(conn.execute(sa.select(sa.func.count()).select_from(db.audit_log)).scalar_one())
            alarm = (f"at {now:%Y-%m-%d %H:%M:%S} UTC an append found the chain's tip at {prev_hash[:12]}..., but "
                     f"the anchor ended at entry {anchor.seq} ({anchor.hash[:12]}...) after {anchor.entries} "
                     f"entries: entries were removed from the end of the log (or the anchor was replaced) before "
                     f"entry {seq} was written")
    values = {"seq": seq, "hash": hash_, "entries": entries, "since_seq": since, "alarm": alarm,
              "key_id": key_id(key), "mac": _mac(key, seq, hash_, entries, since, alarm), "updated_at": now}
    if anchor is None:
        conn.execute(db.audit_anchor.insert().values(chain=CHAIN, **values))
    else:
        conn.execute(_MOVE_ANCHOR, {"b_chain": CHAIN, **values})


def _anchor_problems(entries: Sequence[AuditEntry], anchor: Anchor | None, key: bytes) -> tuple[list[str], int | None]:
    """Problems of the anchor against the chain, and the seq where the first one is."""
    if anchor is None:
        if not entries:
            return [], None
        return [f"the audit log has {len(entries)} entries but no anchor: the anchor was deleted, or this state DB "
                "was last written before pipewarden anchored its audit log (the next audited action anchors it)"], \
            entries[-1].seq
    problems: list[str] = []
    if not anchor.signed_by(key):
        problems.append(f"the anchor's signature does not verify with this home's audit key {key_id(key)} (the "
                        f"anchor names key {anchor.key_id}): the anchor was edited, or this home has another key "
                        "than the homes that write (copy audit_key from one of them)")
    if anchor.alarm:
        problems.append(anchor.alarm)
    last = entries[-1] if entries else None
    if last is None or anchor.seq > last.seq:
        missing = anchor.entries - len(entries)
        problems.append(
            f"the newest {missing if missing > 0 else 'some'} entr{'y is' if missing == 1 else 'ies are'} missing: "
            f"the anchor says the log ends at entry {anchor.seq} ({anchor.hash[:12]}...) with {anchor.entries} "
            f"entries; it ends at entry {last.seq if last else 0} with {len(entries)}")
    elif anchor.seq < last.seq:
        problems.append(f"entries {anchor.seq + 1}..{last.seq} were written after the anchor's last entry "
                        f"({anchor.seq}) without moving it: they were added behind the store")
    elif anchor.hash != last.hash:
        problems.append(f"entry {last.seq} is not the entry the anchor signed ({anchor.hash[:12]}..., found "
                        f"{last.hash[:12]}...): the newest entries were replaced")
    elif anchor.entries != len(entries):
        problems.append(f"the anchor counts {anchor.entries} entries, the log holds {len(entries)}")
    seq = anchor.seq if problems else None
    return problems, seq


# --------------------------------------------------------------------------- the state against the chain
def reconcile(entries: Sequence[AuditEntry], proposals: dict[str, str],
              decisions: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Problems where the proposals and decisions tables disagree with the audit trail.

    `proposals`: {id: status}; `decisions`: {proposal id: [(decision id, actor), ...]}."""
    problems: list[str] = []
    status: dict[str, tuple[str, int]] = {}
    audited: dict[str, dict[str, tuple[str, int]]] = {}
    for e in entries:
        if e.proposal_id is None:
            continue
        pid = e.proposal_id
        if e.action == "proposed":
            status[pid] = (str(e.detail.get("status", "pending")), e.seq)
        elif e.action in _STATUS_ACTIONS:
            status[pid] = (e.action, e.seq)
        if e.detail.get("decision_id"):
            audited.setdefault(pid, {})[str(e.detail["decision_id"])] = (e.actor, e.seq)
    for pid, now in sorted(proposals.items()):
        if pid not in status:
            problems.append(f"proposal {pid[:8]} is {now} but has no 'proposed' audit entry: its history was "
                            "removed, or it was written behind the store")
            continue
        trail, at = status[pid]
        if trail != now:
            problems.append(f"proposal {pid[:8]} is {now}, but its audit trail ends at {trail} (entry {at}): its "
                            "status was changed behind the store")
        stored = dict(decisions.get(pid, []))
        recorded = audited.get(pid, {})
        for did, (actor, seq) in sorted(recorded.items(), key=lambda kv: kv[1][1]):
            if did not in stored:
                problems.append(f"proposal {pid[:8]}'s decision by {actor} (audit entry {seq}) is missing from "
                                "the decisions table: it was deleted")
        for did, actor in sorted(stored.items()):
            if did not in recorded:
                problems.append(f"proposal {pid[:8]} has a decision by {actor} ({did[:8]}) that no audit entry "
                                "records: it was written behind the store")
    for pid in sorted(set(status) - set(proposals)):
        problems.append(f"proposal {pid[:8]} has audit entries (the last: entry {status[pid][1]}) but no row: it "
                        "was deleted")
    return problems


# --------------------------------------------------------------------------- the witness
def _read_witness(path: Path) -> tuple[int, str] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["seq"]), str(data["hash"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _write_witness(path: Path, seq: int, hash_: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"seq": seq, "hash": hash_}) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- verify
def verify_log(conn: Connection, *, key: bytes, home: Path | None = None) -> AuditReport:
    """The whole check behind `pipewarden audit verify`: the chain, the signed anchor, the proposals and decisions
    against the chain, and (with `home`) this home's witness, which a passing verify then moves to the head."""
    rows = conn.execute(sa.select(db.audit_log).order_by(db.audit_log.c.seq)).mappings().all()
    entries = [AuditEntry.model_validate(dict(r)) for r in rows]
    chain = verify_chain(entries)
    problems: list[str] = [chain.problem] if chain.problem else []
    first = chain.first_broken_seq
    anchor = read_anchor(conn)
    anchor_problems, anchor_seq = _anchor_problems(entries, anchor, key)
    problems += anchor_problems
    first = first if first is not None else anchor_seq
    proposals = {str(r.id): str(r.status) for r in conn.execute(sa.select(db.proposals.c.id, db.proposals.c.status))}
    decisions: dict[str, list[tuple[str, str]]] = {}
    for r in conn.execute(sa.select(db.decisions.c.id, db.decisions.c.proposal_id, db.decisions.c.actor)):
        decisions.setdefault(str(r.proposal_id), []).append((str(r.id), str(r.actor)))
    problems += reconcile(entries, proposals, decisions)
    witness_path = home / WITNESS_FILE if home is not None else None
    witness = _read_witness(witness_path) if witness_path is not None else None
    if witness is not None:
        seen = {e.seq: e.hash for e in entries}
        if seen.get(witness[0]) != witness[1]:
            problems.append(f"this home verified the log up to entry {witness[0]} ({witness[1][:12]}...), which is "
                            "no longer in it: the log was rolled back or rewritten since")
            first = first if first is not None else witness[0]
    notes: list[str] = []
    if anchor is not None and anchor.since_seq > 1:
        notes.append(f"entries before {anchor.since_seq} were written before the log was anchored: their removal "
                     "from the end is not detectable")
    ok = not problems
    if ok and witness_path is not None and entries:
        _write_witness(witness_path, entries[-1].seq, entries[-1].hash)
    return AuditReport(ok=ok, entries=len(entries), first_broken_seq=None if ok else first,
                       problem="\n".join(problems) or None, problems=problems,
                       anchored_seq=anchor.seq if anchor else None, notes=notes)
