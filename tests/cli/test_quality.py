"""`pipewarden quality suggest` as a user meets it: a file or the warehouse, YAML that loads as a contract,
--write never overwriting, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipewarden.policies.contract import load_contract
from pipewarden.settings import get_settings


@pytest.fixture
def policies(pw_project: Path) -> Path:
    """The test's private copy of the example project (conftest), so --write never touches the repository."""
    get_settings.cache_clear()
    return pw_project


def test_suggest_from_a_file_prints_a_contract_that_loads(pw, in_batches: Path, policies: Path, tmp_path: Path) -> None:
    r = pw("quality", "suggest", "flights", "--from", "jan.csv")
    assert r.code == 0, r.err
    assert r.out.startswith("# Suggested data contract for flights, profiled from jan.csv (300 rows).")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "flights.yaml").write_text(r.out, encoding="utf-8")
    c = load_contract("flights", tmp_path / "out")
    assert c.column("origin").allowed is not None and set(c.column("origin").allowed) <= {"EWR", "JFK", "LGA"}
    assert c.column("time_hour").type == "timestamp" and c.column("year").min == 2013
    data = pw("quality", "suggest", "flights", "--from", "jan.csv", "--json")
    body = __import__("json").loads(data.out)
    assert body["rows_profiled"] == 300 and yaml.safe_load(body["yaml"])["dataset"] == "flights"


def test_write_makes_a_new_file_each_time_and_never_a_contract(pw, in_batches: Path, policies: Path) -> None:
    first = pw("quality", "suggest", "flights", "--from", "jan.csv", "--write")
    second = pw("quality", "suggest", "flights", "--from", "jan.parquet", "--write")
    assert first.code == second.code == 0
    folder = policies / "contracts" / "suggested"
    assert sorted(p.name for p in folder.iterdir()) == ["flights-2.yaml", "flights.yaml"]
    assert "jan.csv" in (folder / "flights.yaml").read_text() and "jan.parquet" in (folder / "flights-2.yaml").read_text()
    assert "written to" in first.err_text
    from pipewarden.policies.contract import list_contracts

    assert "flights" in list_contracts() and not any("suggested" in n for n in list_contracts())


def test_suggest_errors_name_the_problem(pw, in_batches: Path) -> None:
    unknown = pw("quality", "suggest", "flightz", "--from", "jan.csv")
    assert unknown.code == 2 and "did you mean 'flights'" in unknown.err_text
    empty = pw("quality", "suggest", "flights", "--from", "empty.csv")
    assert empty.code == 2 and "empty.csv" in empty.err_text and "Traceback" not in empty.err
    nothing = pw("quality", "suggest", "flights")
    assert nothing.code == 2 and "no warehouse yet" in nothing.err_text and "--from FILE" in nothing.err_text
