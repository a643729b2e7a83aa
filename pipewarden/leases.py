"""Leases: one owner at a time for a claimed event or a proposal being resumed, kept alive by a heartbeat.

A lease is two columns on the row it guards (the owner, and when the lease expires). Taking one is an atomic
conditional UPDATE in the state store (`... WHERE lease is free OR expired OR ours`), so on SQLite and PostgreSQL
alike exactly one of several workers gets it. While the work runs, a `Heartbeat` thread renews it; a worker that
dies stops renewing, and the next worker takes the lease over once it has expired, or at once when the owner is a
process on this machine that no longer exists (`owner_is_gone`), which is what a crashed `supervise` or a killed
`inbox approve` on a laptop leaves behind.

Owners are named `host:pid@pid-namespace` (`worker_name()`); other names (an eval's `eval:scenario`) are valid
owners whose leases are only ever taken over by expiry.

Public names: `LeasePolicy`, `RetryPolicy`, `LeaseHeld`, `Heartbeat`, `worker_name`, `owner_is_gone`, `LEASE_POLICY`,
`RETRY_POLICY`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from pipewarden.errors import InvalidTransition

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LeasePolicy:
    """How long a lease lasts without a heartbeat, and how often the heartbeat renews it."""

    ttl_s: float = 60.0
    """A lease not renewed for this long is expired: another worker may take the work over."""
    heartbeat_s: float = 15.0
    """How often the owner renews its lease while the work runs (well under `ttl_s`)."""

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s < self.ttl_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s}) must be above 0 and below ttl_s ({self.ttl_s})")


LEASE_POLICY = LeasePolicy()


class LeaseHeld(InvalidTransition):
    """Another live worker owns the lease on this work; it is being done right now. Nothing was changed."""

    def __init__(self, what: str, owner: str, until: object = None) -> None:
        self.what, self.owner = what, owner
        super().__init__(
            f"{what} is being worked on by {owner}" + (f" (lease until {until:%H:%M:%S} UTC)" if until else ""),
            hint="nothing to do: that worker finishes it; `pipewarden inbox show ID` shows the progress",
        )


def _pid_namespace() -> str:
    """This process's PID namespace (Linux), so that containers sharing a host name never judge each other's
    processes by their pids; empty where there is none to read."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def worker_name(pid: int | None = None) -> str:
    """A process of this machine as a lease owner: `host:pid@pid-namespace` (this process by default)."""
    ns = _pid_namespace()
    return f"{socket.gethostname()}:{pid if pid is not None else os.getpid()}" + (f"@{ns}" if ns else "")


def owner_is_gone(owner: str | None) -> bool:
    """True when `owner` names a process on this machine, in this PID namespace (`worker_name()`'s form), that no
    longer exists: its lease is void.

    Owners on other machines or in other PID namespaces (another container), and names of another form, are never
    judged gone: only their lease's expiry frees their work. A pid reused by a new process reads as alive, which
    also only means waiting for the expiry.
    """
    if not owner:
        return True
    where, _, ns = owner.partition("@")
    host, _, pid = where.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or ns != _pid_namespace():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


class Heartbeat:
    """Renew a lease every `policy.heartbeat_s` in a daemon thread while a block of work runs.

    `renew()` returns False when the lease was lost (taken over after it expired): `lost` is set and the heartbeat
    stops; the work's own compare-and-set writes then refuse whatever the old owner still tries.
    """

    def __init__(self, renew: Callable[[], bool], policy: LeasePolicy = LEASE_POLICY, *, what: str = "lease") -> None:
        self._renew, self._policy, self._what = renew, policy, what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self.beats = 0

    def _run(self) -> None:
        while not self._stop.wait(self._policy.heartbeat_s):
            try:
                if not self._renew():
                    self.lost = True
                    log.warning("%s: the lease was lost (taken over after it expired)", self._what)
                    return
                self.beats += 1
            except Exception as exc:  # a failed renewal is retried at the next beat; expiry is the backstop
                log.warning("%s: renewing the lease failed: %s", self._what, exc)

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self._what}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often failed work is tried again, and how long it waits in between (exponential backoff)."""

    max_attempts: int = 3
    """Attempts in all (the first included); after the last one fails or crashes the work is dead-lettered."""
    backoff_s: float = 30.0
    """The wait after the first failure; it doubles after each further one."""
    max_backoff_s: float = 3600.0
    """The longest wait between two attempts."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")

    def delay_s(self, attempts: int) -> float:
        """The wait after `attempts` failed attempts (1: backoff_s, 2: twice that, ...)."""
        return min(self.backoff_s * 2 ** max(attempts - 1, 0), self.max_backoff_s)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


RETRY_POLICY = RetryPolicy()
