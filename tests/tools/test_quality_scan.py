"""The cell-level scanner (`tools.quality_scan`): each detector finds the errors injected into a small seeded table
and leaves the clean table of the same shape alone; the contract's rules; row numbers are file positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipewarden.policies.contract import Contract
from pipewarden.tools.quality_scan import (
    CellFlag,
    ScanReport,
    edit_distance,
    read_raw,
    scan_file,
    scan_frame,
    signature,
)

ROWS = 400
ZIPS = {"02134": "Boston", "02139": "Cambridge", "01103": "Springfield", "06103": "Hartford", "10001": "New York",
        "07030": "Hoboken", "12207": "Albany", "14604": "Rochester"}
STATUS = ["placed", "paid", "shipped", "delivered"]


def clean_table(seed: int = 0, rows: int = ROWS) -> pd.DataFrame:
    """Text cells, as a CSV is read: ids, an e-mail, zip -> city, a status, a skewed amount, a date."""
    rng = np.random.default_rng(seed)
    zips = rng.choice(list(ZIPS), rows)
    names = rng.choice(["anna", "ben", "carla", "dmitri", "eve", "farid"], rows)
    return pd.DataFrame({
        "order_id": [str(100000 + i) for i in range(rows)],
        "email": [f"{n}{rng.integers(1, 999)}@example.com" for n in names],
        "zip": zips,
        "city": [ZIPS[z] for z in zips],
        "status": rng.choice(STATUS, rows, p=[0.2, 0.3, 0.3, 0.2]),
        "amount": [f"{x:.2f}" for x in rng.lognormal(3.5, 0.6, rows)],
        "ordered": (pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, rows), unit="D"))
        .strftime("%Y-%m-%d"),
    })


def flagged(report: ScanReport, kind: str) -> set[tuple[int, str | None]]:
    return {(f.row, f.column) for f in report.flags if f.kind == kind}


def precision_recall(report: ScanReport, kind: str, truth: set[tuple[int, str | None]]) -> tuple[float, float]:
    got = flagged(report, kind)
    hit = len(got & truth)
    return (hit / len(got) if got else 0.0), hit / len(truth)


def inject(df: pd.DataFrame, cells: dict[tuple[int, str], str]) -> tuple[pd.DataFrame, set[tuple[int, str | None]]]:
    dirty = df.copy()
    for (row, col), value in cells.items():
        dirty.at[row, col] = value
    return dirty, set(cells)


def test_a_clean_table_has_nothing_flagged() -> None:
    for seed in range(3):
        report = scan_frame(clean_table(seed))
        assert report.flags == [], report.flags[:5]
        assert report.column_kinds["zip"] == "code" and report.column_kinds["amount"] == "numeric"
        assert report.column_kinds["ordered"] == "date" and report.column_kinds["city"] == "text"


# each error type: the cells it is injected into (row -> value), by column
CASES: dict[str, dict[tuple[int, str], str]] = {
    "missing": {(3, "city"): "N/A", (10, "email"): "-", (25, "status"): "?", (40, "zip"): "", (55, "amount"): "9999",
                (70, "ordered"): "null", (90, "city"): "none", (120, "amount"): "-1", (200, "ordered"): "9999-12-31"},
    "format": {(5, "email"): "anna.example.com", (15, "email"): "ben at example.com", (30, "zip"): "2134",
               (45, "zip"): "O2139", (60, "ordered"): "15/03/2024", (80, "ordered"): "March 3 2024",
               (100, "amount"): "12.5 EUR"},
    "typo": {(7, "city"): "Bostn", (17, "city"): "Cambrigde", (27, "status"): "shiped", (37, "status"): "Paid",
             (47, "city"): "Hartfordd", (57, "status"): "delivred"},
    "outlier": {(9, "amount"): "25000.00", (19, "amount"): "-500.00", (29, "ordered"): "1824-05-01",
                (39, "ordered"): "2224-05-01", (49, "amount"): "0.01"},
    "dependency": {(11, "city"): "Albany", (21, "city"): "Hoboken", (31, "city"): "Boston", (41, "city"): "Rochester"},
}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_detector_finds_its_injected_errors(kind: str) -> None:
    df = clean_table(1)
    cells = {cell: value for cell, value in CASES[kind].items() if df.at[cell] != value}
    dirty, truth = inject(df, cells)
    report = scan_frame(dirty)
    precision, recall = precision_recall(report, kind, truth)
    assert recall >= 0.8, (kind, sorted(truth - flagged(report, kind)), report.flags)
    assert precision >= 0.8, (kind, sorted(flagged(report, kind) - truth))
    # nothing else is flagged on the other cells
    others = {(f.row, f.column) for f in report.flags} - truth
    assert len(others) <= 1, others


def test_the_reasons_say_what_was_seen() -> None:
    dirty, _ = inject(clean_table(1), {(7, "city"): "Bostn", (11, "city"): "Albany", (3, "city"): "N/A"})
    report = scan_frame(dirty)
    by_cell = {(f.row, f.column): f for f in report.flags}
    assert by_cell[(7, "city")].reason == "looks like a typo of 'Boston'" and by_cell[(7, "city")].value == "Bostn"
    assert by_cell[(3, "city")].reason == "missing value in disguise: 'N/A'"
    dep = by_cell[(11, "city")].reason
    assert dep.startswith(f"zip '{dirty.at[11, 'zip']}' has city '{ZIPS[dirty.at[11, 'zip']]}' in ")
    assert dep.endswith("here 'Albany'")


def test_exact_duplicate_rows_are_whole_row_findings_on_the_later_copy() -> None:
    df = clean_table(2, rows=200)
    dirty = pd.concat([df.iloc[:150], df.iloc[[20, 60]], df.iloc[150:]], ignore_index=True)
    report = scan_frame(dirty)
    dups = [f for f in report.flags if f.kind == "duplicate"]
    assert [(f.row, f.column) for f in dups] == [(150, None), (151, None)]
    assert dups[0].reason == "an exact duplicate of row 20" and dups[0].value is None
    assert len(report.flags) == 2


def test_an_identifier_column_reused_is_a_key_duplicate_without_a_contract() -> None:
    df = clean_table(2, rows=200)
    df.at[120, "order_id"] = df.at[30, "order_id"]
    report = scan_frame(df)
    assert [(f.row, f.column, f.kind) for f in report.flags] == [(120, "order_id", "duplicate")]
    assert "the same as row 30" in report.flags[0].reason


def contract() -> Contract:
    return Contract(dataset="shop", owner="t", unique=[["order_id"]], columns=[
        {"name": "order_id", "type": "integer", "nullable": False},
        {"name": "email", "type": "string"},
        {"name": "zip", "type": "string", "nullable": False},
        {"name": "city", "type": "string"},
        {"name": "status", "type": "string", "nullable": False, "allowed": STATUS},
        {"name": "amount", "type": "float", "min": 0, "max": 1000},
        {"name": "ordered", "type": "timestamp"},
    ])


def test_with_a_contract_its_types_allowed_values_bounds_keys_and_nullability_apply() -> None:
    df = clean_table(3, rows=300)
    cells = {(5, "status"): "refunded", (6, "status"): "shiped", (7, "amount"): "1500.00", (8, "order_id"): "12.5",
             (9, "zip"): "", (10, "city"): "", (11, "order_id"): df.at[2, "order_id"]}
    dirty, _ = inject(df, cells)
    report = scan_frame(dirty, contract())
    got = {(f.row, f.column): f.kind for f in report.flags}
    assert got == {(5, "status"): "domain", (6, "status"): "typo", (7, "amount"): "range", (8, "order_id"): "format",
                   (9, "zip"): "missing", (11, "order_id"): "duplicate"}
    reasons = {(f.row, f.column): f.reason for f in report.flags}
    assert reasons[(7, "amount")] == "above the contract's max 1000"
    assert reasons[(6, "status")] == "looks like a typo of 'shipped'"
    assert "not nullable" in reasons[(9, "zip")] and report.dataset == "shop"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_rows_are_positions_in_the_file(tmp_path: Path, suffix: str) -> None:
    df = clean_table(4, rows=120)
    df.at[77, "city"] = "N/A"
    df.index = pd.RangeIndex(1000, 1120)[::-1]  # an index that is not the position (Parquet keeps it)
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=True)
    report = scan_file(path)
    assert [(f.row, f.column, f.kind) for f in report.flags] == [(77, "city", "missing")]
    assert report.rows == 120 and report.source == str(path)


def test_a_csv_is_read_as_text_and_a_rare_parquet_null_is_missing(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("code,city\n007,NA\n010,Boston\n", encoding="utf-8")
    raw = read_raw(tmp_path / "a.csv")
    assert raw["code"].tolist() == ["007", "010"] and raw["city"].tolist() == ["NA", "Boston"]
    (tmp_path / "bom.csv").write_bytes("code,city\n7,Boston\n".encode("utf-8-sig"))
    assert list(read_raw(tmp_path / "bom.csv").columns) == ["code", "city"]
    gaps = [float(i) for i in range(40)]
    gaps[17] = None  # one gap in an otherwise filled column: flagged
    pd.DataFrame({"x": gaps, "often_empty": [1.0, None, 3.0, None] * 10}).to_parquet(tmp_path / "b.parquet")
    report = scan_file(tmp_path / "b.parquet")
    assert [(f.row, f.column, f.kind) for f in report.flags] == [(17, "x", "missing")]
    assert report.flags[0].reason == "missing value (empty)"


def test_the_json_shape() -> None:
    dirty, _ = inject(clean_table(1, rows=100), {(4, "city"): "?"})
    body = scan_frame(dirty, source="t.csv").model_dump(mode="json")
    assert set(body) == {"source", "dataset", "rows", "columns", "column_kinds", "flags", "counts"}
    assert body["flags"] == [{"row": 4, "column": "city", "kind": "missing",
                              "reason": "missing value in disguise: '?'", "value": "?"}]
    assert body["counts"] == {"missing": 1} and body["rows"] == 100
    assert CellFlag.model_validate(body["flags"][0]).row == 4


def test_progress_is_reported_per_detector() -> None:
    seen: list[tuple[str, object]] = []

    class Recorder:
        def say(self, description: str) -> None:
            seen.append(("say", description))

        def advance(self, amount: float = 1) -> None:
            seen.append(("advance", amount))

        def update(self, *, completed=None, total=None, description=None) -> None:  # type: ignore[no-untyped-def]
            seen.append(("total", total))

        def note(self, line: str) -> None:
            seen.append(("note", line))

    scan_frame(clean_table(0, rows=50), reporter=Recorder())
    assert seen[0] == ("total", 8) and sum(1 for k, _ in seen if k == "advance") == 8
    assert ("say", "scan: dependency") in seen


def test_signature_and_edit_distance() -> None:
    assert signature(pd.Series(["02134", "AB-12", "john.smith@x.org"])).tolist() == ["99999", "A-99", "a.a@a.a"]
    assert signature(pd.Series(["john.smith42@x.org"]), level=2).tolist() == ["w.w@w.w"]
    assert edit_distance("shipped", "shiped") == 1 and edit_distance("Cambridge", "Cambrigde") == 1
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("abc", "xyzxyzxyz", limit=2) == 3


def test_a_heavy_tail_is_the_columns_nature_but_a_far_value_is_still_an_outlier() -> None:
    rng = np.random.default_rng(5)
    delays = np.round(rng.exponential(15, 2000) - 5 + rng.normal(0, 2, 2000)).astype(int)  # like flight delays
    delays[[100, 900]] = [4000, -3000]
    report = scan_frame(pd.DataFrame({"delay": delays.astype(str), "count": rng.integers(0, 10, 2000).astype(str)}))
    assert report.column_kinds == {"delay": "numeric", "count": "numeric"}  # "0" is no leading zero: not a code
    assert {(f.row, f.column, f.kind) for f in report.flags} == {(100, "delay", "outlier"), (900, "delay", "outlier")}


def test_many_repeated_rows_still_break_the_contracts_key() -> None:
    df = clean_table(6, rows=100)
    dirty = pd.concat([df, df.iloc[:10]], ignore_index=True)  # 9% of rows repeat: no whole-row finding ...
    assert not [f for f in scan_frame(dirty).flags if f.kind == "duplicate" and f.column is None]
    report = scan_frame(dirty, contract())  # ... but the contract's unique order_id is broken by each copy
    keys = [(f.row, f.column) for f in report.flags if f.kind == "duplicate"]
    assert keys == [(100 + i, "order_id") for i in range(10)]
    assert report.flags[-1].reason == "duplicate key (order_id): the same as row 9"
