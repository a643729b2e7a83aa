"""A child process for the concurrency tests: waits for a go-file, then decides or applies once; prints JSON.

    python -m tests.pipewarden.decide_worker decide PROPOSAL_ID ACTOR FOLDER
    python -m tests.pipewarden.decide_worker apply PROPOSAL_ID - FOLDER
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pipewarden.errors import PipewardenError
from pipewarden.inbox.service import decide
from pipewarden.store import StateStore
from pipewarden.tools.apply import apply_change


def main() -> None:
    what, pid, actor, folder = sys.argv[1:5]
    StateStore()  # connect and migrate before the start line
    (Path(folder) / f"ready-{actor}-{time.monotonic_ns()}").touch()
    deadline = time.monotonic() + 60
    while not (Path(folder) / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go-file within 60 s")
        time.sleep(0.002)
    try:
        if what == "decide":
            decide(pid, "approve", actor, via="cli", resume=False)
        else:
            apply_change(pid)
        print(json.dumps({"ok": True}))
    except PipewardenError as exc:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": exc.message}))


if __name__ == "__main__":
    main()
