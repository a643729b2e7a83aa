"""Named crash points: a test arms one, and the process dies there as a killed machine would (`os._exit(137)`).

Production code calls `faults.point("applying")` at each step of the loop from event to verified; unarmed, a point
is one comparison. A test arms a step either in the process (`arm("applying")`, with an optional hook instead of
dying) or in a child process through the environment (`PIPEWARDEN_FAULT=applying`), then runs the flow; the
process ends at that step with nothing cleaned up, exactly like `kill -9`. The next supervise must recover it.

Hand-written rather than a library: fault-injection packages patch functions from outside, whereas these points
are part of the code's contract (they name the steps the recovery is proven for), and the whole mechanism is a
comparison and an `os._exit`.

Public names: `STEPS`, `Step`, `CRASH_EXIT_CODE`, `ENV_VAR`, `point`, `arm`, `disarm`, `armed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal, get_args

from pipewarden.errors import ConfigError

Step = Literal[
    "claimed",          # a supervisor claimed an event (the claim is committed), before its agent runs
    "agent_running",    # the agent's graph is between two of its own steps (a checkpoint of the first is stored)
    "proposal_stored",  # the proposal is stored and announced, before the graph checkpoints `submit`
    "decision_stored",  # a decision completed the approval and is stored, before anything resumes
    "applying",         # the proposal is `applying`, before its versions are activated
    "applied",          # the proposal is `applied` (versions active), before the graph checkpoints `apply`
    "rerunning",        # the batch re-ran under the new versions (its writes are done), before it is judged
    "verifying",        # the verifier judged the re-run, before the proposal is marked verified or rolled back
]
STEPS: tuple[str, ...] = get_args(Step)
ENV_VAR = "PIPEWARDEN_FAULT"
CRASH_EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL (128 + 9)

FaultHook = Callable[[str], None]


def _die(step: str) -> None:
    """The default hook: end the process at once, no cleanup, no atexit, no flushing of anything but stderr."""
    os.write(2, f"pipewarden: fault injected at {step!r}, exiting {CRASH_EXIT_CODE}\n".encode())
    os._exit(CRASH_EXIT_CODE)


_state: dict[str, object] = {"read_env": False, "step": None, "hook": _die}


def _check(step: str, where: str) -> str:
    if step not in STEPS:
        raise ConfigError(f"{where}: unknown fault step {step!r}", hint=f"use one of: {', '.join(STEPS)}")
    return step


def arm(step: str, hook: FaultHook | None = None) -> None:
    """Make `point(step)` call `hook` (default: exit the process with 137) the next time it is reached."""
    _state.update(read_env=True, step=_check(step, "faults.arm"), hook=hook or _die)


def disarm() -> None:
    """No point fires (the environment variable is not read again)."""
    _state.update(read_env=True, step=None, hook=_die)


def armed() -> str | None:
    """The armed step: set by `arm`, else read once from PIPEWARDEN_FAULT."""
    if not _state["read_env"]:
        raw = os.environ.get(ENV_VAR, "").strip()
        _state.update(read_env=True, step=_check(raw, ENV_VAR) if raw else None)
    return _state["step"]  # type: ignore[return-value]


def point(step: Step) -> None:
    """A named crash point. Free when nothing is armed; fires the hook once when `step` is the armed one."""
    if _state["read_env"] and _state["step"] is None:
        return
    if armed() == step:
        hook: FaultHook = _state["hook"]  # type: ignore[assignment]
        _state.update(step=None)  # fire once (a hook that returns lets the process go on)
        hook(step)
