"""`pipewarden contract init NAME --from FILE|warehouse:TABLE` as a user meets it: the contract is written and
registered, a check of the same sample passes, the knowledge store holds it, nothing is overwritten, and each bad
input is one clear line with exit 2 and nothing written.

The command indexes with the default embedder (MiniLM); the tests swap in the HashEmbedder fake that
tests/knowledge use, through the runtime's embedder (`runtime.current().embedder()`), which `index_chunks` uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipewarden.knowledge.embedder import HashEmbedder
from pipewarden.knowledge.store import QdrantStore
from pipewarden.policies.contract import load_contract
from pipewarden.project import load_project
from tests.fakes.runtimes import swap
from tests.tools.test_contract_draft import STATUSES, orders_frame


@pytest.fixture(autouse=True)
def hash_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    swap(monkeypatch, embedder=HashEmbedder)  # the runtime's embedder, which `index_chunks` uses


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """orders.csv in the working folder (short relative names keep rich from wrapping messages)."""
    folder = tmp_path / "work"
    folder.mkdir()
    orders_frame().to_csv(folder / "orders.csv", index=False)
    monkeypatch.chdir(folder)
    return folder


def test_init_writes_registers_indexes_and_the_sample_passes_its_check(pw, sample: Path, pw_project: Path,
                                                                       pw_home: Path) -> None:
    project_file = pw_project / "pipewarden.toml"
    before = project_file.read_text()
    r = pw("contract", "init", "orders", "--from", "orders.csv")
    assert r.code == 0, r.err
    assert "contracts/orders.yaml" in r.out_text and "key candidates: id" in r.out_text

    text = (pw_project / "contracts" / "orders.yaml").read_text()
    assert text.startswith("# Data contract for orders, drafted by `pipewarden contract init` from orders.csv")
    c = load_contract("orders")
    assert [(col.name, col.type, col.nullable) for col in c.columns] == [
        ("id", "integer", False), ("status", "string", False), ("amount", "float", True),
        ("created_at", "timestamp", False)]
    assert c.column("status").allowed == sorted(STATUSES) and c.max_failure_rate == 0.05
    assert c.owner == "alice"  # the first approver with the owner role in approvers.yaml

    project = load_project(pw_project)
    assert project.datasets["orders"].contract == "contracts/orders.yaml"
    assert project.datasets["orders"].owner == "alice"
    after = project_file.read_text()
    assert "# The flights example: a pipewarden project" in after and "# people, roles and tokens" in after
    assert after.startswith(before.rstrip("\n"))

    chunks = QdrantStore(path=pw_home / "qdrant").chunks("contracts/orders.yaml")
    assert chunks and {ch.dataset for ch in chunks} == {"orders"} and {ch.kind for ch in chunks} == {"contract"}
    assert sorted(ch.title for ch in chunks) == sorted(["orders contract", *(f"orders.{n}" for n in c.names)])

    check = pw("check", "orders.csv", "--dataset", "orders")
    assert check.code == 0, check.out + check.err
    assert "passes the orders contract (200 rows, 0 rejected" in check.out_text


def test_init_refuses_to_overwrite_without_force(pw, sample: Path, pw_project: Path) -> None:
    assert pw("contract", "init", "orders", "--from", "orders.csv").code == 0
    path = pw_project / "contracts" / "orders.yaml"
    path.write_text(path.read_text() + "# reviewed by alice\n")
    again = pw("contract", "init", "orders", "--from", "orders.csv")
    assert again.code == 2 and "orders.yaml already exists; not overwriting it" in again.err_text
    assert "--force" in again.err_text and "Traceback" not in again.err
    assert path.read_text().endswith("# reviewed by alice\n")
    forced = pw("contract", "init", "orders", "--from", "orders.csv", "--owner", "carol", "--force")
    assert forced.code == 0, forced.err
    assert "reviewed by alice" not in path.read_text() and load_contract("orders").owner == "carol"
    assert load_project(pw_project).datasets["orders"].owner == "carol"


def test_init_from_a_duckdb_warehouse_table(pw, sample: Path, pw_project: Path, pw_home: Path) -> None:
    import duckdb

    from pipewarden.settings import get_settings

    path = get_settings().warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.register("frame", orders_frame())
    con.execute("CREATE TABLE orders AS SELECT * FROM frame")
    con.close()
    r = pw("contract", "init", "orders", "--from", "warehouse:orders", "--sample-rows", "120", "--json")
    assert r.code == 0, r.err
    body = json.loads(r.out)
    assert body["rows"] == 120 and body["key_candidates"] == [["id"]] and body["source"] == "warehouse:orders"
    assert body["indexed"]["added"] > 0
    c = load_contract("orders")
    assert c.column("created_at").type == "timestamp" and c.column("amount").nullable
    assert "from warehouse:orders" in (pw_project / "contracts" / "orders.yaml").read_text()

    unknown = pw("contract", "init", "sales", "--from", "warehouse:order")
    assert unknown.code == 2 and "unknown table in the warehouse" in unknown.err_text
    assert "did you mean 'orders'?" in unknown.err_text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("orders", "--from", "missing.csv"), "missing.csv: no such file"),
        (("orders", "--from", "empty.csv"), "empty.csv: the file is empty (0 bytes)"),
        (("orders", "--from", "notes.txt"), "notes.txt: unsupported file type '.txt'"),
        (("order-s", "--from", "orders.csv"), "dataset name 'order-s' is not an identifier"),
        (("orders", "--from", "warehouse:orders"), "does not exist yet"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(pw, sample: Path, pw_project: Path, args: tuple[str, ...],
                                                          expected: str) -> None:
    (sample / "empty.csv").write_bytes(b"")
    (sample / "notes.txt").write_text("id\n1\n")
    project_before = (pw_project / "pipewarden.toml").read_text()
    contracts_before = sorted(p.name for p in (pw_project / "contracts").iterdir())
    r = pw("contract", "init", *args)
    assert r.code == 2 and expected in r.err_text, r.err
    assert r.err.startswith("error:") and "hint:" in r.err and "Traceback" not in r.err
    assert (pw_project / "pipewarden.toml").read_text() == project_before
    assert sorted(p.name for p in (pw_project / "contracts").iterdir()) == contracts_before
