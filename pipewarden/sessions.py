"""Web sessions and sign-in throttling, kept in the state DB.

A signed-in browser holds a random session key in its (signed) cookie; the state DB keeps the key's sha256 with
the approver, the personal token they signed in with, when the session expires and whether it ended. A session is
believed only while its row is live and its token is not revoked, and that is read on every request, so signing
out and `pipewarden approvers token NAME --revoke` take effect on the very next request, in every server process.

Failed sign-ins are counted per key (`address:<client address>`, `account:<approver>`) in a fixed window; past
`ThrottlePolicy.max_failures` the key is blocked for an exponentially growing time (1 s, 2 s, 4 s, ... capped),
during which attempts are refused without looking at the token (HTTP 429 with Retry-After). Kept in the state DB,
not in a process, so several server processes share one count.

These two tables are the only state DB tables written outside `pipewarden.store.StateStore`: they hold no
queue, decision or audit data, and their writes are single-statement upserts that need none of the store's
audit plumbing. The audit entries about signing in are written through `StateStore.record` by the caller.

Public names: `SessionStore`, `ThrottlePolicy`, `THROTTLE`, `SignIn`, `session_hash`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from pipewarden import db
from pipewarden.ids import utcnow
from pipewarden.tokens import hash_token

EXPIRED_KEPT_S = 24 * 3600  # ended or expired session rows are deleted this long after they stopped counting
BLOCK_CACHE_S = 1.0  # how long this process trusts what it read of a key's block (see `retry_after`)
# Per engine: key -> (when it was read, monotonic; blocked until). The only state kept outside the state DB.
_BLOCKS: weakref.WeakKeyDictionary[Engine, dict[str, tuple[float, datetime | None]]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, kw_only=True)
class ThrottlePolicy:
    """When failed sign-ins start being refused, and for how long."""

    max_failures: int = 5
    """Failures of one key (an address, an account) within `window_s` before further attempts are refused."""
    window_s: float = 15 * 60
    """The counting window: a key whose first failure is older than this starts counting afresh."""
    base_delay_s: float = 1.0
    """The first block's length; each further failure in the window doubles it."""
    max_delay_s: float = 15 * 60
    """The longest a key is blocked after one failure."""

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_s <= 0 or not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError("ThrottlePolicy needs max_failures >= 1, window_s > 0 and 0 < base_delay_s <= max_delay_s")

    def delay_s(self, failures: int) -> float:
        """How long a key with `failures` failures in the window is blocked (0 below the limit)."""
        if failures < self.max_failures:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2 ** min(failures - self.max_failures, 30))


THROTTLE = ThrottlePolicy()


@dataclass(frozen=True)
class SignIn:
    """A started session: the key for the cookie (shown once) and who it is for."""

    key: str
    approver: str


def session_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=utcnow().tzinfo)


class SessionStore:
    """Server-side web sessions and failed sign-in counts, on the state DB's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ sessions
    def start(self, token: str, max_age_s: float) -> SignIn | None:
        """A new session for the owner of `token`, or None when the token is unknown or revoked."""
        token = token.strip()
        if not token:
            return None
        t = db.api_tokens.c
        now = utcnow()
        key = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.id, t.approver).where(t.sha256 == hash_token(token),
                                                                 t.revoked_at.is_(None))).first()
            if row is None:
                return None
            s = db.web_sessions.c
            conn.execute(db.web_sessions.delete().where(
                sa.or_(s.expires_at < now - timedelta(seconds=EXPIRED_KEPT_S),
                       s.ended_at < now - timedelta(seconds=EXPIRED_KEPT_S))))
            conn.execute(db.web_sessions.insert().values(
                id=session_hash(key), approver=row.approver, token_id=row.id, created_at=now,
                expires_at=now + timedelta(seconds=max_age_s)))
        return SignIn(key=key, approver=row.approver)

    def approver_for(self, key: str | None) -> str | None:
        """The approver of a live session: not ended, not expired, its token not revoked. None otherwise."""
        if not key:
            return None
        s, t = db.web_sessions.c, db.api_tokens.c
        with self.engine.connect().execution_options(pw_read=True) as conn:
            row = conn.execute(
                sa.select(s.approver, s.expires_at, s.ended_at, t.revoked_at)
                .select_from(db.web_sessions.join(db.api_tokens, t.id == s.token_id))
                .where(s.id == session_hash(key))).first()
        if row is None or row.ended_at is not None or row.revoked_at is not None:
            return None
        expires = _aware(row.expires_at)
        return row.approver if expires is not None and expires > utcnow() else None

    def end(self, key: str | None) -> bool:
        """Sign a session out (it is refused from now on); False when there was no live one."""
        if not key:
            return False
        s = db.web_sessions.c
        with self.engine.begin() as conn:
            res = conn.execute(db.web_sessions.update().where(s.id == session_hash(key), s.ended_at.is_(None))
                               .values(ended_at=utcnow()))
        return bool(res.rowcount)

    def live_sessions(self, approver: str) -> int:
        """How many sessions of `approver` are live now (their token not revoked)."""
        s, t = db.web_sessions.c, db.api_tokens.c
        with self.engine.connect().execution_options(pw_read=True) as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(db.web_sessions.join(db.api_tokens, t.id == s.token_id))
                .where(s.approver == approver, s.ended_at.is_(None), t.revoked_at.is_(None),
                       s.expires_at > utcnow())).scalar_one())

    # ------------------------------------------------------------------ throttling
    def retry_after(self, keys: list[str], now: datetime | None = None) -> int | None:
        """Whole seconds until the most blocked of `keys` may try again; None when none is blocked.

        Asked before every token check, so each key's block is kept in this process for `BLOCK_CACHE_S`: a block
        this process sets applies at once, one set by another server process within that time."""
        now = now or utcnow()
        keys = [k for k in keys if k]
        if not keys:
            return None
        cache = _BLOCKS.setdefault(self.engine, {})
        clock = time.monotonic()
        missing = [k for k in keys if k not in cache or clock - cache[k][0] > BLOCK_CACHE_S]
        if missing:
            f = db.sign_in_failures.c
            with self.engine.connect().execution_options(pw_read=True) as conn:
                found = dict(conn.execute(sa.select(f.key, f.blocked_until).where(f.key.in_(missing))).all())
            for k in missing:
                cache[k] = (clock, _aware(found.get(k)))
        until = [cache[k][1] for k in keys]
        waits = [(u - now).total_seconds() for u in until if u is not None and u > now]
        return max(1, math.ceil(max(waits))) if waits else None

    def record_failure(self, keys: list[str], policy: ThrottlePolicy = THROTTLE,
                       now: datetime | None = None) -> dict[str, int]:
        """Count one failed sign-in against each key; returns the keys that this failure blocked, with the block's
        length in whole seconds (empty while every key is under the limit)."""
        now = now or utcnow()
        blocked: dict[str, int] = {}
        cache = _BLOCKS.setdefault(self.engine, {})
        for key in dict.fromkeys(k for k in keys if k):
            for attempt in range(3):  # two first failures of a key at once: one insert wins, the other updates
                try:
                    with self.engine.begin() as conn:
                        delay = self._fail(conn, key, policy, now)
                    break
                except IntegrityError:
                    if attempt == 2:
                        raise
            cache[key] = (time.monotonic(), now + timedelta(seconds=delay) if delay else None)
            if delay:
                blocked[key] = max(1, math.ceil(delay))
        return blocked

    def _fail(self, conn: Connection, key: str, policy: ThrottlePolicy, now: datetime) -> float:
        f = db.sign_in_failures.c
        row = conn.execute(sa.select(f.failures, f.window_started_at).where(f.key == key)).first()
        if row is None or (now - _aware(row.window_started_at)).total_seconds() > policy.window_s:  # type: ignore[operator]
            failures, started = 1, now
        else:
            failures, started = row.failures + 1, _aware(row.window_started_at)
        delay = policy.delay_s(failures)
        values = {"failures": failures, "window_started_at": started,
                  "blocked_until": now + timedelta(seconds=delay) if delay else None}
        if row is None:
            conn.execute(db.sign_in_failures.insert().values(key=key, **values))
        else:
            conn.execute(db.sign_in_failures.update().where(f.key == key).values(**values))
        return delay

    def revoked_owner(self, token: str) -> str | None:
        """The approver a revoked token belonged to (for counting failures per account), else None."""
        t = db.api_tokens.c
        token = token.strip()
        if not token:
            return None
        with self.engine.connect().execution_options(pw_read=True) as conn:
            return conn.execute(sa.select(t.approver).where(t.sha256 == hash_token(token),
                                                            t.revoked_at.is_not(None)).limit(1)).scalar_one_or_none()
