"""`pipewarden run --file FILE --dataset NAME`: a bad input fails cleanly and leaves nothing half-written;
a batch whose every row breaks the contract halts with every row quarantined, each with its reason.

Most cases run the real entry point in this process under the session's Prefect harness. One halted batch
runs in a child process pointed (PREFECT_API_URL) at the harness's server, as a user with a running Prefect
server would; left alone, a child process starts its own ephemeral server (10-20 s).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import CliResult, landed_files, subprocess_env, warehouse_rows

BAD_INPUTS = [
    pytest.param("truncated.parquet", "flights",
                 ["truncated.parquet: is not a readable Parquet file (truncated or corrupt"], id="truncated-parquet"),
    pytest.param("latin1.csv", "flights", ["latin1.csv: is not UTF-8", "iconv"], id="latin1-csv"),
    pytest.param("empty.csv", "flights", ["empty.csv: the file is empty (0 bytes)"], id="empty-file"),
    pytest.param("jan.csv", "flight", ["unknown dataset 'flight'", "did you mean 'flights'?"], id="near-miss-dataset"),
]


def last_error(res: CliResult) -> str:
    """The message pipewarden itself printed: stderr from its last `error:` line on, whitespace-normalized."""
    text = res.err_text
    assert "error:" in text, res.err
    return text[text.rindex("error:"):]


@pytest.mark.parametrize(("name", "dataset", "needles"), BAD_INPUTS)
def test_run_refuses_bad_input_and_writes_nothing(
    pw: Callable[..., CliResult], prefect_harness: None, in_batches: Path, pw_home: Path,
    name: str, dataset: str, needles: list[str],
) -> None:
    res = pw("run", "--file", name, "--dataset", dataset)
    assert res.code == 2, (res.code, res.out, res.err)
    message = last_error(res)
    for needle in needles:
        assert needle in message, res.err
    assert "hint:" in message
    # nothing half-written: no landed (or temporary) file and no load recorded for this dataset
    assert landed_files(pw_home, dataset) == []
    assert warehouse_rows(pw_home, "SELECT load_id FROM meta_loads WHERE dataset = ?", [dataset]) == []
    assert warehouse_rows(pw_home, "SELECT count(*) FROM quarantine") in ([], [(0,)])


def test_run_bad_input_prints_no_traceback(
    pw: Callable[..., CliResult], prefect_harness: None, in_batches: Path
) -> None:
    res = pw("run", "--file", "empty.csv", "--dataset", "flights")
    assert res.code == 2
    assert "Traceback" not in res.err, res.err


def test_run_every_row_invalid_halts_and_quarantines_each_row_with_its_reason(
    pw_subprocess: Callable[..., CliResult], prefect_harness: None, in_batches: Path, pw_home: Path
) -> None:
    from prefect.settings import get_current_settings

    api_url = str(get_current_settings().api.url)
    assert api_url.startswith("http://"), api_url
    res = pw_subprocess("run", "--file", "allbad.csv", "--dataset", "flights", "--json", timeout=180,
                        env=subprocess_env(pw_home, PREFECT_API_URL=api_url))
    assert res.code == 3, (res.out, res.err)
    assert "Traceback" not in res.err, res.err
    result = json.loads(res.out)
    assert result["status"] == "halted"
    assert result["halted_at"] == "validate"
    assert result["rows_in"] == result["rows_quarantined"] == 40
    assert result["checks"]["passed"] is False
    assert any(c.startswith("origin") for c in result["checks"]["failed_checks"]), result["checks"]
    load_id = result["load_id"]

    rows = warehouse_rows(
        pw_home, "SELECT row_number, reason, row_json FROM quarantine WHERE dataset = 'flights' AND load_id = ? "
        "ORDER BY row_number", [load_id])
    assert [r[0] for r in rows] == list(range(40))  # every row of the batch, once
    for _, reason, row_json in rows:
        assert reason.startswith("origin") and "'XXX'" in reason, reason
        assert json.loads(row_json)["origin"] == "XXX"  # the row as it arrived
    # the load is recorded as halted and no row of it was accepted
    assert warehouse_rows(pw_home, "SELECT status FROM meta_loads WHERE dataset = 'flights' AND load_id = ?",
                          [load_id]) == [("halted_checks",)]
    assert warehouse_rows(pw_home, "SELECT count(*) FROM raw_flights WHERE _load_id = ?", [load_id]) in ([], [(0,)])
    assert [p.name for p in landed_files(pw_home, "flights")] == [f"{load_id}.parquet"]


def test_run_every_row_invalid_text_output_names_dataset_and_problem(
    pw: Callable[..., CliResult], prefect_harness: None, in_batches: Path
) -> None:
    res = pw("run", "--file", "allbad.csv", "--dataset", "flights")
    assert res.code == 3, (res.out, res.err)
    assert "halted flights load flights-" in res.out_text
    assert "40 rows in, 40 quarantined; halted at validate" in res.out_text
    assert "Traceback" not in res.err


def test_run_refuses_a_nested_batch_lands_nothing_and_reports_it(
    pw: Callable[..., CliResult], in_batches: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw_home: Path,
) -> None:
    """Issue 11: a nested Parquet file used to crash `run` with a traceback, leave its load `landed` and report
    nothing. It is refused by name before anything lands, and its RunFailed event is in the outbox."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipewarden.store import StateStore

    jan = pa.Table.from_pandas(pd.read_csv(in_batches / "jan.csv").head(20), preserve_index=False)
    pq.write_table(jan.append_column("address", pa.array([{"city": "NYC"}] * 20)), tmp_path / "nested.parquet")
    monkeypatch.chdir(tmp_path)

    res = pw("run", "--file", "nested.parquet", "--dataset", "flights")
    assert res.code == 2, (res.code, res.out, res.err)
    message = last_error(res)
    assert "nested.parquet: has nested columns the contract does not flatten: address (struct<city: string>)" in message
    assert "hint: flatten a struct column in the contract" in message
    assert "Traceback" not in res.err
    assert landed_files(pw_home, "flights") == []
    assert warehouse_rows(pw_home, "SELECT status FROM meta_loads WHERE dataset = 'flights'") == []
    store = StateStore()
    events = [store.get_event(row["id"]) for row in store.list_events()]
    assert [(e.kind, e.stage) for e in events] == [("run_failed", "ingest")]  # type: ignore[union-attr]
    assert str(events[0].id) in message and "nested.parquet" in events[0].error  # type: ignore[union-attr]


def test_run_takes_a_file_of_a_dataset_not_the_bundled_example(pw: Callable[..., CliResult]) -> None:
    # the flights example's months are run by its own flow (examples/flights/flows/flights_flow.py), not by `run`
    res = pw("run", "--month", "1")
    assert res.code == 2 and "--month" in res.err_text, (res.code, res.err)
    res = pw("run", "--file", "jan.csv")
    assert res.code == 2 and "--dataset" in res.err_text, (res.code, res.err)
