"""Shared by the quality tests: a small warehouse with two accepted months of flights as history, built once per
session and copied into each test's PIPEWARDEN_HOME, and a helper that lands a batch and runs validate and the
quality stage on it for real (no Prefect: the stage functions themselves)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

SAMPLE_ROWS = 6000


def month_sample(month: int, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """`rows` flights of one month, sampled reproducibly and kept in time order."""
    from pipewarden.evals.flights_data import month_batch

    df = month_batch(month)
    return df.sample(n=min(rows, len(df)), random_state=month).sort_index().reset_index(drop=True)


def build_history(folder: Path) -> dict[int, pd.DataFrame]:
    """Under `folder` (a PIPEWARDEN_HOME): the reference tables and months 1 and 2 accepted. Returns the samples of
    months 1 to 3 (3 is not landed: tests make their faulty batches from it)."""
    from pipewarden.evals.flights_data import ingest_reference_tables
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.validate import validate
    from pipewarden.settings import settings_env

    with settings_env({"PIPEWARDEN_HOME": str(folder), "PIPEWARDEN_EMIT_PREFECT_EVENTS": "false"}):
        samples = {m: month_sample(m) for m in (1, 2, 3)}
        ingest_reference_tables()
        for m in (1, 2):
            path = folder / "incoming" / f"m{m}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            samples[m].to_parquet(path, index=False)
            outcome = validate(ingest("flights", path), engine="pandas")
            assert not outcome.halted, outcome.reason
        return samples


def use_history(template: Path, home: Path) -> None:
    """Copy the history warehouse (and the flights cache) into a test's home."""
    shutil.copytree(template, home, dirs_exist_ok=True)


def land_and_check(df: pd.DataFrame, folder: Path, name: str = "batch") -> tuple[Any, Any, Any]:
    """Land `df`, validate it and, if validate accepts it, run the quality stage. Returns (landed, validation,
    quality outcome or None)."""
    from pipewarden.flows.data import write_batch
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.quality_checks import check_quality
    from pipewarden.flows.validate import validate

    landed = ingest("flights", write_batch(df, folder / f"{name}.parquet"))
    outcome = validate(landed, engine="pandas")
    if outcome.halted:
        return landed, outcome, None
    return landed, outcome, check_quality(landed)
