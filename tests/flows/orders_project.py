"""A tiny non-flights project for the guard tests: one `orders` dataset, its contract, and batch builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import pytest

ORDERS_TOML = """\
name = "shop"

[datasets.orders]
owner = "shop-data-team"
contract = "contracts/orders.yaml"
source = "the shop's order export"
"""

ORDERS_CONTRACT = """\
dataset: orders
version: 1
description: One row per order placed in the shop.
owner: shop-data-team
allowed_roles: [owner, engineer]
max_failure_rate: 0.2
columns:
  - {name: order_id, type: integer, nullable: false, min: 1, description: "Order number."}
  - {name: customer, type: string, nullable: false, max_length: 20, description: "Customer code."}
  - {name: amount, type: float, nullable: false, min: 0, max: 10000, description: "Order total in EUR."}
  - {name: ordered_at, type: timestamp, nullable: false, description: "When the order was placed (UTC)."}
"""


def make_orders_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write the project under `root` and point PIPEWARDEN_PROJECT at it (settings re-read)."""
    from pipewarden.settings import get_settings

    (root / "contracts").mkdir(parents=True)
    (root / "pipewarden.toml").write_text(ORDERS_TOML, encoding="utf-8")
    (root / "contracts" / "orders.yaml").write_text(ORDERS_CONTRACT, encoding="utf-8")
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(root))
    get_settings.cache_clear()
    return root


def orders(n: int = 40, *, start: int = 1) -> pd.DataFrame:
    """`n` clean orders in the contract's shape, with ids from `start` (fixed dates: nothing depends on today)."""
    ids = list(range(start, start + n))
    return pd.DataFrame({
        "order_id": pd.Series(ids, dtype="int64"),
        "customer": [f"C{i % 7:03d}" for i in ids],
        "amount": [round(10.0 + (i % 13) * 3.5, 2) for i in ids],
        "ordered_at": pd.to_datetime([f"2024-06-{1 + i % 28:02d} 10:{i % 60:02d}:00" for i in ids], utc=True),
    })


def epoch_shape(df: pd.DataFrame) -> pd.DataFrame:
    """Shape A: `ordered_at` arrives as integer epoch seconds."""
    out = df.copy()
    out["ordered_at"] = (out["ordered_at"] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    return out


def renamed_shape(df: pd.DataFrame) -> pd.DataFrame:
    """Shape B: `amount` arrives as `total`."""
    return df.rename(columns={"amount": "total"})


def approve(event_id: UUID | str, mapping: Any) -> Any:
    """Propose `mapping` for the event, approve it as a person and apply it (the real apply tool); the proposal."""
    from pipewarden.models import Proposal, Verdict
    from pipewarden.store import StateStore
    from pipewarden.tools.apply import apply_change

    store = StateStore()
    p = store.create_proposal(Proposal(event_id=event_id, agent="schema-drift", dataset=mapping.dataset,
                                       title="fix", diagnosis="drift", change=mapping, thread_id=f"event-{event_id}"))
    store.decide(p.id, Verdict.approve, "alice")
    apply_change(p.id)
    return store.get_proposal(p.id)
