"""`pipewarden quality scan` as a user meets it: JSON on stdout with file positions, a table otherwise, the
contract's rules with --dataset, and clear errors for a missing file or an unknown dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def test_json_lists_each_flagged_cell_by_its_row_in_the_file(pw, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [{"id": str(i), "zip": ["02134", "10001"][i % 2], "city": ["Boston", "New York"][i % 2]} for i in range(60)]
    rows[13]["city"] = "N/A"
    rows[40]["zip"] = "1001"
    pd.DataFrame(rows).to_csv("t.csv", index=False)
    r = pw("quality", "scan", "t.csv", "--json")
    assert r.code == 0, r.err
    body = json.loads(r.out)
    assert body["rows"] == 60 and body["source"] == "t.csv" and body["dataset"] is None
    assert [(f["row"], f["column"], f["kind"]) for f in body["flags"]] == [(13, "city", "missing"), (40, "zip", "format")]
    assert body["flags"][0] == {"row": 13, "column": "city", "kind": "missing",
                                "reason": "missing value in disguise: 'N/A'", "value": "N/A"}
    table = pw("quality", "scan", "t.csv")
    assert table.code == 0 and "t.csv: 60 rows, 3 columns; 2 flagged cells (format 1, missing 1)" in table.out_text


def test_with_dataset_the_contract_applies(pw, in_batches: Path) -> None:
    r = pw("quality", "scan", "allbad.csv", "--dataset", "flights", "--json")
    assert r.code == 0, r.err
    body = json.loads(r.out)
    origin = [f for f in body["flags"] if f["column"] == "origin"]
    assert body["dataset"] == "flights" and len(origin) == body["rows"] == 40
    assert {f["kind"] for f in origin} == {"domain"} and all(f["value"] == "XXX" for f in origin)
    assert "allowed values (EWR, JFK, LGA)" in origin[0]["reason"]


def test_errors_name_the_file_or_the_dataset(pw, in_batches: Path) -> None:
    missing = pw("quality", "scan", "nope.csv")
    assert missing.code == 2 and "nope.csv" in missing.err_text and "Traceback" not in missing.err
    unknown = pw("quality", "scan", "jan.csv", "--dataset", "flightz")
    assert unknown.code == 2 and "unknown dataset 'flightz'" in unknown.err_text
    assert "did you mean 'flights'" in unknown.err_text
    empty = pw("quality", "scan", "empty.csv")
    assert empty.code == 2 and "empty.csv" in empty.err_text and "Traceback" not in empty.err
