"""Drafting a new dataset's contract from a sample (tools/contract_draft.py): the rules it infers from an orders
table built here, key candidates, writing and registering, refusing to overwrite, and warehouse tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipewarden.errors import InputFileError, UnknownNameError, UserError
from pipewarden.policies.contract import load_contract
from pipewarden.project import load_project
from pipewarden.settings import get_settings
from pipewarden.tools.contract_draft import (
    contract_target,
    default_owner,
    draft_contract,
    key_candidates,
    read_sample,
    read_warehouse_table,
    write_draft,
)

ROWS = 200
STATUSES = ["placed", "shipped", "delivered", "cancelled"]


def orders_frame(rows: int = ROWS) -> pd.DataFrame:
    """id unique int; status low-cardinality; amount float with every 10th value null; created_at hourly timestamps."""
    return pd.DataFrame({
        "id": range(1, rows + 1),
        "status": [STATUSES[i % 4] for i in range(rows)],
        "amount": [None if i % 10 == 3 else round(5.25 + i * 1.5, 2) for i in range(rows)],
        "created_at": pd.date_range("2026-01-01", periods=rows, freq="h"),
    })


@pytest.fixture
def orders_csv(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    orders_frame().to_csv(path, index=False)
    return path


def test_the_draft_infers_types_nullability_ranges_allowed_set_keys_and_threshold(orders_csv: Path) -> None:
    df = read_sample(str(orders_csv))
    draft = draft_contract("orders", df, source=str(orders_csv), owner="alice")
    raw = yaml.safe_load(draft.yaml)
    cols = {c["name"]: c for c in raw["columns"]}
    assert {n: c["type"] for n, c in cols.items()} == {
        "id": "integer", "status": "string", "amount": "float", "created_at": "timestamp"}
    assert {n: c["nullable"] for n, c in cols.items()} == {
        "id": False, "status": False, "amount": True, "created_at": False}
    amounts = df["amount"].dropna()
    span = amounts.max() - amounts.min()
    # the range holds the whole sample and is widened by about 10% of the span on each side, no more
    assert amounts.min() - 0.11 * span <= cols["amount"]["min"] <= amounts.min()
    assert amounts.max() <= cols["amount"]["max"] <= amounts.max() + 0.11 * span
    assert cols["id"]["min"] == 0 and ROWS <= cols["id"]["max"] <= ROWS + 21  # never below 0: no negative id
    assert cols["status"]["allowed"] == sorted(STATUSES)
    assert draft.key_candidates == [["id"]] and raw["unique"] == [["id"]]
    assert raw["max_failure_rate"] == 0.05 and raw["owner"] == "alice" and raw["dataset"] == "orders"
    assert draft.rows == ROWS and draft.rows_rejected == 0
    header = draft.yaml.split("\ndataset:")[0]
    assert f"from {orders_csv}" in header and f"({ROWS} rows; columns: id, status, amount, created_at)" in header
    assert "should review" in header and "widened" in header


def test_a_pair_is_a_key_candidate_only_when_no_single_column_is() -> None:
    df = pd.DataFrame({"day": [1, 1, 2, 2, 3, 3], "carrier": ["AA", "UA"] * 3, "price": [1.5] * 6})
    assert key_candidates(df) == [["day", "carrier"]]
    df["id"] = range(6)
    assert key_candidates(df) == [["id"]]
    assert key_candidates(pd.DataFrame({"x": [1.5, 2.5], "y": ["a", "a"]})) == []  # a float is never a key


def test_write_registers_the_dataset_keeping_comments_and_refuses_to_overwrite(orders_csv: Path,
                                                                                pw_project: Path) -> None:
    project_file = pw_project / "pipewarden.toml"
    before = project_file.read_text()
    draft = draft_contract("orders", read_sample(str(orders_csv)), source=str(orders_csv), owner="alice")
    path = write_draft(draft)
    assert path == pw_project / "contracts" / "orders.yaml" and path.read_text() == draft.yaml
    c = load_contract("orders")
    assert c.column("amount").nullable and c.owner == "alice" and c.max_failure_rate == 0.05
    project = load_project(pw_project)
    assert project.datasets["orders"].owner == "alice"
    assert project.datasets["orders"].contract == "contracts/orders.yaml"
    after = project_file.read_text()
    comments = [line for line in before.splitlines() if line.lstrip().startswith("#") or "  #" in line]
    assert comments and all(line in after for line in comments)
    assert after.startswith(before.rstrip("\n"))  # the rest of the file is as the user wrote it

    with pytest.raises(UserError, match="already exists"):
        write_draft(draft)
    assert path.read_text() == draft.yaml
    again = draft_contract("orders", read_sample(str(orders_csv)), source="again.csv", owner="carol")
    write_draft(again, force=True)
    assert load_contract("orders").owner == "carol" and load_project(pw_project).datasets["orders"].owner == "carol"


def test_a_registered_dataset_is_refused_without_force_and_keeps_its_settings_with_it(orders_csv: Path,
                                                                                      pw_project: Path) -> None:
    with pytest.raises(UserError, match="flights.yaml already exists"):
        contract_target("flights")
    (pw_project / "contracts" / "planes.yaml").unlink()
    with pytest.raises(UserError, match="already registered"):
        contract_target("planes")
    assert default_owner("planes") == "fleet-data-team"  # a registered dataset keeps its owner
    write_draft(draft_contract("planes", orders_frame(), source="x.csv", owner=default_owner("planes")), force=True)
    planes = load_project(pw_project).datasets["planes"]
    assert planes.reference and planes.owner == "fleet-data-team" and planes.contract == "contracts/planes.yaml"


def test_default_owner_is_the_first_owner_approver(pw_project: Path) -> None:
    assert default_owner("orders") == "alice"
    assert default_owner("weather") == "weather-data-team"


def test_a_bad_name_or_threshold_or_file_fails_before_anything_is_written(tmp_path: Path, pw_project: Path) -> None:
    with pytest.raises(UserError, match="not an identifier"):
        contract_target("../orders")
    with pytest.raises(UserError, match="between 0 and 1"):
        draft_contract("orders", orders_frame(), source="x", owner="a", max_failure_rate=1.5)
    with pytest.raises(InputFileError, match="no such file"):
        read_sample(str(tmp_path / "missing.csv"))
    assert not (pw_project / "contracts" / "orders.yaml").exists()


@pytest.fixture
def duckdb_warehouse(pw_home: Path) -> Path:
    import duckdb

    path = get_settings().warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    frame = orders_frame()
    con.register("frame", frame)
    con.execute("CREATE TABLE orders AS SELECT * FROM frame")
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.close()
    return path


def test_a_warehouse_table_is_sampled_and_an_unknown_one_is_named(duckdb_warehouse: Path) -> None:
    df = read_sample("warehouse:orders", sample_rows=50)
    assert len(df) == 50 and list(df.columns) == ["id", "status", "amount", "created_at"]
    draft = draft_contract("orders", df, source="warehouse:orders", owner="alice")
    assert draft.key_candidates == [["id"]] and "from warehouse:orders" in draft.yaml
    with pytest.raises(UnknownNameError, match="known: customers, orders") as err:
        read_warehouse_table("order")
    assert err.value.hint == "did you mean 'orders'?"
    with pytest.raises(UserError, match="not a table name"):
        read_warehouse_table("orders; drop table orders")


def test_a_missing_warehouse_says_so(pw_home: Path) -> None:
    with pytest.raises(UserError, match="does not exist yet"):
        read_sample("warehouse:orders")


def test_a_postgres_warehouse_table_is_read_through_sqlalchemy(postgres_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    orders_frame(30).to_sql("pw_orders", engine, if_exists="replace", index=False)
    engine.dispose()
    df = read_warehouse_table("pw_orders", limit=10, url=postgres_url)
    assert len(df) == 10 and list(df.columns) == ["id", "status", "amount", "created_at"]
    with pytest.raises(UnknownNameError) as err:
        read_warehouse_table("pw_order", url=postgres_url)
    assert err.value.hint == "did you mean 'pw_orders'?"


@pytest.mark.parametrize("engine", ["pandas", "gx"])
def test_the_drafted_key_is_enforced_by_both_engines(engine: str) -> None:
    from pipewarden.policies.contract import Contract
    from pipewarden.tools.checks import run_checks

    df = orders_frame(20)
    draft = draft_contract("orders", df, source="orders.csv", owner="alice")
    contract = Contract.model_validate(yaml.safe_load(draft.yaml))
    assert contract.unique == [["id"]]
    assert run_checks(df, contract, engine=engine).result.failed_rows == 0
    batch = df.copy()
    batch.loc[5, "id"] = 3  # rows 2 and 5 now share id 3
    report = run_checks(batch, contract, engine=engine)
    assert report.row_reasons[report.rejected].to_dict() == {2: "unique (id) (got 3)", 5: "unique (id) (got 3)"}
    assert report.result.failed_checks == ["unique (id) (2 rows)"]

    pair = Contract.model_validate({**contract.model_dump(exclude={"unique"}), "unique": [["status", "id"]]})
    batch.loc[5, "status"] = None  # a key with a null is not compared
    assert run_checks(batch, pair, engine=engine).result.failed_checks == ["status: not null (1 row)"]
    batch.loc[5, "status"] = batch.loc[2, "status"]
    status = batch.loc[2, "status"]
    assert run_checks(batch, pair, engine=engine).row_reasons[5] == f"unique (status, id) (got '{status}, 3')"
    with pytest.raises(ValueError, match="not in the contract"):
        Contract.model_validate({**contract.model_dump(exclude={"unique"}), "unique": [["nope"]]})
