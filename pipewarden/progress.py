"""Progress on stderr for commands that take more than a second (`run`, `supervise`, `build`, `eval`, `check`).

One helper so every command shows progress the same way and turns it off the same way: a Rich spinner (no total)
or bar (a total) on stderr, transient (it disappears when the work ends, leaving the command's own output), and
nothing at all when stderr is not a terminal or the command was given `--json`. Code doing the work takes a
`Reporter` (a plain callable-friendly object) so it never imports Rich or knows whether anyone is watching:

    from pipewarden.progress import progress

    with progress("checking orders.csv", enabled=not as_json) as bar:
        for chunk in chunks:
            ...
            bar.advance(len(chunk))           # or bar.update(completed=n, total=m, description="...")

    run_batch(..., say=bar.say)  # `bar.say` fits wherever a `Callable[[str], None]` is wanted

A disabled reporter is a `NullReporter`: every method is a no-op, so callers need no `if`.

Public names: `progress(description, *, total=None, enabled=True, console=None)`, `Reporter` (the Protocol),
`NullReporter`, `RichReporter`, `progress_enabled(enabled=True, stream=None)`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class Reporter(Protocol):
    """What work reports its progress to. All methods are cheap and never raise."""

    def say(self, description: str) -> None:
        """Replace the line's text (what is being done now)."""

    def advance(self, amount: float = 1) -> None:
        """Move the bar on by `amount` units of the total."""

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        """Set how much is done, the total (a spinner becomes a bar once a total is known), and/or the text."""

    def note(self, line: str) -> None:
        """Print a line that stays (above the bar), e.g. one finished step. Plain text, never markup."""


class NullReporter:
    """A reporter that shows nothing: used when stderr is not a terminal, or with `--json`."""

    def say(self, description: str) -> None:
        return None

    def advance(self, amount: float = 1) -> None:
        return None

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        return None

    def note(self, line: str) -> None:
        return None


class RichReporter:
    """A reporter drawing one Rich progress task (spinner, text, bar when a total is known, elapsed time)."""

    def __init__(self, bar: Progress, task: TaskID) -> None:
        self._bar, self._task = bar, task

    def say(self, description: str) -> None:
        self._bar.update(self._task, description=_plain(description))

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._task, amount)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        kwargs: dict[str, object] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        if description is not None:
            kwargs["description"] = _plain(description)
        self._bar.update(self._task, **kwargs)  # type: ignore[arg-type]

    def note(self, line: str) -> None:
        self._bar.console.print(line, markup=False, highlight=False)


def _plain(text: str) -> str:
    """Descriptions often carry data (file and dataset names with brackets): never Rich markup."""
    from rich.markup import escape

    return escape(text)


def progress_enabled(enabled: bool = True, stream: IO[str] | None = None) -> bool:
    """Whether to draw: asked for, the stream (stderr by default) is a terminal, and `TERM` is not `dumb`."""
    if not enabled:
        return False
    stream = stream if stream is not None else sys.stderr
    try:
        is_tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
    return bool(is_tty) and os.environ.get("TERM", "") != "dumb"


@contextlib.contextmanager
def progress(description: str, *, total: float | None = None, enabled: bool = True,
             console: Console | None = None) -> Iterator[Reporter]:
    """Show a transient spinner (or a bar, given `total`) on stderr while the block runs; a `NullReporter` when
    `enabled` is false (pass `not as_json`) or stderr is not a terminal. Given a `console`, it draws there and its
    own terminal check applies (tests pass a forced-terminal console)."""
    if console is None and not progress_enabled(enabled):
        yield NullReporter()
        return
    if console is not None and (not enabled or not console.is_terminal):
        yield NullReporter()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class CountedOnly(BarColumn):
        """A bar, and "3/10", only once a total is known: a spinner alone says "working" better than "0/?"."""

        def render(self, task):  # type: ignore[no-untyped-def]
            return super().render(task) if task.total is not None else Text("")

    class CountOnly(MofNCompleteColumn):
        def render(self, task):  # type: ignore[no-untyped-def]
            return super().render(task) if task.total is not None else Text("")

    console = console or Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), CountedOnly(), CountOnly(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        yield RichReporter(bar, bar.add_task(_plain(description), total=total))
