from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def february_sample() -> pd.DataFrame:
    """2,000 February flights, read once per session (the whole month is not needed to judge a change)."""
    from pipewarden.evals.flights_data import source_dir

    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    return flights[flights["month"] == 2].head(2000).reset_index(drop=True)
