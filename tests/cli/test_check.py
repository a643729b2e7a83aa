"""`pipewarden check FILE --dataset NAME` as a user meets it: exit codes, JSON, and errors without tracebacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.cli.conftest import CliResult, landed_files, warehouse_rows

# (file, what stderr must say about it)
BAD_FILES = [
    pytest.param("truncated.parquet", "truncated.parquet: is not a readable Parquet file (truncated or corrupt",
                 id="truncated-parquet"),
    pytest.param("latin1.csv", "latin1.csv: is not UTF-8", id="latin1-csv"),
    pytest.param("empty.csv", "empty.csv: the file is empty (0 bytes)", id="empty-file"),
]


def assert_clean_error(res: CliResult, *needles: str, code: int = 2) -> None:
    """A user error: the exit code, each needle in stderr, a hint, and no traceback anywhere."""
    assert res.code == code, (res.code, res.out, res.err)
    for needle in needles:
        assert needle in res.err_text, res.err
    assert res.err_text.startswith("error:"), res.err
    assert "hint:" in res.err_text, res.err
    assert "Traceback" not in res.err + res.out


@pytest.mark.parametrize(("name", "problem"), BAD_FILES)
def test_check_refuses_an_unreadable_file(
    pw: Callable[..., CliResult], in_batches: Path, pw_home: Path, name: str, problem: str
) -> None:
    res = pw("check", name, "--dataset", "flights")
    assert_clean_error(res, problem)
    assert res.out == ""
    assert landed_files(pw_home, "flights") == []  # check never lands anything, even a readable file
    assert warehouse_rows(pw_home, "SELECT * FROM meta_loads") == []


def test_check_latin1_error_says_how_to_reencode(pw: Callable[..., CliResult], in_batches: Path) -> None:
    res = pw("check", "latin1.csv", "--dataset", "flights")
    assert_clean_error(res, "latin1.csv: is not UTF-8", "iconv -f latin1 -t utf-8")


def test_check_unknown_dataset_suggests_the_near_miss(
    pw_subprocess: Callable[..., CliResult], in_batches: Path
) -> None:
    """In a real child process: the console script's error path, as a shell user sees it."""
    res = pw_subprocess("check", "jan.csv", "--dataset", "flight")
    assert_clean_error(res, "unknown dataset 'flight'", "did you mean 'flights'?")
    assert "flights" in res.err_text.split("known:", 1)[1]


def test_check_unknown_dataset_far_from_any_name_lists_the_known_ones(
    pw: Callable[..., CliResult], in_batches: Path
) -> None:
    res = pw("check", "jan.csv", "--dataset", "zzzzzz")
    assert res.code == 2
    assert "unknown dataset 'zzzzzz' (known: airlines, airports, flights, planes, weather)" in res.err_text
    assert "did you mean" not in res.err_text
    assert "Traceback" not in res.err


def test_check_a_missing_file_names_it(pw: Callable[..., CliResult], in_batches: Path) -> None:
    res = pw("check", "nope.csv", "--dataset", "flights")
    assert_clean_error(res, "nope.csv: no such file")


def test_check_clean_january_file_passes_with_json(pw: Callable[..., CliResult], in_batches: Path) -> None:
    res = pw("check", "jan.csv", "--dataset", "flights", "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)  # stdout is exactly one JSON document
    assert report["file"] == "jan.csv"
    assert report["dataset"] == "flights"
    assert report["passed"] is True
    assert report["rows"] == 300
    assert report["failed_rows"] == 0
    assert report["schema_errors"] == []
    assert report["failure_rate"] == 0.0
    assert "Traceback" not in res.err


def test_check_clean_parquet_passes_in_text_mode(pw: Callable[..., CliResult], in_batches: Path) -> None:
    res = pw("check", "jan.parquet", "--dataset", "flights")
    assert res.code == 0, res.err
    assert "jan.parquet: passes the flights contract (300 rows, 0 rejected" in res.out_text


def test_check_drifted_batch_exits_3_and_names_the_column(pw: Callable[..., CliResult], in_batches: Path) -> None:
    res = pw("check", "drift.csv", "--dataset", "flights")
    assert res.code == 3, (res.out, res.err)
    assert "drift.csv: fails the flights contract" in res.out_text
    assert "column 'departureDelay' (integer) is not in the contract" in res.out_text
    assert "contract column 'dep_delay' (float) is missing" in res.out_text

    as_json = pw("check", "drift.csv", "--dataset", "flights", "--json")
    assert as_json.code == 3
    report = json.loads(as_json.out)
    assert report["passed"] is False
    assert any("departureDelay" in e for e in report["schema_errors"])
    assert any("'dep_delay'" in e and "missing" in e for e in report["schema_errors"])


def test_check_every_row_invalid_exits_3_and_names_the_rule(pw: Callable[..., CliResult], in_batches: Path,
                                                              pw_home: Path) -> None:
    res = pw("check", "allbad.csv", "--dataset", "flights", "--json")
    assert res.code == 3, (res.out, res.err)
    report = json.loads(res.out)
    assert report["passed"] is False
    assert report["rows"] == report["failed_rows"] == 40
    assert report["failure_rate"] == 1.0
    assert report["schema_errors"] == []
    assert any(c.startswith("origin") and "(40 rows)" in c for c in report["failed_checks"]), report
    # check is read-only: nothing is landed or quarantined
    assert landed_files(pw_home, "flights") == []
    assert warehouse_rows(pw_home, "SELECT * FROM quarantine") == []


# --------------------------------------------------------------------------- batches refused by name (issue 11)
def _refused_batches(batches: Path, folder: Path) -> None:
    """nested.parquet (a struct and a list column), dup.csv (carrier twice), header.csv (a header, no rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    jan = pd.read_csv(batches / "jan.csv")
    table = pa.Table.from_pandas(jan.head(20), preserve_index=False)
    table = table.append_column("address", pa.array([{"city": "NYC", "zip": "10001"}] * 20))
    pq.write_table(table.append_column("tags", pa.array([["a"]] * 20)), folder / "nested.parquet")
    lines = jan.head(20).to_csv(index=False).splitlines()
    (folder / "dup.csv").write_text("\n".join([lines[0] + ",carrier", *(x + ",XX" for x in lines[1:])]) + "\n")
    (folder / "header.csv").write_text(lines[0] + "\n")


REFUSED = [
    pytest.param("nested.parquet", ["nested.parquet: has nested columns the contract does not flatten",
                                    "address (struct<", "tags (list<", "flatten: {address: address_}"], id="nested"),
    pytest.param("dup.csv", ["dup.csv: names a column more than once: 'carrier' (2 times)"], id="duplicate-column"),
    pytest.param("header.csv", ["header.csv: has a header and no rows", "re-export it"], id="no-rows"),
]


@pytest.mark.parametrize(("name", "needles"), REFUSED)
def test_check_refuses_a_batch_it_cannot_take_as_it_is(
    pw: Callable[..., CliResult], in_batches: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    pw_home: Path, name: str, needles: list[str],
) -> None:
    _refused_batches(in_batches, tmp_path)
    monkeypatch.chdir(tmp_path)
    res = pw("check", name, "--dataset", "flights")
    assert_clean_error(res, *needles)
    assert res.out == ""
    assert landed_files(pw_home, "flights") == []


def test_check_refuses_a_file_over_the_size_limit_saying_how_to_raise_it(
    pw: Callable[..., CliResult], in_batches: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipewarden.settings import get_settings

    size = (in_batches / "jan.csv").stat().st_size
    monkeypatch.setenv("PIPEWARDEN_MAX_BATCH_BYTES", "10KiB")
    get_settings.cache_clear()
    res = pw("check", "jan.csv", "--dataset", "flights")
    assert_clean_error(res, "jan.csv: is", f"({size} bytes), over the 10.0KiB batch size limit",
                       f"PIPEWARDEN_MAX_BATCH_BYTES={size}")
