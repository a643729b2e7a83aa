from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipewarden.events import SchemaDrift
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.agents import fake_runner
from tests.fakes.runtimes import swap

SAMPLE_ROWS = 3000


@pytest.fixture(scope="session")
def february() -> pd.DataFrame:
    from pipewarden.evals.flights_data import month_batch

    return month_batch(2).sample(SAMPLE_ROWS, random_state=7).reset_index(drop=True)


@pytest.fixture(autouse=True)
def fake_pipeline(monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> Iterator[list[str]]:
    """Agents' re-runs go to the fake runner; the tests queue outcomes in the returned list."""
    swap(monkeypatch, pipeline_runner=fake_runner.run)
    get_settings.cache_clear()
    fake_runner.OUTCOMES.clear()
    fake_runner.CALLS.clear()
    yield fake_runner.OUTCOMES


def drifted_event(df: pd.DataFrame, tmp_path: Path, renames: dict[str, str] | None = None,
                  to_string: list[str] | None = None) -> SchemaDrift:
    """Land a drifted batch and validate it for real: the SchemaDrift event lands in the outbox."""
    from pipewarden.flows.data import inject_drift, write_batch
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.validate import validate

    bad = inject_drift(df, renames=renames if renames is not None else {"dep_delay": "departureDelay"},
                       to_string=to_string if to_string is not None else ["flight"])
    landed = ingest("flights", write_batch(bad, tmp_path / "drifted.parquet"))
    outcome = validate(landed)
    assert outcome.halted
    (event,) = [e for e in StateStore().claim_events("peek", limit=10)]
    StateStore().finish_event(event.id, "pending")  # put it back for the supervisor
    assert isinstance(event, SchemaDrift)
    return event
