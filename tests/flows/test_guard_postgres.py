"""The guard with its warehouse on PostgreSQL (PIPEWARDEN_WAREHOUSE_URL): accepted rows land in raw_orders there,
rejected rows in `quarantine` with their reasons, a re-guarded batch replaces its rows, a drifted batch halts with
its event, the quality stage reads its history there, and `pipewarden build` builds a model over raw_orders.
Each test gets its own database; the tests skip, saying why, when no PostgreSQL server is reachable."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from pipewarden.errors import BatchHalted
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.conftest import CliResult
from tests.flows.orders_project import ORDERS_TOML, epoch_shape, make_orders_project, orders

pytestmark = pytest.mark.postgres


@pytest.fixture
def warehouse(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> Iterator[sa.Engine]:
    """The orders project with a private PostgreSQL warehouse database; an engine on that database."""
    make_orders_project(tmp_path / "shop", monkeypatch)
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"pw_wh_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setenv("PIPEWARDEN_WAREHOUSE_URL", url)
    get_settings.cache_clear()
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _rows(engine: sa.Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def _no_duckdb_file(home: Path) -> bool:
    return not (home / "warehouse.duckdb").exists()


def test_a_clean_batch_is_accepted_into_raw_orders_on_postgres(warehouse: sa.Engine, pw_home: Path) -> None:
    from pipewarden import guard_batch

    df = orders(30)
    result = guard_batch(df, "orders")
    assert (result.status, result.rows_accepted, result.rows_quarantined) == ("accepted", 30, 0)
    stored = _rows(warehouse, "SELECT order_id, customer, amount, ordered_at, _load_id FROM raw_orders ORDER BY order_id")
    assert [r[0] for r in stored] == df["order_id"].tolist()
    assert [r[2] for r in stored] == df["amount"].tolist()
    assert [r[3] for r in stored] == df["ordered_at"].dt.to_pydatetime().tolist()
    assert {r[4] for r in stored} == {result.load_id}
    assert _rows(warehouse, "SELECT status, rows FROM meta_loads WHERE load_id = :l", l=result.load_id) == [
        ("accepted", 30)]
    got = result.accepted.sort_values("order_id").reset_index(drop=True)
    assert list(got.columns) == ["order_id", "customer", "amount", "ordered_at"]
    assert got["order_id"].tolist() == df["order_id"].tolist() and (got["ordered_at"] == df["ordered_at"]).all()
    assert _no_duckdb_file(pw_home)


def test_bad_rows_are_quarantined_with_reasons_on_postgres_and_a_second_guard_duplicates_nothing(
    warehouse: sa.Engine, pw_home: Path,
) -> None:
    from pipewarden import guard_batch

    df = orders(40)
    df.loc[[3, 7], "amount"] = -5.0
    first = guard_batch(df, "orders")
    again = guard_batch(df, "orders")
    assert first.load_id == again.load_id
    assert (again.rows_accepted, again.rows_quarantined) == (38, 2)
    quarantined = _rows(warehouse, "SELECT row_number, reason, row_json FROM quarantine WHERE load_id = :l "
                                   "ORDER BY row_number", l=first.load_id)
    assert [r[0] for r in quarantined] == [3, 7]
    assert all("amount" in reason for _, reason, _ in quarantined)
    assert [json.loads(r[2])["amount"] for r in quarantined] == [-5.0, -5.0]
    raw = _rows(warehouse, "SELECT order_id FROM raw_orders WHERE _load_id = :l ORDER BY order_id", l=first.load_id)
    assert [r[0] for r in raw] == sorted(set(df["order_id"]) - {4, 8})
    assert _rows(warehouse, "SELECT count(*) FROM meta_loads WHERE load_id = :l", l=first.load_id) == [(1,)]
    assert _no_duckdb_file(pw_home)


def test_a_drifted_batch_halts_with_its_event_and_leaves_no_rows_on_postgres(warehouse: sa.Engine) -> None:
    from pipewarden import guard_batch
    from pipewarden.tools.contracts import active_contract
    from pipewarden.tools.schema_match import reference_for

    assert isinstance(reference_for(active_contract("orders")), dict)  # no accepted rows yet: the contract's profile
    with pytest.raises(BatchHalted) as info:
        guard_batch(epoch_shape(orders(30)), "orders")
    result = info.value.result
    assert result.halted_at == "validate" and "ordered_at" in result.reason
    event = StateStore().get_event(result.halt_event_id)
    assert event.kind == "schema_drift" and event.load_id == result.load_id
    assert f"event schema_drift {event.id}" in info.value.message
    assert _rows(warehouse, "SELECT status FROM meta_loads WHERE load_id = :l", l=result.load_id) == [
        ("halted_schema",)]
    assert not sa.inspect(warehouse).has_table("raw_orders")

    guard_batch(orders(25, start=300), "orders")  # the schema-drift agent matches against accepted rows on PostgreSQL
    reference = reference_for(active_contract("orders"))
    assert list(reference.columns) == ["order_id", "customer", "amount", "ordered_at"]
    assert sorted(reference["order_id"]) == list(range(300, 325))


QUALITY_POLICY = """\
datasets:
  orders:
    time_column: ordered_at
    keys: [order_id]
    checks:
      distribution: {columns: [amount], min_rows: 20}
      referential:
        references: [{column: customer, reference: customers.code, max_share: 1.0}]
"""


def test_the_quality_stage_reads_its_history_on_postgres_and_withdraws_a_short_batch(
    warehouse: sa.Engine, tmp_path: Path,
) -> None:
    import numpy as np

    from pipewarden import guard_batch
    from pipewarden.policies.quality import dataset_quality
    from pipewarden.tools.contracts import active_contract
    from pipewarden.tools.quality import load_history
    from pipewarden.tools.warehouse import connect

    (tmp_path / "shop" / "policies").mkdir()
    (tmp_path / "shop" / "policies" / "quality.yaml").write_text(QUALITY_POLICY, encoding="utf-8")
    with connect() as wh:  # a customer register that lacks C003 and C005
        wh.write_frame("raw_customers", pd.DataFrame({"code": ["C000", "C001", "C002", "C004", "C006"]}))
    frames = [orders(40, start=1), orders(40, start=101)]
    a, b = (guard_batch(f, "orders") for f in frames)
    history = load_history("orders", None, dataset_quality("orders"), active_contract("orders"))
    spans = {ld.load_id: (ld.rows, ld.min_time, ld.max_time) for ld in history.loads}
    assert spans == {r.load_id: (40, f["ordered_at"].min().to_pydatetime(), f["ordered_at"].max().to_pydatetime())
                     for r, f in zip((a, b), frames, strict=True)}
    (bins,) = history.bins
    pooled = np.concatenate([f["amount"].to_numpy() for f in frames])
    assert bins.column == "amount" and bins.rows == 80
    assert bins.edges == sorted({float(q) for q in np.quantile(pooled, np.linspace(0, 1, 11)[1:-1])})
    (ref,) = history.references
    assert sorted(ref.keys) == ["C000", "C001", "C002", "C004", "C006"] and sorted(ref.known_broken) == ["C003", "C005"]
    assert sorted(ref.shares) == sorted(float(f["customer"].isin(["C003", "C005"]).mean()) for f in frames)
    sampled = load_history("orders", None, dataset_quality("orders"), active_contract("orders"), max_rows=50)
    assert sampled.bins[0].rows == 50

    with pytest.raises(BatchHalted) as info:  # a quarter of the usual volume: the volume check halts it
        guard_batch(orders(10, start=201), "orders")
    short = info.value.result
    assert short.halted_at == "quality" and "volume" in short.reason
    assert StateStore().get_event(short.halt_event_id).kind == "quality_anomaly"
    assert _rows(warehouse, "SELECT status FROM meta_loads WHERE load_id = :l", l=short.load_id) == [
        ("halted_quality",)]
    assert _rows(warehouse, "SELECT count(*) FROM raw_orders WHERE _load_id = :l", l=short.load_id) == [(0,)]
    assert _rows(warehouse, "SELECT count(*) FROM raw_orders") == [(80,)]


def test_pipewarden_build_builds_a_model_over_raw_orders_on_postgres(
    warehouse: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw: Callable[..., CliResult],
) -> None:
    from pipewarden import guard_batch

    root = tmp_path / "shop"
    (root / "pipewarden.toml").write_text(ORDERS_TOML + '\n[models]\npath = "models"\ndialect = "duckdb"\n')
    (root / "models").mkdir()
    # strftime is DuckDB's spelling: the build transpiles it for PostgreSQL
    (root / "models" / "customer_months.sql").write_text(
        "SELECT customer, strftime(ordered_at, '%Y-%m') AS month, COUNT(*) AS orders, SUM(amount) AS revenue\n"
        "FROM raw_orders GROUP BY customer, strftime(ordered_at, '%Y-%m')\n")
    get_settings.cache_clear()
    df = orders(30)
    guard_batch(df, "orders")

    res = pw("build", "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["dialect"] == "postgres" and [m["status"] for m in report["models"]] == ["ok"]
    built = _rows(warehouse, "SELECT customer, month, orders, revenue FROM customer_months ORDER BY customer, month")
    expected = (df.assign(month=df["ordered_at"].dt.strftime("%Y-%m"))
                .groupby(["customer", "month"]).agg(orders=("order_id", "size"), revenue=("amount", "sum"))
                .reset_index().sort_values(["customer", "month"]))
    assert [(c, m, n) for c, m, n, _ in built] == list(expected[["customer", "month", "orders"]].itertuples(
        index=False, name=None))
    assert [round(float(r), 2) for *_, r in built] == [round(float(r), 2) for r in expected["revenue"]]


def test_run_batch_guards_a_file_into_postgres(warehouse: sa.Engine, prefect_harness: None, tmp_path: Path) -> None:
    from pipewarden.flows.pipeline import run_batch

    src = tmp_path / "orders.parquet"
    df = orders(30)
    df.loc[[2], "amount"] = -1.0
    df.to_parquet(src, index=False)
    result = run_batch("orders", str(src))
    assert (result.status, result.rows_in, result.rows_quarantined) == ("completed", 30, 1)
    assert _rows(warehouse, "SELECT count(*) FROM raw_orders") == [(29,)]
    assert _rows(warehouse, "SELECT row_number FROM quarantine") == [(2,)]
