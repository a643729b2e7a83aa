"""The supervisor worker beside the web inbox: `pipewarden serve` runs `pipewarden supervise` in a child process.

The web server and the Slack endpoint only store decisions (with their durable resume request, in the same
transaction); this worker is what applies them, re-runs the batch and verifies it, under a lease
(`agents.supervisor`), through the configured Resumer port, and it tells the Notifier how each resume ended (so
Slack follows a proposal past "approved"). It resumes stored decisions from its first second: the knowledge index
sync and the agents' warm-up it needs before claiming events run beside it. It is a child process, not a thread or
a background task of the server, so pipeline work never competes with requests for the server's event loop or GIL,
and the inbox never imports `agents/`.

The child inherits the server's environment (project, home, state DB). It is started with the server and
stopped with it (SIGTERM, then SIGKILL after a grace period); on Linux it is also asked to die with its parent
(`PR_SET_PDEATHSIG`), so a server killed with SIGKILL leaves no orphan. A worker that exits on its own is started
again after a pause that doubles up to a minute; its output goes to the server's stderr.

Public names: `SupervisorWorker`, `worker_command`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

RESTART_PAUSE_S = (1.0, 60.0)  # first pause before restarting a worker that exited, and the longest
STOP_GRACE_S = 10.0


def worker_command(interval: float = 1.0) -> list[str]:
    """The worker's command line: this interpreter running `pipewarden supervise --interval N`."""
    return [sys.executable, "-m", "pipewarden", "supervise", "--interval", f"{interval:g}"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SupervisorWorker:
    """A child process running the supervise loop, kept alive while the server runs. `start()`, `stop()`."""

    def __init__(self, command: Sequence[str] | None = None, *, say: Callable[[str], None] | None = None,
                 stderr: object = None) -> None:
        self.command = list(command or worker_command())
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stderr = stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> SupervisorWorker:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="pipewarden-worker-watch", daemon=True)
        self._watcher.start()
        return self

    def _spawn(self) -> None:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self.stderr or sys.stderr,
                                     stderr=self.stderr or sys.stderr, preexec_fn=preexec)  # noqa: PLW1509
        self.starts += 1

    def _watch(self) -> None:
        pause = RESTART_PAUSE_S[0]
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            self.say(f"pipewarden: the supervisor worker exited ({code}); starting it again in {pause:g} s")
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, RESTART_PAUSE_S[1])
            self._spawn()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the worker: SIGTERM, then SIGKILL if it has not exited within `grace_s`."""
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
