"""The guard says which step it is on to a progress reporter (a spinner on a terminal), and draws nothing else."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pandas as pd
import pytest

from pipewarden.evals.flights_data import source_dir
from pipewarden.flows.guard import guard_batch


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, description: str) -> None:
        self.lines.append(description)

    def advance(self, amount: float = 1) -> None:
        return None

    def update(self, **_: object) -> None:
        return None


def test_the_guard_reports_each_step_and_draws_nothing_off_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    batch = pd.read_csv(source_dir() / "flights.csv.zip", nrows=300)
    guard_batch(batch, "flights")  # stderr is not a terminal here: no spinner, nothing written
    out, err = capfd.readouterr()
    assert out == "" and err == ""

    recorder = _Recorder()
    titles: list[str] = []

    @contextlib.contextmanager
    def fake_progress(description: str, **_: object) -> Iterator[_Recorder]:
        titles.append(description)
        yield recorder

    monkeypatch.setattr("pipewarden.progress.progress", fake_progress)
    result = guard_batch(batch, "flights")
    assert titles == ["guarding a batch of flights"]
    # the accepted rows come back from validate as the warehouse holds them: no step reads them back
    assert [line.split(" flights")[0] for line in recorder.lines] == [
        "landing a batch of", "validating", "quality checks on"]
    assert f"load {result.load_id} (300 rows)" in recorder.lines[1]
