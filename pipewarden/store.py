"""The state store: the one way anything reads or writes the state DB.

It owns the outbox (events, and the idempotency keys of events reported from outside a flow), proposals with
their lifecycle, decisions, versions, the audit log, personal API tokens (hashed) and the Slack messages posted for
proposals. Every proposal status change happens in one transaction with its audit entry, as a compare-and-set on
the current status, so concurrent writers leave exactly one winner and a crash leaves nothing half-done.

Deciding is atomic: in one transaction the proposal's row is locked (PostgreSQL `SELECT ... FOR UPDATE`; SQLite
`BEGIN IMMEDIATE`), its status and decisions are read, the approval policy (a callable passed in, so the kernel
never imports `policies/`) checks the decision and says whether it completes the approval, the decision is
inserted (a unique (proposal, round, seq) index is the last line of defence), and the proposal moves on when the
policy is satisfied. Audit appends are serialized on PostgreSQL by an advisory lock, on SQLite by BEGIN IMMEDIATE.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar
from uuid import UUID

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from pipewarden import db, faults
from pipewarden.audit import GENESIS, AuditEntry, AuditReport, advance_anchor, audit_key, entry_hash, verify_log
from pipewarden.errors import Expired, Forbidden, InvalidField, InvalidTransition, UnknownNameError, UserError
from pipewarden.events import Event, parse_event
from pipewarden.fault_signature import FaultSignature
from pipewarden.ids import UtcDatetime, new_id, utcnow
from pipewarden.leases import LEASE_POLICY, LeaseHeld, LeasePolicy, owner_is_gone
from pipewarden.models import (
    AUTO_VIAS,
    AUTONOMY_ACTOR,
    OPEN_STATUSES,
    POLICY_ACTOR,
    Decision,
    Proposal,
    ProposalStatus,
    Verdict,
    Version,
    can_transition,
    is_system_actor,
)
from pipewarden.report import check_idempotency_key
from pipewarden.settings import Settings, get_settings
from pipewarden.tokens import hash_token, new_token, same_hash

T = TypeVar("T")
MIN_PREFIX = 4  # the shortest proposal id prefix accepted
_ID_CHARS = re.compile(r"[0-9a-f][0-9a-f-]*")  # what a proposal id (a UUID) or a prefix of one is made of
AUDIT_LOCK = 7_420_114  # pg_advisory_xact_lock key serializing appends to the audit chain
SLACK_SWEEP_S = 60.0  # how often one process deletes Slack signatures past their window (see seen_slack_request)
# Per engine: when this process last deleted old Slack signatures (monotonic). Housekeeping only: a signature past
# its window counts as unseen whether or not it was deleted yet.
_SWEPT: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()

# The statements on the path of every decision and sign-in, built once: SQLAlchemy caches a statement's compiled
# form, but building a statement and its cache key anew took about as much CPU as running it (issue 10).
_P = db.proposals.c
_PROPOSAL_ROW = sa.select(db.proposals).where(_P.id == sa.bindparam("pid"))
_STATUS = sa.select(_P.status).where(_P.id == sa.bindparam("pid"))
_STATUS_FOR_UPDATE = _STATUS.with_for_update()
_DECISIONS = (sa.select(db.decisions).where(db.decisions.c.proposal_id == sa.bindparam("pid"))
              .order_by(db.decisions.c.decided_at, db.decisions.c.seq))
_MOVE = db.proposals.update().where(_P.id == sa.bindparam("b_id"), _P.status == sa.bindparam("b_src"))  # SET: the params
_INSERT_DECISION = db.decisions.insert()
_AUDIT_TIP = sa.select(db.audit_log.c.hash).order_by(db.audit_log.c.seq.desc()).limit(1)
_INSERT_AUDIT = db.audit_log.insert()
_AUDIT_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")
_TOKEN_ROW = (sa.select(db.api_tokens.c.approver, db.api_tokens.c.sha256, db.api_tokens.c.revoked_at)
              .where(db.api_tokens.c.sha256 == sa.bindparam("digest")))
# The approval policy `decide` runs inside its transaction: raise to refuse, return True when the proposal is
# decided with this decision (a rejection, or enough approvals), False when it still waits for more approvals.
DecisionPolicy = Callable[[Proposal, list[Decision], Decision], bool]


class SlackMessage(BaseModel):
    """Where a proposal's Slack message lives, and the fault it belongs to (one thread per fault)."""

    proposal_id: str
    channel: str
    ts: str
    thread_ts: str | None = None
    fault_key: str
    updated_at: UtcDatetime


EventFailure = Literal["failed", "crashed"]  # the agent's code raised | the worker died (its lease expired)


class Claim(BaseModel):
    """An event a worker claimed: the event, which attempt this is, and the owner of the crashed claim it replaced."""

    event: Event
    attempts: int
    crashed_owner: str | None = None


class Occurrence(BaseModel):
    """One event of a fault's proposal: its origin (the event the proposal was drafted for) or a repeat attached
    to it while it was open."""

    event_id: str
    proposal_id: str
    role: Literal["origin", "attached"]
    label: str
    load_id: str | None = None
    attached_at: UtcDatetime


class PastProposal(BaseModel):
    """An earlier proposal of the same fault: the proposal as it stands, whether it was ever rolled back, and its
    decisions (every round)."""

    proposal: Proposal
    rolled_back: bool
    decisions: list[Decision]


class FaultHistory(BaseModel):
    """A fault's signature (`FaultSignature.key` and label) and its earlier proposals, oldest first."""

    signature: str
    label: str
    past: list[PastProposal]


class Decided(BaseModel):
    """What `StateStore.decide_outcome` committed: the decision, the proposal as it stands after it, and the
    proposal's decisions (every round, oldest first, this one last). Read in the deciding transaction, so a front
    end answers without reading the state DB again."""

    decision: Decision
    proposal: Proposal
    decisions: list[Decision]


class ApiToken(BaseModel):
    """A personal token's record (never the token itself)."""

    id: str
    approver: str
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None


class StateStore:
    """Typed access to the state DB. Cheap to construct; engines are cached per URL."""

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        if url is None:
            url = settings.state_url
            if url.startswith("sqlite"):
                settings.ensure_home()
        self.url = url
        self.engine: Engine = db.make_engine(url)
        self.home = settings.home
        """Where the audit key and this home's audit witness live (pipewarden/audit.py)."""

    # ------------------------------------------------------------------ plumbing
    def _write(self, fn: Callable[[Connection], T], attempts: int = 8) -> T:
        """Run `fn` in one transaction, retrying when another writer won a race on the audit tip. On a SQLite file
        the transaction is shared with the writes that arrive meanwhile (`db.GroupCommit`: one fsync for all)."""
        group = db.group_commit(self.engine)
        for attempt in range(attempts):
            try:
                if group is not None:
                    return group.run(fn)  # type: ignore[no-any-return]
                with self.engine.begin() as conn:
                    return fn(conn)
            except (IntegrityError, OperationalError) as exc:
                if attempt == attempts - 1 or not _is_race(exc):
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(pw_read=True) as conn:
            yield conn

    def _audit(self, conn: Connection, proposal_id: str | None, action: str, actor: str, detail: dict[str, Any]) -> None:
        if db.is_postgres(conn):  # one appender at a time: the tip read below stays the tip until commit
            conn.execute(_AUDIT_LOCK, {"k": AUDIT_LOCK})
        tip = conn.execute(_AUDIT_TIP).scalar_one_or_none()
        prev = tip or GENESIS
        at = utcnow().replace(tzinfo=None)
        h = entry_hash(prev, at, proposal_id, action, actor, detail)
        res = conn.execute(_INSERT_AUDIT, {"at": at, "proposal_id": proposal_id, "action": action, "actor": actor,
                                           "detail": detail, "prev_hash": prev, "hash": h})
        advance_anchor(conn, prev_hash=prev, seq=int(res.inserted_primary_key[0]), hash_=h, key=audit_key(self.home))

    # ------------------------------------------------------------------ outbox
    def append_event(self, event: Event) -> bool:
        """Write an event to the outbox. Returns False if an event with this id is already there."""
        return self._write(lambda conn: _insert_event(conn, event))

    def report_event(self, event: Event, reporter: str, *, idempotency_key: str | None = None,
                     via: str = "api") -> tuple[str, bool]:
        """Write an event reported from outside a flow to the outbox, as `append_event` does, and audit who reported
        it (`event_reported`), in one transaction. Returns (event id, created).

        With an idempotency key, the same reporter reporting with the same key again stores nothing and gets the
        first event's id back (created False); the same key for a different event is refused (InvalidField). Two
        concurrent reports with one key store one event: the (reporter, key) primary key lets one commit, the other
        is retried and finds it.
        """
        key = check_idempotency_key(idempotency_key)

        def tx(conn: Connection) -> tuple[str, bool]:
            if key is not None:
                first = conn.execute(sa.select(db.idempotency_keys.c.event_id).where(
                    db.idempotency_keys.c.reporter == reporter, db.idempotency_keys.c.key == key)).scalar_one_or_none()
                if first is not None:
                    _same_report(conn, first, event, key)
                    return first, False
            if not _insert_event(conn, event):
                return str(event.id), False
            if key is not None:
                conn.execute(db.idempotency_keys.insert().values(reporter=reporter, key=key, event_id=str(event.id),
                                                                 created_at=utcnow()))
            detail: dict[str, Any] = {"event_id": str(event.id), "kind": event.kind, "dataset": event.dataset,
                                      "via": via}
            if key is not None:
                detail["idempotency_key"] = key
            self._audit(conn, None, "event_reported", reporter, detail)
            return str(event.id), True

        for attempt in range(3):
            try:
                return self._write(tx)
            except IntegrityError as exc:  # another report with this key committed first (PostgreSQL)
                if key is None or "idempotency_keys" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def claim(self, worker: str, limit: int = 10, *, lease: LeasePolicy = LEASE_POLICY,
              now: datetime | None = None) -> list[Claim]:
        """Claim events for `worker` under a lease of `lease.ttl_s`: pending ones whose backoff has passed, and
        claimed ones whose lease expired or whose owner process is gone (a crashed worker: taken over at once,
        recorded as `crashed` and audited as `event_crashed`).

        Each claim is a compare-and-set on the row's status and attempt count, so of two supervisors exactly one
        gets an event. Every claim counts as an attempt.
        """
        now = now or utcnow()
        c = db.events.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(c.id, c.status, c.claimed_by, c.claimed_at, c.lease_expires_at, c.next_attempt_at,
                          c.attempts)
                .where(c.status.in_(["pending", "claimed"])).order_by(c.created_at)
            ).all()
        claimed: list[Claim] = []
        for row in rows:
            if len(claimed) >= limit:
                break
            if row.status == "pending":
                if row.next_attempt_at is not None and _aware(row.next_attempt_at) > now:
                    continue  # backing off after a failure
                crashed_owner = None
            else:
                expires = row.lease_expires_at or (row.claimed_at + timedelta(seconds=lease.ttl_s)
                                                   if row.claimed_at else None)
                if expires is not None and _aware(expires) > now and not owner_is_gone(row.claimed_by):
                    continue  # its owner is alive and renewing
                crashed_owner = row.claimed_by or "an unknown worker"

            def tx(conn: Connection, row: Any = row, crashed_owner: str | None = crashed_owner) -> Claim | None:
                values: dict[str, Any] = {"status": "claimed", "claimed_by": worker, "claimed_at": now,
                                          "lease_expires_at": now + timedelta(seconds=lease.ttl_s),
                                          "attempts": row.attempts + 1}
                if crashed_owner is not None:
                    values.update(failure="crashed", error=f"the worker {crashed_owner} died while it handled the "
                                  "event (its lease expired without the work finishing)")
                res = conn.execute(db.events.update()
                                   .where(c.id == row.id, c.status == row.status, c.attempts == row.attempts)
                                   .values(**values))
                if res.rowcount != 1:
                    return None  # another worker claimed it first
                payload = conn.execute(sa.select(c.payload).where(c.id == row.id)).scalar_one()
                if crashed_owner is not None:
                    self._audit(conn, None, "event_crashed", worker,
                                {"event_id": row.id, "owner": crashed_owner, "attempts": row.attempts})
                return Claim(event=parse_event(payload), attempts=row.attempts + 1, crashed_owner=crashed_owner)

            got = self._write(tx)
            if got is not None:
                claimed.append(got)
        return claimed

    def claim_events(self, worker: str, limit: int = 10, *, lease: LeasePolicy = LEASE_POLICY,
                     now: datetime | None = None) -> list[Event]:
        """`claim`, returning only the events."""
        return [c.event for c in self.claim(worker, limit, lease=lease, now=now)]

    def renew_event_lease(self, event_id: UUID | str, worker: str, *, lease: LeasePolicy = LEASE_POLICY) -> bool:
        """The heartbeat of a claim: extend its lease. False when `worker` no longer holds it (taken over)."""
        c = db.events.c
        until = utcnow() + timedelta(seconds=lease.ttl_s)
        return self._write(lambda conn: conn.execute(
            db.events.update().where(c.id == str(event_id), c.status == "claimed", c.claimed_by == worker)
            .values(lease_expires_at=until)).rowcount == 1)

    def finish_event(self, event_id: UUID | str, status: str, error: str | None = None) -> None:
        """Move a claimed event to `proposed`, `done` or back to `pending`; its lease ends."""
        if status not in {"proposed", "done", "pending", "ignored"}:
            raise ValueError(f"bad event status {status!r}: use proposed, done or pending (failures: fail_event)")
        self._write(
            lambda conn: conn.execute(
                db.events.update().where(db.events.c.id == str(event_id))
                .values(status=status, error=error, lease_expires_at=None, next_attempt_at=None)
            )
        )

    def fail_event(self, event_id: UUID | str, worker: str, error: str, *, failure: EventFailure = "failed",
                   retry_at: datetime | None = None) -> str:
        """An attempt at an event ended badly (`failed`: the agent raised; `crashed`: its worker died). With
        `retry_at` the event goes back to pending until then (backoff); without, it is dead-lettered (`dead`), for
        a person. Audited (`event_failed` or `event_dead`). Returns the event's new status.

        Refused (nothing written, returns the current status) when `worker` no longer holds the claim."""
        status = "pending" if retry_at is not None else "dead"

        def tx(conn: Connection) -> str:
            c = db.events.c
            res = conn.execute(db.events.update()
                               .where(c.id == str(event_id), c.status == "claimed", c.claimed_by == worker)
                               .values(status=status, error=error[:4000], failure=failure, lease_expires_at=None,
                                       next_attempt_at=retry_at))
            if res.rowcount != 1:
                return str(conn.execute(sa.select(c.status).where(c.id == str(event_id))).scalar_one())
            attempts = conn.execute(sa.select(c.attempts).where(c.id == str(event_id))).scalar_one()
            detail: dict[str, Any] = {"event_id": str(event_id), "failure": failure, "attempts": attempts,
                                      "error": error[:2000]}
            if retry_at is not None:
                detail["retry_at"] = retry_at.isoformat()
            self._audit(conn, None, "event_failed" if retry_at is not None else "event_dead", worker, detail)
            return status

        return self._write(tx)

    def event_row(self, event_id: UUID | str) -> dict[str, Any]:
        """The outbox row of an event (status, attempts, failure, error, lease...), without its payload."""
        c = db.events.c
        with self._read() as conn:
            row = conn.execute(sa.select(*[col for col in db.events.c if col.name != "payload"])
                               .where(c.id == str(event_id))).first()
        if row is None:
            raise UnknownNameError("event", str(event_id), [])
        return dict(row._mapping)

    def get_event(self, event_id: UUID | str) -> Event:
        with self._read() as conn:
            payload = conn.execute(
                sa.select(db.events.c.payload).where(db.events.c.id == str(event_id))
            ).scalar_one_or_none()
        if payload is None:
            raise UnknownNameError("event", str(event_id), [])
        return parse_event(payload)

    def list_events(self, status: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(db.events).order_by(db.events.c.created_at)
        if status:
            q = q.where(db.events.c.status == status)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # ------------------------------------------------------------------ proposals
    def create_proposal(self, proposal: Proposal, actor: str = "agent", *, lease_owner: str | None = None,
                        lease: LeasePolicy = LEASE_POLICY) -> Proposal:
        """Store a new proposal; idempotent per event: a second call returns the proposal already stored.

        `lease_owner`: the worker running the graph that drafts it, stored as the new row's lease holder, so no
        other worker resumes the graph while its author is still running it."""

        def tx(conn: Connection) -> Proposal:
            existing = conn.execute(
                sa.select(db.proposals.c.id).where(db.proposals.c.event_id == str(proposal.event_id))
            ).scalar_one_or_none()
            if existing:
                return self._load(conn, existing)
            now = utcnow()
            conn.execute(
                db.proposals.insert().values(
                    id=str(proposal.id), event_id=str(proposal.event_id), agent=proposal.agent,
                    dataset=proposal.dataset, status=proposal.status.value, risk=proposal.risk.value,
                    payload=proposal.model_dump(mode="json"), created_at=now, updated_at=now,
                    expires_at=proposal.expires_at, lease_owner=lease_owner,
                    lease_expires_at=now + timedelta(seconds=lease.ttl_s) if lease_owner else None,
                )
            )
            detail = {"status": proposal.status.value, "change": proposal.change.kind, "agent": proposal.agent}
            if proposal.expires_at is not None:
                detail["expires_at"] = proposal.expires_at.isoformat()
            self._audit(conn, str(proposal.id), "proposed", actor, detail)
            return proposal

        # The approval policy stamps it first (its rule's expiry), through the kernel's Admission port.
        from pipewarden.ports import admission

        proposal = admission()(proposal)
        return self._write(tx)

    def _load(self, conn: Connection, proposal_id: str) -> Proposal:
        return _proposal(conn.execute(_PROPOSAL_ROW, {"pid": proposal_id}).one())

    def resolve_id(self, ref: str | UUID) -> str:
        """Accept a full id or a unique prefix of at least 4 hex characters (as printed by `inbox list`).

        Anything else (`____`, `%`, a title) is refused by name: a prefix is matched literally, never as a pattern.
        """
        ref = str(ref)
        wanted = ref.strip().lower()
        if len(wanted) < MIN_PREFIX or not _ID_CHARS.fullmatch(wanted):
            raise UserError(
                f"{ref!r} is not a proposal id: give the id, or the first {MIN_PREFIX} or more of its hex characters",
                hint="`pipewarden inbox list` prints each proposal's id (e.g. 3f2a1b4c)",
            )
        with self._read() as conn:
            if len(wanted) == 36:
                hit = conn.execute(sa.select(db.proposals.c.id).where(db.proposals.c.id == wanted)).scalar_one_or_none()
                if hit:
                    return hit
            else:
                hits = conn.execute(
                    sa.select(db.proposals.c.id).where(db.proposals.c.id.startswith(wanted, autoescape=True)).limit(10)
                ).scalars().all()
                if len(hits) == 1:
                    return hits[0]
                if len(hits) > 1:
                    raise UserError(f"proposal id {ref!r} is ambiguous ({len(hits)} match)",
                                    hint="give more characters of the id")
            raise _unknown_proposal(conn, ref)

    def get_proposal(self, ref: str | UUID) -> Proposal:
        full = _full_id(ref)
        if full is not None:  # the usual case: one statement, where resolving first read the row twice
            with self._read() as conn:
                row = conn.execute(_PROPOSAL_ROW, {"pid": full}).first()
            if row is not None:
                return _proposal(row)
        pid = self.resolve_id(ref)  # a prefix, or an id that is not there (UnknownNameError, listing some ids)
        with self._read() as conn:
            return self._load(conn, pid)

    def proposal_for_event(self, event_id: UUID | str) -> Proposal | None:
        with self._read() as conn:
            pid = conn.execute(
                sa.select(db.proposals.c.id).where(db.proposals.c.event_id == str(event_id))
            ).scalar_one_or_none()
            return self._load(conn, pid) if pid else None

    def list_proposals(self, status: str | list[str] | None = None, limit: int = 500) -> list[Proposal]:
        q = sa.select(db.proposals.c.id).order_by(db.proposals.c.created_at.desc()).limit(limit)
        if status:
            q = q.where(db.proposals.c.status.in_([status] if isinstance(status, str) else status))
        with self._read() as conn:
            return [self._load(conn, pid) for pid in conn.execute(q).scalars()]

    def _transition(
        self, conn: Connection, pid: str, dst: ProposalStatus, actor: str, reason: str = "",
        detail: dict[str, Any] | None = None, patch: dict[str, Any] | None = None, *,
        current: Proposal | None = None, columns: dict[str, Any] | None = None,
    ) -> Proposal:
        """`current`: the proposal as this transaction already read it (saves reading it again); `columns`: more
        columns of its row to set in the same UPDATE."""
        current = current if current is not None else self._load(conn, pid)
        src = current.status
        if not can_transition(src, dst):
            raise InvalidTransition(
                f"proposal {pid[:8]} is {current.status.value}; it cannot become {dst.value}",
                hint="run `pipewarden inbox show ID` to see its history",
            )
        current.status = dst
        current.status_reason = reason
        current.updated_at = utcnow()
        if src == ProposalStatus.rolled_back and dst == ProposalStatus.pending:
            current.round += 1  # re-opened: earlier approvals no longer count
        for k, v in (patch or {}).items():
            setattr(current, k, v)
        res = conn.execute(_MOVE, {"b_id": pid, "b_src": src.value, "status": dst.value,
                                   "payload": current.model_dump(mode="json"), "updated_at": current.updated_at,
                                   "expires_at": current.expires_at, **(columns or {})})
        if res.rowcount != 1:  # another writer moved it first (PostgreSQL; SQLite serializes writers)
            raise InvalidTransition(f"proposal {pid[:8]} changed under us; it is no longer {src.value}",
                                    hint="run `pipewarden inbox show ID` to see what happened")
        self._audit(conn, pid, dst.value, actor, {"reason": reason, **(detail or {})})
        return current

    def transition(
        self, ref: str | UUID, dst: ProposalStatus, actor: str, reason: str = "",
        detail: dict[str, Any] | None = None, patch: dict[str, Any] | None = None,
        expect: ProposalStatus | None = None,
    ) -> Proposal:
        """Move a proposal to `dst` with an audit entry, atomically. `expect` guards the current status."""
        pid = self.resolve_id(ref)

        def tx(conn: Connection) -> Proposal:
            if expect is not None:
                now_status = ProposalStatus(_status_before(conn, pid))
                if now_status != expect:
                    raise InvalidTransition(f"proposal {pid[:8]} is {now_status.value}, not {expect.value}")
            return self._transition(conn, pid, dst, actor, reason, detail, patch)

        return self._write(tx)

    def decide(
        self, ref: str | UUID, verdict: Verdict, actor: str, reason: str = "", via: str = "cli", *,
        policy: DecisionPolicy | None = None, detail: dict[str, Any] | None = None,
    ) -> Decision:
        """Record a decision; see `decide_outcome`, which also returns the proposal and decisions it left."""
        return self.decide_outcome(ref, verdict, actor, reason, via, policy=policy, detail=detail).decision

    def decide_outcome(
        self, ref: str | UUID, verdict: Verdict, actor: str, reason: str = "", via: str = "cli", *,
        policy: DecisionPolicy | None = None, detail: dict[str, Any] | None = None,
    ) -> Decided:
        """Record a decision and, when it completes the approval, move the proposal on; in one transaction.

        The proposal's row is locked, then: refused when the proposal is not open (InvalidTransition), expired
        (Expired), or the actor is a system or agent identity (Forbidden; only actor "policy" via "policy" and
        "pipewarden:autonomy" via "autonomy" are let through, to the policy). `policy(proposal, decisions, decision)` then checks the decision (raising
        to refuse) and says whether the proposal is decided with it; without a policy one approval suffices.
        An approval that does not complete the policy is stored and audited as `approval_recorded`; the
        proposal stays pending. Any refusal leaves the state DB exactly as it was. `detail` joins the decision's
        audit entry (earned autonomy records its rule and the approvals it relied on there). An auto-approval (via
        "policy" or "autonomy") is marked on the proposal (`auto_approved_by`) for every front end.
        """
        name = actor.strip()
        if is_system_actor(name) and (name, via) not in {(POLICY_ACTOR, "policy"), (AUTONOMY_ACTOR, "autonomy")}:
            raise Forbidden(f"{actor!r} is a system identity and can never decide a proposal",
                            hint="decide as a named person who proves it: a personal token (PIPEWARDEN_TOKEN or "
                                 "--token-file; `pipewarden approvers token NAME` prints one) or your login as "
                                 "`os_user:` in approvers.yaml; --as only chooses among those")
        if verdict == Verdict.reject and not reason.strip():
            raise UserError("a rejection needs a reason", hint="pass --reason 'why'")
        pid = _full_id(ref) or self.resolve_id(ref)  # a full id is checked inside the transaction
        extra = dict(detail or {})

        def tx(conn: Connection) -> Decided:
            found = _lock_status(conn, pid, missing_ok=True)
            if found is None:
                raise _unknown_proposal(conn, str(ref))
            status = ProposalStatus(found)
            if status == ProposalStatus.expired:
                raise Expired(f"proposal {pid[:8]} has expired; it can no longer be decided",
                              hint="the agent proposes again when the fault recurs")
            if status not in OPEN_STATUSES:
                raise InvalidTransition(f"proposal {pid[:8]} is already {status.value}; nothing to decide",
                                        hint="run `pipewarden inbox show ID` to see who decided it")
            if verdict == Verdict.approve and status == ProposalStatus.needs_human:
                raise InvalidTransition(
                    f"proposal {pid[:8]} carries no valid change to approve",
                    hint="fix the data by hand, then reject it with a reason",
                )
            current = self._load(conn, pid)
            now = utcnow()
            if current.expires_at is not None and now >= current.expires_at:
                raise Expired(f"proposal {pid[:8]} expired at {current.expires_at:%Y-%m-%d %H:%M} UTC; it can no "
                              "longer be decided", hint="`pipewarden inbox expire` closes it")
            earlier = _decisions(conn, pid)
            in_round = [d for d in earlier if d.round == current.round]
            decision = Decision(proposal_id=pid, verdict=verdict, actor=name, reason=reason, via=via,  # type: ignore[arg-type]
                                decided_at=now, round=current.round)
            decided = policy(current, earlier, decision) if policy is not None else True
            conn.execute(_INSERT_DECISION, {
                "id": str(decision.id), "proposal_id": pid, "verdict": verdict.value, "actor": name, "reason": reason,
                "via": via, "decided_at": decision.decided_at, "round": current.round, "seq": len(in_round) + 1})
            entry = {**extra, "via": via, "decision_id": str(decision.id)}
            after = [*earlier, decision]
            if not decided:
                self._audit(conn, pid, "approval_recorded", name, {**entry, "reason": reason})
                return Decided(decision=decision, proposal=current, decisions=after)
            approvers = [d.actor for d in in_round if d.verdict == Verdict.approve]
            if verdict == Verdict.approve and approvers:
                entry["approved_by"] = [*approvers, name]
            dst = ProposalStatus.approved if verdict == Verdict.approve else ProposalStatus.rejected
            # who decided this round without a person (a re-opened proposal a person approves is theirs)
            auto = {"auto_approved_by": name if verdict == Verdict.approve and via in AUTO_VIAS else None}
            # A policy approves inside the running graph, which goes on by itself; earned autonomy is handed to
            # the worker exactly as a person's decision is (the durable resume request, in the same UPDATE).
            handoff = None if via == "policy" else {"resume_requested_at": now, "attempts": 0, "next_attempt_at": None}
            ended = self._transition(conn, pid, dst, name, reason, entry, patch=auto, current=current, columns=handoff)
            return Decided(decision=decision, proposal=ended, decisions=after)

        return self._write(tx)

    def expire_stale(self, now: datetime | None = None, actor: str = POLICY_ACTOR) -> list[Proposal]:
        """Move every open proposal whose `expires_at` has passed to expired (each in its own transaction)."""
        now = now or utcnow()
        with self._read() as conn:
            due = conn.execute(
                sa.select(db.proposals.c.id).where(
                    db.proposals.c.status.in_([s.value for s in OPEN_STATUSES]),
                    db.proposals.c.expires_at.is_not(None), db.proposals.c.expires_at <= now,
                ).order_by(db.proposals.c.expires_at)
            ).scalars().all()
        expired = []
        for pid in due:

            def tx(conn: Connection, pid: str = pid) -> Proposal | None:
                status = ProposalStatus(_lock_status(conn, pid))
                current = self._load(conn, pid)
                if status not in OPEN_STATUSES or current.expires_at is None or current.expires_at > now:
                    return None  # decided meanwhile
                expired = self._transition(conn, pid, ProposalStatus.expired, actor,
                                           f"no decision before {current.expires_at:%Y-%m-%d %H:%M} UTC",
                                           {"expires_at": current.expires_at.isoformat()})
                conn.execute(db.proposals.update().where(db.proposals.c.id == pid)
                             .values(resume_requested_at=now))  # its graph still waits: a worker ends it
                return expired

            p = self._write(tx)
            if p is not None:
                expired.append(p)
        return expired

    def decisions_for(self, ref: str | UUID) -> list[Decision]:
        pid = self.resolve_id(ref)
        with self._read() as conn:
            return _decisions(conn, pid)

    def approved_decision(self, ref: str | UUID) -> Decision | None:
        """The decision in force: the latest one, if it approves (a re-opened proposal needs a new one)."""
        decisions = self.decisions_for(ref)
        if decisions and decisions[-1].verdict == Verdict.approve:
            return decisions[-1]
        return None

    # ------------------------------------------------------------------ resuming: requests and leases
    def request_resume(self, ref: str | UUID, actor: str = "inbox") -> None:
        """Ask a worker to resume the proposal's graph again (a stored decision asks by itself), audited as
        `resume_requested` by `actor`. Resets the failed-resume count, so a person's retry starts afresh."""
        pid = self.resolve_id(ref)

        def tx(conn: Connection) -> None:
            conn.execute(db.proposals.update().where(db.proposals.c.id == pid)
                         .values(resume_requested_at=utcnow(), attempts=0, next_attempt_at=None))
            self._audit(conn, pid, "resume_requested", actor, {})

        self._write(tx)

    def resume_requested(self, now: datetime | None = None) -> list[str]:
        """Ids of proposals whose graph a worker should resume now: requested, past their backoff, and not leased
        by a live owner (no lease, an expired one, or an owner process that is gone). Oldest request first."""
        now = now or utcnow()
        c = db.proposals.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(c.id, c.lease_owner, c.lease_expires_at, c.next_attempt_at)
                .where(c.resume_requested_at.is_not(None)).order_by(c.resume_requested_at)
            ).all()
        return [r.id for r in rows
                if (r.next_attempt_at is None or _aware(r.next_attempt_at) <= now)
                and (r.lease_owner is None or r.lease_expires_at is None or _aware(r.lease_expires_at) <= now
                     or owner_is_gone(r.lease_owner))]

    def take_proposal_lease(self, ref: str | UUID, owner: str, *, lease: LeasePolicy = LEASE_POLICY,
                            now: datetime | None = None) -> str | None:
        """Become the one owner of the proposal's graph for `lease.ttl_s` (renew with `renew_proposal_lease`).

        One conditional UPDATE: it succeeds when the lease is free, expired, already `owner`'s, or held by a process
        on this machine that is gone. Taking over a dead owner's lease is audited (`lease_taken_over`, reason
        crashed). Returns the previous (crashed) owner, if any; raises LeaseHeld when a live worker holds it.
        """
        pid = self.resolve_id(ref)
        now = now or utcnow()
        c = db.proposals.c

        def tx(conn: Connection) -> str | None:
            q = sa.select(c.lease_owner, c.lease_expires_at).where(c.id == pid)
            row = conn.execute(q.with_for_update() if db.is_postgres(conn) else q).one()
            free = sa.or_(c.lease_owner.is_(None), c.lease_expires_at.is_(None), c.lease_expires_at <= now,
                          c.lease_owner == owner)
            gone = row.lease_owner is not None and row.lease_owner != owner and owner_is_gone(row.lease_owner)
            if gone:
                free = sa.or_(free, c.lease_owner == row.lease_owner)
            res = conn.execute(db.proposals.update().where(c.id == pid, free)
                               .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease.ttl_s)))
            if res.rowcount != 1:
                raise LeaseHeld(f"proposal {pid[:8]}", row.lease_owner, row.lease_expires_at)
            previous = row.lease_owner if row.lease_owner not in (None, owner) else None
            if previous is not None:
                self._audit(conn, pid, "lease_taken_over", owner, {
                    "from": previous, "reason": "crashed",
                    "why": "its process is gone" if gone else "its lease expired without the work finishing"})
            return previous

        return self._write(tx)

    def renew_proposal_lease(self, ref: str | UUID, owner: str, *, lease: LeasePolicy = LEASE_POLICY) -> bool:
        """The heartbeat of a resume: extend the lease. False when `owner` no longer holds it."""
        pid = str(ref)
        until = utcnow() + timedelta(seconds=lease.ttl_s)
        return self._write(lambda conn: conn.execute(
            db.proposals.update().where(db.proposals.c.id == pid, db.proposals.c.lease_owner == owner)
            .values(lease_expires_at=until)).rowcount == 1)

    def release_proposal_lease(self, ref: str | UUID, owner: str, *, finished: bool | None,
                               requested_before: datetime | None = None, error: str | None = None,
                               retry_at: datetime | None = None) -> None:
        """End `owner`'s lease.

        `finished=True`: the graph ended or waits for a person again, so the resume request is done (only a request
        made before `requested_before`, when given: a decision stored meanwhile keeps its own). `finished=None`:
        only the lease ends (the author of a proposal finishing its run). `finished=False`: the resume failed with
        `error`; it is retried after `retry_at`, or, without one, given up (the request is dropped; a person resumes
        it from the inbox). Failures are audited (`resume_failed`). Nothing happens unless `owner` holds the lease.
        """
        pid = str(ref)
        c = db.proposals.c

        def tx(conn: Connection) -> None:
            values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
            if finished:
                done = sa.null() if requested_before is None else sa.case(
                    (c.resume_requested_at > requested_before, c.resume_requested_at), else_=sa.null())
                values.update(resume_requested_at=done, attempts=0, next_attempt_at=None)
            elif finished is False:
                values.update(attempts=c.attempts + 1, next_attempt_at=retry_at)
                if retry_at is None:
                    values["resume_requested_at"] = None
            res = conn.execute(db.proposals.update().where(c.id == pid, c.lease_owner == owner).values(**values))
            if res.rowcount == 1 and finished is False:
                attempts = conn.execute(sa.select(c.attempts).where(c.id == pid)).scalar_one()
                detail: dict[str, Any] = {"error": (error or "unknown error")[:2000], "attempts": attempts,
                                          "failure": "failed"}
                detail["retry_at" if retry_at else "gave_up"] = retry_at.isoformat() if retry_at else True
                self._audit(conn, pid, "resume_failed", owner, detail)

        self._write(tx)

    def proposal_lease(self, ref: str | UUID) -> dict[str, Any]:
        """The proposal's lease and resume bookkeeping: owner, expiry, requested at, attempts, next attempt."""
        pid = self.resolve_id(ref)
        c = db.proposals.c
        with self._read() as conn:
            row = conn.execute(sa.select(c.lease_owner, c.lease_expires_at, c.resume_requested_at, c.attempts,
                                         c.next_attempt_at).where(c.id == pid)).one()
        return dict(row._mapping)

    # ------------------------------------------------------------------ versions
    def active_version(self, target: str) -> Version | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(db.versions).where(db.versions.c.target == target, db.versions.c.active.is_(True))
            ).first()
        return Version.model_validate(dict(row._mapping)) if row else None

    def list_versions(self, target: str) -> list[Version]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(db.versions).where(db.versions.c.target == target).order_by(db.versions.c.number)
            ).all()
        return [Version.model_validate(dict(r._mapping)) for r in rows]

    def activate_new_version(self, target: str, content: dict[str, Any], proposal_id: UUID | str, actor: str) -> Version:
        """Create and activate a version for `proposal_id`; applying the same proposal twice is applying once."""
        faults.point("applying")  # the proposal is `applying`; none of its versions is active yet

        def tx(conn: Connection) -> Version:
            _lock_target(conn, target)  # concurrent applies of one target serialize (PostgreSQL; SQLite: IMMEDIATE)
            same = conn.execute(
                sa.select(db.versions).where(db.versions.c.target == target,
                                             db.versions.c.proposal_id == str(proposal_id))
            ).first()
            if same and same.active:
                return Version.model_validate(dict(same._mapping))
            if same:  # rolled back earlier and approved again: re-activate that version, no new number
                conn.execute(db.versions.update().where(db.versions.c.target == target).values(active=False))
                conn.execute(db.versions.update().where(db.versions.c.id == same.id).values(active=True))
                self._audit(conn, str(proposal_id), "version_activated", actor,
                            {"target": target, "number": same.number, "reactivated": True})
                return Version.model_validate({**dict(same._mapping), "active": True})
            top = conn.execute(sa.select(sa.func.max(db.versions.c.number)).where(db.versions.c.target == target)).scalar()
            v = Version(target=target, number=(top or 0) + 1, content=content, active=True, proposal_id=proposal_id)  # type: ignore[arg-type]
            conn.execute(db.versions.update().where(db.versions.c.target == target).values(active=False))
            conn.execute(db.versions.insert().values(
                id=str(v.id), target=target, number=v.number, content=content, active=True,
                proposal_id=str(proposal_id), created_at=v.created_at,
            ))
            self._audit(conn, str(proposal_id), "version_activated", actor, {"target": target, "number": v.number})
            return v

        return self._write(tx)

    def rollback_version(self, target: str, proposal_id: UUID | str, actor: str) -> Version | None:
        """Deactivate the version `proposal_id` created and re-activate the one before it (if any)."""

        def tx(conn: Connection) -> Version | None:
            rows = conn.execute(
                sa.select(db.versions).where(db.versions.c.target == target).order_by(db.versions.c.number)
            ).all()
            mine = [r for r in rows if r.proposal_id == str(proposal_id)]
            if not mine:
                return None
            earlier = [r for r in rows if r.number < mine[0].number and r.proposal_id != str(proposal_id)]
            conn.execute(db.versions.update().where(db.versions.c.target == target).values(active=False))
            restored = None
            if earlier:
                conn.execute(db.versions.update().where(db.versions.c.id == earlier[-1].id).values(active=True))
                restored = Version.model_validate({**dict(earlier[-1]._mapping), "active": True})
            self._audit(conn, str(proposal_id), "version_rolled_back", actor,
                        {"target": target, "restored": restored.number if restored else None})
            return restored

        return self._write(tx)

    # ------------------------------------------------------------------ audit
    def audit_entries(self, proposal_id: str | None = None) -> list[AuditEntry]:
        q = sa.select(db.audit_log).order_by(db.audit_log.c.seq)
        if proposal_id:
            q = q.where(db.audit_log.c.proposal_id == proposal_id)
        with self._read() as conn:
            return [AuditEntry.model_validate(dict(r._mapping)) for r in conn.execute(q)]

    def audit_after(self, seq: int, actions: Collection[str], limit: int = 500) -> list[AuditEntry]:
        """Audit entries after `seq` whose action is one of `actions`, oldest first, at most `limit` (a reader that
        follows the log, such as the Prefect lifecycle mirror in `flows/prefect_story.py`, keeps its own cursor)."""
        q = (sa.select(db.audit_log).where(db.audit_log.c.seq > seq, db.audit_log.c.action.in_(list(actions)))
             .order_by(db.audit_log.c.seq).limit(limit))
        with self._read() as conn:
            return [AuditEntry.model_validate(dict(r._mapping)) for r in conn.execute(q)]

    def verify_audit(self) -> AuditReport:
        """The chain, its signed anchor, the proposals and decisions against it, and this home's witness."""
        with self._read() as conn:
            return verify_log(conn, key=audit_key(self.home), home=self.home)

    def record(self, action: str, actor: str, detail: dict[str, Any], proposal_id: str | None = None) -> None:
        """Append a free-standing audit entry (an event claimed, a re-run started...)."""
        self._write(lambda conn: self._audit(conn, proposal_id, action, actor, detail))

    # ------------------------------------------------------------------ personal API tokens
    def issue_token(self, approver: str) -> str:
        """Make a personal token for `approver`; returns it in clear once, stores only its sha256 (audited)."""
        token = new_token()

        def tx(conn: Connection) -> None:
            conn.execute(db.api_tokens.insert().values(
                id=str(new_id()), approver=approver, sha256=hash_token(token), created_at=utcnow()))
            self._audit(conn, None, "token_issued", approver, {"approver": approver})

        self._write(tx)
        return token

    def approver_for_token(self, token: str) -> str | None:
        """The approver a token belongs to; None for an unknown or revoked token."""
        if not token or not token.strip():
            return None
        digest = hash_token(token)
        with self._read() as conn:
            row = conn.execute(_TOKEN_ROW, {"digest": digest}).first()
        if row is None or row.revoked_at is not None or not same_hash(row.sha256, digest):
            return None
        return row.approver

    def revoke_tokens(self, approver: str) -> int:
        """Revoke every live token of `approver`; returns how many (audited)."""

        def tx(conn: Connection) -> int:
            res = conn.execute(db.api_tokens.update().where(db.api_tokens.c.approver == approver,
                                                            db.api_tokens.c.revoked_at.is_(None))
                               .values(revoked_at=utcnow()))
            if res.rowcount:
                self._audit(conn, None, "tokens_revoked", approver, {"approver": approver, "count": res.rowcount})
            return res.rowcount

        return self._write(tx)

    def list_tokens(self, approver: str | None = None) -> list[ApiToken]:
        q = sa.select(db.api_tokens.c.id, db.api_tokens.c.approver, db.api_tokens.c.created_at,
                      db.api_tokens.c.revoked_at).order_by(db.api_tokens.c.created_at)
        if approver:
            q = q.where(db.api_tokens.c.approver == approver)
        with self._read() as conn:
            return [ApiToken.model_validate(dict(r._mapping)) for r in conn.execute(q)]

    # ------------------------------------------------------------------ Slack messages
    def save_slack_message(self, proposal_id: UUID | str, channel: str, ts: str, thread_ts: str | None,
                           fault_key: str) -> None:
        """Remember where a proposal's Slack message is (insert or update)."""
        pid = str(proposal_id)

        def tx(conn: Connection) -> None:
            values = {"channel": channel, "ts": ts, "thread_ts": thread_ts, "fault_key": fault_key,
                      "updated_at": utcnow()}
            res = conn.execute(db.slack_messages.update().where(db.slack_messages.c.proposal_id == pid).values(**values))
            if res.rowcount == 0:
                conn.execute(db.slack_messages.insert().values(proposal_id=pid, **values))

        self._write(tx)

    def slack_message_for(self, proposal_id: UUID | str) -> SlackMessage | None:
        with self._read() as conn:
            row = conn.execute(sa.select(db.slack_messages)
                               .where(db.slack_messages.c.proposal_id == str(proposal_id))).first()
        return SlackMessage.model_validate(dict(row._mapping)) if row else None

    def slack_thread_for(self, fault_key: str) -> tuple[str, str] | None:
        """(channel, thread_ts) of the first message posted for this fault, or None: replies go in its thread."""
        with self._read() as conn:
            row = conn.execute(sa.select(db.slack_messages).where(db.slack_messages.c.fault_key == fault_key)
                               .order_by(db.slack_messages.c.updated_at).limit(1)).first()
        if row is None:
            return None
        return row.channel, row.thread_ts or row.ts

    def seen_slack_request(self, signature: str, max_age_s: float = 600.0) -> bool:
        """Remember a Slack request's signature; True if it was seen within `max_age_s` (a replay).

        One statement on the path of every Slack acknowledgement: an insert that, for a signature already there,
        only refreshes one older than `max_age_s` (so it counts as new) and changes no row for a live one.
        Signatures past `max_age_s` are deleted at most every `SLACK_SWEEP_S` per process (they count as unseen
        whether or not they are still there)."""
        now = utcnow()
        cutoff = now - timedelta(seconds=max_age_s)
        t = db.slack_requests
        sweep = time.monotonic() - _SWEPT.get(self.engine, -SLACK_SWEEP_S) >= SLACK_SWEEP_S

        def tx(conn: Connection) -> bool:
            if sweep:
                conn.execute(t.delete().where(t.c.seen_at < cutoff))
            insert = _dialect_insert(conn)(t).values(signature=signature, seen_at=now)
            written = conn.execute(insert.on_conflict_do_update(
                index_elements=[t.c.signature], set_={"seen_at": insert.excluded.seen_at}, where=t.c.seen_at < cutoff,
            ).returning(t.c.signature)).first()
            return written is None  # a live row with this signature: nothing inserted, nothing refreshed

        seen = self._write(tx)
        if sweep:
            _SWEPT[self.engine] = time.monotonic()
        return seen

    # ------------------------------------------------------------------ one fault, one proposal: occurrences
    def attach_occurrence(self, event: Event, signature: FaultSignature, proposal_id: UUID | str,
                          worker: str) -> Occurrence:
        """Place a claimed event in its fault: attach it to the open proposal of the same signature, or make it
        the fault's origin (`proposal_id`: the proposal its agent will draft). In one transaction.

        Open means the origin's proposal is pending or needs a human, or is not stored yet (its agent still runs).
        An attached event is finished as `attached` (audited `occurrence_attached`) and no agent runs for it. A
        decided proposal's fault is closed here, and this event starts a new one. Of two workers placing two events
        of one signature at once, one becomes the origin (the unique index on open signatures); the other, retried,
        attaches. Calling it again for the same event returns what it got the first time (a re-claimed event)."""
        o = db.proposal_occurrences.c
        eid = str(event.id)

        def tx(conn: Connection) -> Occurrence:
            mine = conn.execute(sa.select(db.proposal_occurrences).where(o.event_id == eid)).first()
            if mine is not None:
                return Occurrence.model_validate(dict(mine._mapping))
            now = utcnow()
            origin = conn.execute(sa.select(o.event_id, o.proposal_id)
                                  .where(o.open_signature == signature.key)).first()
            if origin is not None:
                q = sa.select(db.proposals.c.status).where(db.proposals.c.id == origin.proposal_id)
                status = conn.execute(q.with_for_update() if db.is_postgres(conn) else q).scalar_one_or_none()
                if status is None or ProposalStatus(status) in OPEN_STATUSES:
                    row = {"event_id": eid, "proposal_id": origin.proposal_id, "role": "attached",
                           "signature": signature.key, "open_signature": None, "label": signature.label,
                           "load_id": event.load_id, "attached_at": now}
                    conn.execute(db.proposal_occurrences.insert().values(**row))
                    e = db.events.c
                    conn.execute(db.events.update().where(e.id == eid, e.status == "claimed", e.claimed_by == worker)
                                 .values(status="attached", error=None, lease_expires_at=None, next_attempt_at=None))
                    self._audit(conn, origin.proposal_id, "occurrence_attached", worker,
                                {"event_id": eid, "load_id": event.load_id, "fault": signature.label})
                    return Occurrence.model_validate(row)
                conn.execute(db.proposal_occurrences.update().where(o.event_id == origin.event_id)
                             .values(open_signature=None))  # decided: the fault's next event opens a new one
            row = {"event_id": eid, "proposal_id": str(proposal_id), "role": "origin", "signature": signature.key,
                   "open_signature": signature.key, "label": signature.label, "load_id": event.load_id,
                   "attached_at": now}
            conn.execute(db.proposal_occurrences.insert().values(**row))
            return Occurrence.model_validate(row)

        for attempt in range(5):
            try:
                return self._write(tx)
            except IntegrityError as exc:  # another worker opened this fault first (PostgreSQL): attach to it
                if "uq_occurrence_open" not in str(exc) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def release_fault(self, event_id: UUID | str) -> list[str]:
        """The origin event of a fault ended without a proposal: close the fault and send its attached events back
        to pending, each to be handled on its own (the first becomes the new origin). Returns their ids."""
        o = db.proposal_occurrences.c
        eid = str(event_id)

        def tx(conn: Connection) -> list[str]:
            mine = conn.execute(sa.select(o.proposal_id, o.role).where(o.event_id == eid)).first()
            if mine is None or mine.role != "origin":
                return []
            if conn.execute(sa.select(db.proposals.c.id).where(db.proposals.c.id == mine.proposal_id)).first():
                return []  # it has a proposal after all: the fault stays as it is
            attached = list(conn.execute(sa.select(o.event_id).where(
                o.proposal_id == mine.proposal_id, o.role == "attached")).scalars())
            conn.execute(db.proposal_occurrences.delete().where(o.proposal_id == mine.proposal_id))
            if attached:
                conn.execute(db.events.update().where(db.events.c.id.in_(attached), db.events.c.status == "attached")
                             .values(status="pending", claimed_by=None, lease_expires_at=None))
            return attached

        return self._write(tx)

    def occurrences(self, ref: UUID | str) -> list[Occurrence]:
        """The events a proposal covers, its origin first, then its repeats in the order they attached (empty
        for a proposal whose event has no fault signature)."""
        o = db.proposal_occurrences.c
        pid = str(ref)
        with self._read() as conn:
            rows = conn.execute(sa.select(db.proposal_occurrences).where(o.proposal_id == pid)
                                .order_by(sa.case((o.role == "origin", 0), else_=1), o.attached_at)).all()
        return [Occurrence.model_validate(dict(r._mapping)) for r in rows]

    def proposals_for_fault(self, signature: FaultSignature, *, exclude: UUID | str | None = None) -> list[Proposal]:
        """Every proposal drafted for a fault of this signature (its origin event had it), oldest first, but
        `exclude`: what people decided on the same fault before (the agents' precedents)."""
        o = db.proposal_occurrences.c
        q = (sa.select(o.proposal_id).where(o.signature == signature.key, o.role == "origin")
             .order_by(o.attached_at))
        with self._read() as conn:
            ids = list(dict.fromkeys(conn.execute(q).scalars()))
            found = conn.execute(sa.select(db.proposals.c.id).where(db.proposals.c.id.in_(ids))).scalars().all()
            stored = set(found)
            return [self._load(conn, pid) for pid in ids if pid in stored and pid != str(exclude)]

    def fault_history(self, ref: UUID | str) -> FaultHistory | None:
        """The earlier proposals of this proposal's fault (the same fault signature: its event's origin occurrence),
        oldest first, each with its status, change kinds, whether it was ever rolled back and its decisions; None
        when its event has no fault signature. Read in one snapshot; earned autonomy (`policies.autonomy`) judges it.
        """
        o = db.proposal_occurrences.c
        c = db.proposals.c
        pid = self.resolve_id(ref)
        with self._read() as conn:
            event_id = conn.execute(sa.select(c.event_id).where(c.id == pid)).scalar_one()
            sig = conn.execute(sa.select(o.signature, o.label)
                               .where(o.event_id == event_id, o.role == "origin")).first()
            if sig is None:
                return None
            rows = conn.execute(
                sa.select(c.id, c.status, c.created_at, c.payload)
                .select_from(db.proposals.join(db.proposal_occurrences, o.event_id == c.event_id))
                .where(o.signature == sig.signature, o.role == "origin", c.id != pid)
                .order_by(c.created_at, c.id)
            ).all()
            ids = [r.id for r in rows]
            rolled = set(conn.execute(sa.select(db.audit_log.c.proposal_id).where(
                db.audit_log.c.proposal_id.in_(ids), db.audit_log.c.action == ProposalStatus.rolled_back.value)
            ).scalars()) if ids else set()
            decided: dict[str, list[Decision]] = {i: _decisions(conn, i) for i in ids}
        past = []
        for r in rows:
            p = Proposal.model_validate(r.payload)
            p.status = ProposalStatus(r.status)
            past.append(PastProposal(proposal=p, rolled_back=r.id in rolled, decisions=decided[r.id]))
        return FaultHistory(signature=sig.signature, label=sig.label, past=past)

    # ------------------------------------------------------------------ the web queue: pages, facet counts, edits
    # (added for the web inbox; `filters` maps a facet of QUEUE_FACETS to the values it may take, empty = any)
    def _filtered(self, q: Any, filters: Any, skip: str | None = None) -> Any:
        for facet, values in (filters or {}).items():
            if facet not in QUEUE_FACETS:
                raise UserError(f"cannot filter proposals by {facet!r}", hint=f"use one of: {', '.join(QUEUE_FACETS)}")
            if facet != skip and values:
                q = q.where(db.proposals.c[facet].in_([str(v) for v in values]))
        return q

    def find_proposals(self, filters: Any = None, limit: int = 50, offset: int = 0) -> list[Proposal]:
        """One page of the proposals matching `filters`, newest first, read in one query."""
        q = self._filtered(sa.select(db.proposals.c.status, db.proposals.c.payload), filters)
        q = q.order_by(db.proposals.c.created_at.desc(), db.proposals.c.id.desc()).limit(limit).offset(offset)
        with self._read() as conn:
            rows = conn.execute(q).all()
        out = []
        for row in rows:
            p = Proposal.model_validate(row.payload)
            p.status = ProposalStatus(row.status)
            out.append(p)
        return out

    def count_proposals(self, filters: Any = None) -> int:
        """How many proposals match `filters`."""
        q = self._filtered(sa.select(sa.func.count()).select_from(db.proposals), filters)
        with self._read() as conn:
            return int(conn.execute(q).scalar_one())

    def count_proposals_by(self, facet: str, filters: Any = None) -> dict[str, int]:
        """Proposals per value of `facet`, under every filter except the one on `facet` itself (facet counts)."""
        if facet not in QUEUE_FACETS:
            raise UserError(f"cannot count proposals by {facet!r}", hint=f"use one of: {', '.join(QUEUE_FACETS)}")
        col = db.proposals.c[facet]
        q = self._filtered(sa.select(col, sa.func.count()).group_by(col), filters, skip=facet)
        with self._read() as conn:
            return {str(value): int(n) for value, n in conn.execute(q).all()}

    def edit_proposal(self, ref: str | UUID, change: Any, dry_run: Any, actor: str, *, title: str | None = None,
                      via: str = "web") -> Proposal:
        """Replace a pending proposal's change and dry-run with a person's edit, audited (`edited`) in the same
        transaction. Refused (InvalidTransition) unless the proposal is pending and nobody approved it in its current
        round: an approval is for the change it saw."""
        pid = self.resolve_id(ref)

        def tx(conn: Connection) -> Proposal:
            current = self._load(conn, pid)
            if current.status != ProposalStatus.pending:
                raise InvalidTransition(f"proposal {pid[:8]} is {current.status.value}; only a pending proposal "
                                        "can be edited", hint="run `pipewarden inbox show ID` to see its history")
            approved_by = conn.execute(
                sa.select(db.decisions.c.actor).where(
                    db.decisions.c.proposal_id == pid, db.decisions.c.round == current.round,
                    db.decisions.c.verdict == Verdict.approve.value)
            ).scalars().all()
            if approved_by:
                raise InvalidTransition(
                    f"proposal {pid[:8]} was already approved by {', '.join(approved_by)}; its change can no longer "
                    "be edited", hint="reject it with a reason instead; the agent's next proposal will see why")
            old = current.change.model_dump(mode="json")
            current.change = change
            current.dry_run = dry_run
            if title:
                current.title = title
            current.updated_at = utcnow()
            res = conn.execute(
                db.proposals.update()
                .where(db.proposals.c.id == pid, db.proposals.c.status == ProposalStatus.pending.value)
                .values(payload=current.model_dump(mode="json"), updated_at=current.updated_at)
            )
            if res.rowcount != 1:  # pragma: no cover - guarded by the immediate transaction
                raise InvalidTransition(f"proposal {pid[:8]} changed under us; try again")
            heals = bool(dry_run.heals) if dry_run is not None else None
            self._audit(conn, pid, "edited", actor,
                        {"via": via, "from": old, "to": current.change.model_dump(mode="json"), "heals": heals})
            return current

        return self._write(tx)


QUEUE_FACETS: tuple[str, ...] = ("agent", "dataset", "risk", "status")


def _insert_event(conn: Connection, event: Event) -> bool:
    """The outbox row of an event, pending; False (nothing written) if an event with this id is already there."""
    exists = conn.execute(sa.select(db.events.c.id).where(db.events.c.id == str(event.id))).first()
    if exists:
        return False
    conn.execute(
        db.events.insert().values(
            id=str(event.id), kind=event.kind, dataset=event.dataset, load_id=event.load_id,
            payload=event.model_dump(mode="json"), status="pending", attempts=0,
            created_at=event.occurred,
        )
    )
    return True


def _same_report(conn: Connection, first_id: str, event: Event, key: str) -> None:
    """Refuse an idempotency key sent again with a different event (its id and time aside): the retry of a report
    must be the same report."""
    stored = conn.execute(sa.select(db.events.c.payload).where(db.events.c.id == first_id)).scalar_one()
    ignore = {"id", "occurred"}
    again = event.model_dump(mode="json")
    if {k: v for k, v in stored.items() if k not in ignore} != {k: v for k, v in again.items() if k not in ignore}:
        raise InvalidField(("idempotency_key",), f"{key!r} was already used for another event ({first_id[:8]}, a "
                           f"{stored.get('kind')} on {stored.get('dataset')})",
                           hint="use a new key for a new event; send a key again only to retry the same report")


def _dialect_insert(conn: Connection) -> Any:
    """The dialect's INSERT construct, which has ON CONFLICT (SQLite and PostgreSQL, the state DBs supported)."""
    if db.is_postgres(conn):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _lock_status(conn: Connection, pid: str, *, missing_ok: bool = False) -> str:
    """The proposal's status, its row locked until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE
    already holds the database's write lock). With `missing_ok`, None (typed loosely) when there is no such row."""
    res = conn.execute(_STATUS_FOR_UPDATE if db.is_postgres(conn) else _STATUS, {"pid": pid})
    return res.scalar_one_or_none() if missing_ok else res.scalar_one()  # type: ignore[no-any-return]


def _proposal(row: Any) -> Proposal:
    """A proposal from its `proposals` row: the payload, with the row's status (the one that counts)."""
    p = Proposal.model_validate(row.payload)
    p.status = ProposalStatus(row.status)
    return p


def _full_id(ref: str | UUID) -> str | None:
    """`ref` as a full proposal id (lower case), when it has the shape of one; None for a prefix or anything else."""
    wanted = str(ref).strip().lower()
    return wanted if len(wanted) == 36 and _ID_CHARS.fullmatch(wanted) else None


def _unknown_proposal(conn: Connection, ref: str) -> UnknownNameError:
    """The error `StateStore.resolve_id` raises for an id that is not there, naming some that are."""
    known = conn.execute(sa.select(db.proposals.c.id).limit(50)).scalars().all()
    return UnknownNameError("proposal", ref, [k[:8] for k in known])


def _lock_target(conn: Connection, target: str) -> None:
    if db.is_postgres(conn):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": f"version:{target}"})


def _decisions(conn: Connection, pid: str) -> list[Decision]:
    rows = conn.execute(_DECISIONS, {"pid": pid}).all()
    return [Decision.model_validate({k: v for k, v in r._mapping.items() if k != "seq"}) for r in rows]


def _status_before(conn: Connection, pid: str) -> str:
    return conn.execute(sa.select(db.proposals.c.status).where(db.proposals.c.id == pid)).scalar_one()


def _aware(at: datetime) -> datetime:
    """A datetime read back from the state DB, as UTC-aware (SQLite hands back naive UTC)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=utcnow().tzinfo)


def _is_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return ("audit_log" in text or "locked" in text or ("unique" in text and "hash" in text)
            or "uq_decision_seq" in text or "deadlock" in text or "could not serialize" in text)
