"""The progress helper: drawn on a terminal, silent (a NullReporter) when disabled or not a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from pipewarden.progress import NullReporter, RichReporter, progress, progress_enabled


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=100), buf


def test_draws_on_a_terminal_and_reports_each_update() -> None:
    console, buf = _terminal()
    with progress("checking [orders].csv", total=4, console=console) as bar:
        assert isinstance(bar, RichReporter)
        bar.advance(2)
        bar.update(completed=3, description="chunk 3 of 4")
        bar.say("almost [done]")
        bar.note("built [stg_flights]")
        task = bar._bar.tasks[0]
        assert (task.completed, task.total) == (3, 4)
        bar._bar.refresh()
    drawn = buf.getvalue()
    assert "almost [done]" in drawn  # data in descriptions is not read as Rich markup
    assert "3/4" in drawn
    assert "built [stg_flights]" in drawn  # a note stays, printed as plain text


def test_a_spinner_without_a_total_shows_no_count() -> None:
    console, buf = _terminal()
    with progress("indexing", console=console) as bar:
        bar._bar.refresh()  # type: ignore[attr-defined]
    assert "indexing" in buf.getvalue() and "/?" not in buf.getvalue()


def test_json_or_a_non_terminal_draws_nothing() -> None:
    console, buf = _terminal()
    with progress("work", console=console, enabled=False) as bar:  # --json
        assert isinstance(bar, NullReporter)
        bar.advance(); bar.say("x"); bar.update(completed=1, total=2); bar.note("y")  # noqa: E702
    assert buf.getvalue() == ""
    plain = Console(file=io.StringIO(), force_terminal=False)
    with progress("work", console=plain) as bar:
        assert isinstance(bar, NullReporter)


def test_enabled_only_for_a_terminal_stream(monkeypatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert progress_enabled(True, Tty())
    assert not progress_enabled(False, Tty())
    assert not progress_enabled(True, io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not progress_enabled(True, Tty())
