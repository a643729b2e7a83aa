"""The supervisor worker `pipewarden serve` runs beside the web server (`inbox.worker.SupervisorWorker`): a child
process, started with the server, started again if it exits, and stopped with the server. A stand-in command plays
`pipewarden supervise` so the test needs no agents; `worker_command` is what serve really runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipewarden.inbox.worker import SupervisorWorker, worker_command


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_serve_runs_the_supervise_loop_with_this_interpreter() -> None:
    assert worker_command(2) == [sys.executable, "-m", "pipewarden", "supervise", "--interval", "2"]


def test_the_worker_starts_is_restarted_when_it_exits_and_stops_with_the_server(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    # each start appends a line, then the first one exits at once and later ones keep running, like a loop
    script = (f"import pathlib, time; p = pathlib.Path({str(starts)!r}); n = len(p.read_text().splitlines()) "
              "if p.exists() else 0; p.open('a').write('x\\n'); time.sleep(0 if n == 0 else 60)")
    said: list[str] = []
    worker = SupervisorWorker([sys.executable, "-c", script], say=said.append).start()
    try:
        assert wait_for(lambda: starts.exists() and len(starts.read_text().splitlines()) == 2)
        assert worker.starts == 2 and "exited (0); starting it again" in said[0]
        assert wait_for(worker.alive)
        pid = worker.pid
    finally:
        worker.stop(grace_s=5)
    assert not worker.alive() and pid is not None
    time.sleep(1.5)  # longer than the restart pause: a stopped worker stays stopped
    assert len(starts.read_text().splitlines()) == 2
