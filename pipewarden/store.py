"""The state store: the one way anything reads or writes the state DB.

It owns the outbox (events), proposals with their lifecycle, decisions, versions and the audit log.
Every proposal status change happens in one transaction with its audit entry, as a compare-and-set on the
current status, so concurrent writers leave exactly one winner and a crash leaves nothing half-done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from pipewarden import db
from pipewarden.audit import GENESIS, AuditEntry, AuditReport, entry_hash, verify_chain
from pipewarden.errors import InvalidTransition, NotApproved, UnknownNameError, UserError
from pipewarden.events import Event, parse_event
from pipewarden.ids import utcnow
from pipewarden.models import (
    OPEN_STATUSES,
    SYSTEM_ACTORS,
    Decision,
    Proposal,
    ProposalStatus,
    Verdict,
    Version,
    can_transition,
)
from pipewarden.settings import Settings, get_settings

T = TypeVar("T")


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

    # ------------------------------------------------------------------ plumbing
    def _write(self, fn: Callable[[Connection], T], attempts: int = 8) -> T:
        """Run `fn` in one transaction, retrying when another writer won a race on the audit tip."""
        for attempt in range(attempts):
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except (IntegrityError, OperationalError) as exc:
                if attempt == attempts - 1 or not _is_race(exc):
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def _audit(self, conn: Connection, proposal_id: str | None, action: str, actor: str, detail: dict[str, Any]) -> None:
        tip = conn.execute(
            sa.select(db.audit_log.c.hash).order_by(db.audit_log.c.seq.desc()).limit(1)
        ).scalar_one_or_none()
        prev = tip or GENESIS
        at = utcnow().replace(tzinfo=None)
        h = entry_hash(prev, at, proposal_id, action, actor, detail)
        conn.execute(
            db.audit_log.insert().values(
                at=at, proposal_id=proposal_id, action=action, actor=actor, detail=detail, prev_hash=prev, hash=h
            )
        )

    # ------------------------------------------------------------------ outbox
    def append_event(self, event: Event) -> bool:
        """Write an event to the outbox. Returns False if an event with this id is already there."""

        def tx(conn: Connection) -> bool:
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

        return self._write(tx)

    def claim_events(self, worker: str, limit: int = 10, stale_after_s: float = 600.0) -> list[Event]:
        """Claim pending events (and claims older than `stale_after_s`, left by a crashed worker).

        A claim is a compare-and-set on the status, so two supervisors never claim the same event.
        """
        claimed: list[Event] = []
        with self._read() as conn:
            rows = conn.execute(
                sa.select(db.events.c.id, db.events.c.status, db.events.c.claimed_at)
                .where(db.events.c.status.in_(["pending", "claimed"]))
                .order_by(db.events.c.created_at)
            ).all()
        now = utcnow()
        for row in rows:
            if len(claimed) >= limit:
                break
            if row.status == "claimed":
                at = row.claimed_at.replace(tzinfo=now.tzinfo) if row.claimed_at else None
                if at and (now - at).total_seconds() < stale_after_s:
                    continue

            def tx(conn: Connection, row: Any = row) -> Event | None:
                res = conn.execute(
                    db.events.update()
                    .where(db.events.c.id == row.id, db.events.c.status == row.status)
                    .where(db.events.c.claimed_at == row.claimed_at if row.claimed_at else sa.true())
                    .values(status="claimed", claimed_by=worker, claimed_at=now, attempts=db.events.c.attempts + 1)
                )
                if res.rowcount != 1:
                    return None
                payload = conn.execute(sa.select(db.events.c.payload).where(db.events.c.id == row.id)).scalar_one()
                return parse_event(payload)

            ev = self._write(tx)
            if ev is not None:
                claimed.append(ev)
        return claimed

    def finish_event(self, event_id: UUID | str, status: str, error: str | None = None) -> None:
        """Move a claimed event to `proposed`, `done` or `failed`."""
        if status not in {"proposed", "done", "failed", "pending"}:
            raise ValueError(f"bad event status {status!r}")
        self._write(
            lambda conn: conn.execute(
                db.events.update().where(db.events.c.id == str(event_id)).values(status=status, error=error)
            )
        )

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
    def create_proposal(self, proposal: Proposal, actor: str = "agent") -> Proposal:
        """Store a new proposal; idempotent per event: a second call returns the proposal already stored."""

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
                )
            )
            self._audit(conn, str(proposal.id), "proposed", actor,
                        {"status": proposal.status.value, "change": proposal.change.kind, "agent": proposal.agent})
            return proposal

        return self._write(tx)

    def _load(self, conn: Connection, proposal_id: str) -> Proposal:
        row = conn.execute(sa.select(db.proposals).where(db.proposals.c.id == proposal_id)).one()
        p = Proposal.model_validate(row.payload)
        p.status = ProposalStatus(row.status)
        return p

    def resolve_id(self, ref: str | UUID) -> str:
        """Accept a full id or a unique prefix of at least 4 characters (as printed by `inbox list`)."""
        ref = str(ref)
        with self._read() as conn:
            if len(ref) == 36:
                hit = conn.execute(sa.select(db.proposals.c.id).where(db.proposals.c.id == ref)).scalar_one_or_none()
                if hit:
                    return hit
            elif len(ref) >= 4:
                hits = conn.execute(
                    sa.select(db.proposals.c.id).where(db.proposals.c.id.like(f"{ref}%"))
                ).scalars().all()
                if len(hits) == 1:
                    return hits[0]
                if len(hits) > 1:
                    raise UserError(f"proposal id {ref!r} is ambiguous ({len(hits)} match)",
                                    hint="give more characters of the id")
            known = conn.execute(sa.select(db.proposals.c.id)).scalars().all()
        raise UnknownNameError("proposal", ref, [k[:8] for k in known])

    def get_proposal(self, ref: str | UUID) -> Proposal:
        pid = self.resolve_id(ref)
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
        detail: dict[str, Any] | None = None, patch: dict[str, Any] | None = None,
    ) -> Proposal:
        current = self._load(conn, pid)
        src = current.status
        if not can_transition(src, dst):
            raise InvalidTransition(
                f"proposal {pid[:8]} is {current.status.value}; it cannot become {dst.value}",
                hint="run `pipewarden inbox show ID` to see its history",
            )
        current.status = dst
        current.status_reason = reason
        current.updated_at = utcnow()
        for k, v in (patch or {}).items():
            setattr(current, k, v)
        res = conn.execute(
            db.proposals.update()
            .where(db.proposals.c.id == pid, db.proposals.c.status == src.value)
            .values(status=dst.value, payload=current.model_dump(mode="json"), updated_at=current.updated_at)
        )
        if res.rowcount != 1:  # pragma: no cover - guarded by the immediate transaction
            raise InvalidTransition(f"proposal {pid[:8]} changed under us; try again")
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

    def decide(self, ref: str | UUID, verdict: Verdict, actor: str, reason: str = "", via: str = "cli") -> Decision:
        """Record a human decision and move the proposal to approved or rejected, in one transaction.

        Refuses system and agent identities (separation of duties) and proposals that are not open.
        """
        if actor.strip().lower() in SYSTEM_ACTORS or actor.strip().lower().startswith("agent"):
            raise NotApproved(f"{actor!r} is a system identity and can never decide a proposal",
                              hint="decide as a named person: --as YOUR_NAME")
        if verdict == Verdict.reject and not reason.strip():
            raise UserError("a rejection needs a reason", hint="pass --reason 'why'")
        pid = self.resolve_id(ref)
        decision = Decision(proposal_id=pid, verdict=verdict, actor=actor, reason=reason, via=via)  # type: ignore[arg-type]

        def tx(conn: Connection) -> Decision:
            status = ProposalStatus(_status_before(conn, pid))
            if status not in OPEN_STATUSES:
                raise InvalidTransition(f"proposal {pid[:8]} is already {status.value}; nothing to decide")
            if verdict == Verdict.approve and status == ProposalStatus.needs_human:
                raise InvalidTransition(
                    f"proposal {pid[:8]} carries no valid change to approve",
                    hint="fix the data by hand, then reject it with a reason",
                )
            conn.execute(
                db.decisions.insert().values(
                    id=str(decision.id), proposal_id=pid, verdict=verdict.value, actor=actor, reason=reason,
                    via=via, decided_at=decision.decided_at,
                )
            )
            dst = ProposalStatus.approved if verdict == Verdict.approve else ProposalStatus.rejected
            self._transition(conn, pid, dst, actor, reason, {"via": via, "decision_id": str(decision.id)})
            return decision

        return self._write(tx)

    def decisions_for(self, ref: str | UUID) -> list[Decision]:
        pid = self.resolve_id(ref)
        with self._read() as conn:
            rows = conn.execute(
                sa.select(db.decisions).where(db.decisions.c.proposal_id == pid).order_by(db.decisions.c.decided_at)
            ).all()
        return [Decision.model_validate(dict(r._mapping)) for r in rows]

    def approved_decision(self, ref: str | UUID) -> Decision | None:
        """The decision in force: the latest one, if it approves (a re-opened proposal needs a new one)."""
        decisions = self.decisions_for(ref)
        if decisions and decisions[-1].verdict == Verdict.approve:
            return decisions[-1]
        return None

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

        def tx(conn: Connection) -> Version:
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

    def verify_audit(self) -> AuditReport:
        return verify_chain(self.audit_entries())

    def record(self, action: str, actor: str, detail: dict[str, Any], proposal_id: str | None = None) -> None:
        """Append a free-standing audit entry (an event claimed, a re-run started...)."""
        self._write(lambda conn: self._audit(conn, proposal_id, action, actor, detail))


def _status_before(conn: Connection, pid: str) -> str:
    return conn.execute(sa.select(db.proposals.c.status).where(db.proposals.c.id == pid)).scalar_one()


def _is_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return "audit_log" in text or "locked" in text or "unique" in text and "hash" in text
