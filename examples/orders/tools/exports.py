"""Synthetic order exports for the example: deterministic, made here, nothing downloaded.

`export(day)` is a clean hourly export in the contract's shape; `drifted_export(day)` is what the shop's new export
service sends after a release: `amount` renamed to `total_amount` and `created_at` as epoch milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

STATUSES = ["placed", "paid", "shipped", "cancelled"]


def customers(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({"customer_id": np.arange(1, n + 1),
                         "country": rng.choice(["DE", "FR", "NL", "ES", "IT"], size=n)})


def export(day: int, rows: int = 2000) -> pd.DataFrame:
    """One export of `rows` orders placed on day `day` of June 2026 (order ids never repeat across days)."""
    rng = np.random.default_rng(day)
    start = datetime(2026, 6, day, tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 86400, size=rows))
    return pd.DataFrame({
        "order_id": np.arange(day * 100_000 + 1, day * 100_000 + rows + 1),
        "customer_id": rng.integers(1, 201, size=rows),
        "status": rng.choice(STATUSES, size=rows, p=[0.2, 0.4, 0.35, 0.05]),
        "amount": np.round(rng.gamma(2.0, 40.0, size=rows), 2),
        "created_at": [start + timedelta(seconds=int(s)) for s in seconds],
    })


def drifted_export(day: int, rows: int = 2000) -> pd.DataFrame:
    """The same orders as the new export service sends them."""
    df = export(day, rows).rename(columns={"amount": "total_amount"})
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    df["created_at"] = ((pd.to_datetime(df["created_at"], utc=True) - epoch) // pd.Timedelta(milliseconds=1)).astype("int64")
    return df


def write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path
