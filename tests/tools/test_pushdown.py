"""The pushed-down checks (`tools.pushdown`) held to the GX path: the same split, reasons, rows and events.

One conformance batch carries a fault of every rule kind (not null, between on an integer and a float, in set,
length, a two-column unique key, a text timestamp that does not parse); both engines judge it, and validate writes
it both ways.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipewarden.evals.flights_data import source_dir
from pipewarden.flows.data import write_batch
from pipewarden.flows.ingest import ingest
from pipewarden.flows.validate import validate
from pipewarden.flows.warehouse import connect
from pipewarden.models import Quarantine
from pipewarden.policies.contract import Contract, load_contract
from pipewarden.policies.expectations import check_specs
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from pipewarden.tools.checks import check_file, run_checks
from pipewarden.tools.io import BatchRefused
from pipewarden.tools.pushdown import PushdownReport, compile_rules, open_batch, run_pushdown
from pipewarden.tools.warehouse import duckdb_has_table

KEY = ["carrier", "flight", "time_hour"]


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    return flights[flights["month"] == 1].head(400).reset_index(drop=True)


def _faulty(january: pd.DataFrame) -> pd.DataFrame:
    """400 rows of January with a fault of every rule kind, some rows with two."""
    bad = january.copy()
    bad.loc[0:4, "origin"] = "XXX"                 # in set
    bad.loc[3:7, "dep_delay"] = 5000.0             # between (float), rows 3-4 also break the set
    bad.loc[10:12, "hour"] = 99                    # between (integer)
    bad.loc[15:16, "carrier"] = "TOOLONG"          # length
    bad.loc[20:21, "dest"] = None                  # not null (string)
    bad["time_hour"] = bad["time_hour"].astype(object)
    bad.loc[30:31, "time_hour"] = "not a time"     # a text timestamp that does not parse
    bad.loc[32, "time_hour"] = None                # a null timestamp: not null only
    bad.loc[40, KEY] = bad.loc[41, KEY].to_numpy()  # a repeated key: both rows
    return bad


def _contract() -> Contract:
    return load_contract("flights").model_copy(update={"unique": [KEY]})


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def _pushdown(path: Path, contract: Contract) -> tuple[PushdownReport, pd.DataFrame]:
    rows: list[pd.DataFrame] = []
    with open_batch(path) as batch:
        report = run_pushdown(batch, contract, on_quarantine=rows.append, chunk_rows=7)  # small chunks: several
    quarantined = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["row_number", "reason"])
    return report, quarantined


# --------------------------------------------------------------------------- compiling
def test_every_row_rule_compiles_to_one_predicate_in_the_order_reasons_are_written(january: pd.DataFrame) -> None:
    contract = _contract()
    text = {"carrier", "tailnum", "origin", "dest", "time_hour"}
    rules = compile_rules(contract, {c: "VARCHAR" if c in text else "BIGINT" for c in january.columns})
    assert rules[0].kind == "timestamp" and rules[0].column == "time_hour"  # a text timestamp is parsed first
    kinds = {r.kind for r in rules}
    assert kinds == {"timestamp", "not_null", "between", "in_set", "length", "unique"}
    origin = next(r for r in rules if r.kind == "in_set")
    assert origin.fails == "(\"origin\" IS NOT NULL AND \"origin\" NOT IN ('EWR', 'JFK', 'LGA'))"
    assert [r.label for r in rules if r.kind != "timestamp"] == [s.label for s in check_specs(contract) if s.row_level]


def test_a_column_the_source_lacks_gets_no_rule() -> None:
    rules = compile_rules(_contract(), {"origin": "VARCHAR"})
    assert {r.column for r in rules} == {"origin"}


# --------------------------------------------------------------------------- the conformance batch, both engines
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_pushdown_and_gx_reject_the_same_rows_with_the_same_reasons(january: pd.DataFrame, tmp_path: Path,
                                                                    suffix: str) -> None:
    contract = _contract()
    path = _write(_faulty(january), tmp_path / f"batch{suffix}")
    as_read = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    gx = run_checks(as_read, contract, engine="gx")
    report, quarantined = _pushdown(path, contract)

    assert report.result == gx.result and report.failed == gx.failed
    assert report.failure_rate == gx.failure_rate and report.rows_quarantined == gx.result.failed_rows
    expected = gx.row_reasons[gx.row_reasons != ""]
    assert quarantined["row_number"].tolist() == expected.index.tolist()
    assert quarantined["reason"].tolist() == expected.tolist()
    # every kind fired, and a row breaking two rules carries both reasons in rule order
    assert {f.check for f in report.failed} == {"timestamp", "not_null", "between", "in_set", "length", "unique"}
    assert expected[3] == "dep_delay: between -120 and 1500 (got 5000); origin: in {EWR, JFK, LGA} (got 'XXX')"
    assert expected[30] == "time_hour: not a timestamp (got 'not a time')"
    assert expected[32] == "time_hour: not null"
    assert set(quarantined["row_number"]) >= {40, 41}


def test_a_clean_batch_passes_without_a_quarantined_row(january: pd.DataFrame, tmp_path: Path) -> None:
    clean = january.dropna(subset=["arr_delay"]).reset_index(drop=True)
    report, quarantined = _pushdown(_write(clean, tmp_path / "clean.parquet"), _contract())
    assert report.result.passed and report.result.failed_rows == 0 and quarantined.empty


def test_a_drifted_file_reports_the_same_schema_errors_as_the_in_memory_check(january: pd.DataFrame,
                                                                             tmp_path: Path) -> None:
    drifted = january.rename(columns={"dep_delay": "departureDelay"}).assign(flight=january["flight"].astype(str))
    path = _write(drifted, tmp_path / "drifted.parquet")
    pushed, _ = _pushdown(path, _contract())
    assert pushed.result == run_checks(pd.read_parquet(path), _contract(), engine="gx").result
    assert not pushed.result.passed and pushed.result.schema_errors


def test_a_fraction_deep_in_an_integer_column_is_drift_on_both_paths(january: pd.DataFrame, tmp_path: Path) -> None:
    """An integer column read as floats (it has nulls) is an integer column only while every value is whole: the
    probe looks past its first values for a fraction, as the in-memory path looks at every value."""
    df = january.assign(distance=january["distance"].astype("float64"), dep_delay=january["dep_delay"].round())
    df.loc[350, "distance"] = 1400.5  # past the probe's first 200 values
    path = _write(df, tmp_path / "fraction.parquet")
    pushed, _ = _pushdown(path, _contract())
    assert pushed.result.schema_errors == ["column 'distance' is float, the contract says integer"]
    assert pushed.result == run_checks(pd.read_parquet(path), _contract(), engine="gx").result


# --------------------------------------------------------------------------- validate, both paths
def _snapshot(load_id: str) -> tuple[list[tuple], list[tuple]]:
    with connect(read_only=True) as con:
        quarantine = con.execute("SELECT row_number, reason, row_json FROM quarantine WHERE load_id = ? "
                                 "ORDER BY row_number", [load_id]).fetchall()
        accepted = con.execute("SELECT * EXCLUDE (_load_id) FROM raw_flights WHERE _load_id = ? "
                               "ORDER BY ALL", [load_id]).fetchall() if duckdb_has_table(con, "raw_flights") else []
    return quarantine, accepted


def test_validate_pushed_down_writes_the_rows_the_gx_path_writes(january: pd.DataFrame, tmp_path: Path,
                                                                  pw_project: Path) -> None:
    contracts = pw_project / "contracts" / "flights.yaml"
    contracts.write_text(contracts.read_text() + f"unique:\n  - {KEY}\n".replace("'", ""))
    landed = ingest("flights", write_batch(_faulty(january), tmp_path / "batch.parquet"))
    StateStore().activate_new_version("quarantine:flights", Quarantine(
        dataset="flights", load_id=landed.load_id, predicate="dest = 'MIA'", reason="a test rule",
    ).model_dump(mode="json"), "00000000-0000-0000-0000-000000000002", "test")

    in_memory = validate(landed, pd.read_parquet(landed.uri), engine="gx", pushdown=False)
    before = _snapshot(landed.load_id)
    pushed = validate(landed, pushdown=True)
    after = _snapshot(landed.load_id)

    assert in_memory.engine == "memory" and pushed.engine == "duckdb"
    assert not pushed.halted and pushed.check_result == in_memory.check_result
    assert (pushed.rows_accepted, pushed.rows_quarantined) == (in_memory.rows_accepted, in_memory.rows_quarantined)
    assert after == before  # same rows, reasons and row JSON in quarantine; same accepted rows, typed alike
    assert any("quarantine:flights v1: a test rule" in r[1] for r in after[0])
    assert len(after[1]) == in_memory.rows_accepted > 0


def test_a_batch_over_its_threshold_halts_the_same_way_pushed_down(january: pd.DataFrame, tmp_path: Path) -> None:
    bad = january.copy()
    bad.loc[0:99, "origin"] = "XXX"  # 25% of the rows
    landed = ingest("flights", write_batch(bad, tmp_path / "bad.parquet"))
    in_memory = validate(landed, pd.read_parquet(landed.uri), engine="gx", pushdown=False)
    before = _snapshot(landed.load_id)
    pushed = validate(landed, pushdown=True)
    assert in_memory.halted and pushed.halted and pushed.reason == in_memory.reason
    assert pushed.event_ids == in_memory.event_ids  # the same finding: the same CheckFailed event, stored once
    assert _snapshot(landed.load_id) == before and before[1] == []  # quarantined, nothing accepted
    assert [e["kind"] for e in StateStore().list_events()] == ["check_failed"]


# --------------------------------------------------------------------------- choosing the path, refusing input
def test_check_file_takes_the_pushdown_path_from_the_size_threshold(january: pd.DataFrame, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(_faulty(january), tmp_path / "batch.parquet")
    monkeypatch.setenv("PIPEWARDEN_PUSHDOWN_MIN_BYTES", "1")
    get_settings.cache_clear()
    pushed = check_file(path, "flights")
    monkeypatch.setenv("PIPEWARDEN_PUSHDOWN_MIN_BYTES", "0")  # 0: never
    get_settings.cache_clear()
    in_memory = check_file(path, "flights")
    assert isinstance(pushed, PushdownReport) and not isinstance(in_memory, PushdownReport)
    assert pushed.result == in_memory.result


def test_pushdown_refuses_what_the_in_memory_reader_refuses(january: pd.DataFrame, tmp_path: Path) -> None:
    twice = tmp_path / "twice.csv"
    twice.write_text("origin,origin\nEWR,JFK\n")
    with pytest.raises(BatchRefused, match="more than once"):
        check_file(twice, "flights", pushdown=True)
    empty = _write(january.head(0), tmp_path / "empty.parquet")
    with pytest.raises(BatchRefused, match="no rows"):
        check_file(empty, "flights", pushdown=True)


def test_the_pushdown_path_reports_progress_lines(january: pd.DataFrame, tmp_path: Path) -> None:
    lines: list[str] = []
    check_file(_write(_faulty(january), tmp_path / "batch.parquet"), "flights", pushdown=True, say=lines.append)
    assert lines == ["checking 400 rows in DuckDB"]  # `pipewarden check` shows them in its spinner on a terminal


def test_pipewarden_check_answers_the_same_json_on_either_path(pw, january: pd.DataFrame, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(_faulty(january), tmp_path / "batch.csv")
    answers = []
    for threshold in ("1", "0"):  # every file pushed down, then none
        monkeypatch.setenv("PIPEWARDEN_PUSHDOWN_MIN_BYTES", threshold)
        get_settings.cache_clear()
        res = pw("check", path, "--dataset", "flights", "--json")
        assert res.code == 0 and res.err == ""  # 4.5% rejected passes (max 10%); --json draws no progress
        answers.append(json.loads(res.out))
    assert answers[0] == answers[1] and answers[0]["failed_rows"] > 0
