"""Bad input: batches that are read but not taken as they are (nested columns without a flatten rule, a column
named twice, no rows, over the size limit) are refused by name, land nothing, and leave a RunFailed event in the
outbox; a nested column the contract flattens lands as one column per field; a file replaced while it is read
lands with the identity of the rows that landed.

Unit-level on small batches: ingest and `tools.io` directly, no Prefect flow.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipewarden.errors import ConfigError
from pipewarden.evals.flights_data import source_dir
from pipewarden.events import RunFailed
from pipewarden.flows import ingest as ingest_module
from pipewarden.flows.ingest import default_load_id, ingest, is_landed, list_loads, read_landed
from pipewarden.policies.contract import load_contract
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from pipewarden.tools.checks import check_file
from pipewarden.tools.io import BatchRefused, check_batch_size, read_table

ROWS = 40


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    """The first 40 flights, as the contract expects them (read straight from the package, no home needed)."""
    return pd.read_csv(source_dir() / "flights.csv.zip", nrows=ROWS)


def _landing_files() -> list[Path]:
    d = get_settings().landing_dir
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def _events() -> list[RunFailed]:
    store = StateStore()
    return [store.get_event(row["id"]) for row in store.list_events()]  # type: ignore[misc]


def _assert_refused_and_reported(err: pytest.ExceptionInfo[BatchRefused], reason: str, source: str,
                                 *needles: str) -> RunFailed:
    """The batch was refused for `reason`, named, nothing landed, and exactly one RunFailed event says so."""
    assert err.value.reason == reason
    message = str(err.value)
    for needle in (source, *needles):
        assert needle in message, message
    assert err.value.hint
    assert _landing_files() == [] and list_loads() == []
    events = _events()
    assert len(events) == 1 and isinstance(events[0], RunFailed), events
    event = events[0]
    assert event.dataset == "flights" and event.stage == "ingest" and event.load_id is None
    assert source in event.error and all(n in event.error for n in needles), event.error
    assert str(event.id) in message, "the error names the event the supervisor will see"
    return event


def _with_flatten(project: Path, rule: str) -> None:
    contract = project / "contracts" / "flights.yaml"
    contract.write_text(contract.read_text(encoding="utf-8") + f"flatten: {rule}\n", encoding="utf-8")


def _nested_route(flights: pd.DataFrame, *, with_list: bool = False) -> pa.Table:
    """The batch with origin and dest inside a struct column `route` (plus a gate struct inside it, one route
    null), and optionally a list column `tags`."""
    flat = flights.drop(columns=["origin", "dest"])
    routes = [{"origin": o, "dest": d, "gate": {"terminal": "B", "number": i}}
              for i, (o, d) in enumerate(zip(flights["origin"], flights["dest"], strict=True))]
    routes[3] = None
    table = pa.Table.from_pandas(flat, preserve_index=False).append_column("route", pa.array(routes))
    if with_list:
        table = table.append_column("tags", pa.array([["late", "night"]] * len(flights)))
    return table


# --------------------------------------------------------------------------- nested columns
def test_a_nested_parquet_file_without_a_flatten_rule_is_refused_and_reported(
        flights: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "nested.parquet"
    pq.write_table(_nested_route(flights, with_list=True), src)

    with pytest.raises(BatchRefused) as err:
        ingest("flights", src)
    event = _assert_refused_and_reported(err, "nested_columns", str(src), "route (struct<", "tags (list<")
    assert err.value.columns == ["route", "tags"]
    assert "flatten: {route: route_}" in str(err.value), "the hint shows the contract rule that would read it"

    with pytest.raises(BatchRefused):
        ingest("flights", src)
    assert [e.id for e in _events()] == [event.id], "the same refused batch is reported once"


def test_a_struct_column_the_contract_flattens_lands_as_one_column_per_field(
        flights: pd.DataFrame, tmp_path: Path, pw_project: Path) -> None:
    _with_flatten(pw_project, '{route: ""}')
    src = tmp_path / "nested.parquet"
    pq.write_table(_nested_route(flights), src)

    landed = ingest("flights", src)
    df, _ = read_landed("flights", landed.load_id)
    assert list(df.columns)[-4:] == ["origin", "dest", "gate_terminal", "gate_number"]
    assert landed.columns["origin"] == "string" and landed.columns["gate_number"] == "integer"
    expected = flights[["origin", "dest"]].astype(object)
    expected.iloc[3] = None  # a null struct reads as null fields
    assert df[["origin", "dest"]].astype(object).where(df[["origin", "dest"]].notna(), None).equals(
        expected.where(expected.notna(), None))
    assert _events() == []

    # `check` reads the file under the same rule: the contract's columns are all there, the gate is extra
    report = check_file(src, "flights", engine="pandas")
    assert report.result.schema_errors == [] and report.result.rows == ROWS
    assert [c.name for c in report.schema_diff.extra] == ["gate_terminal", "gate_number"]


def test_a_list_column_is_refused_even_when_its_neighbour_struct_is_flattened(
        flights: pd.DataFrame, tmp_path: Path, pw_project: Path) -> None:
    _with_flatten(pw_project, "{route: route_}")
    src = tmp_path / "nested.parquet"
    pq.write_table(_nested_route(flights, with_list=True), src)
    with pytest.raises(BatchRefused) as err:
        ingest("flights", src)
    _assert_refused_and_reported(err, "nested_columns", str(src), "tags (list<")
    assert err.value.columns == ["tags"] and "export a list or map column as text (JSON)" in str(err.value)


def test_a_flattened_field_that_takes_an_existing_name_is_a_duplicate(flights: pd.DataFrame,
                                                                      pw_project: Path) -> None:
    _with_flatten(pw_project, '{route: ""}')
    batch = _nested_route(flights).append_column("origin", pa.array(flights["origin"]))
    with pytest.raises(BatchRefused) as err:
        ingest("flights", batch, source_name="kafka:flights@7")
    _assert_refused_and_reported(err, "duplicate_columns", "kafka:flights@7", "'origin' (2 times)")


def test_an_in_memory_frame_with_dict_values_is_flattened_by_the_same_rule(flights: pd.DataFrame,
                                                                            pw_project: Path) -> None:
    _with_flatten(pw_project, "{route: route_}")
    frame = flights.drop(columns=["dest"]).assign(route=[{"dest": d} for d in flights["dest"]])
    landed = ingest("flights", frame)
    assert landed.load_id == default_load_id("flights", frame)
    df, _ = read_landed("flights", landed.load_id)
    assert "route" not in df.columns and df["route_dest"].tolist() == flights["dest"].tolist()


def test_a_flatten_prefix_must_be_a_column_name_prefix(pw_project: Path) -> None:
    _with_flatten(pw_project, '{route: "route."}')
    with pytest.raises(ConfigError, match="'route.' is not a column name prefix"):
        load_contract("flights")


# --------------------------------------------------------------------------- duplicate column names
def test_a_csv_header_naming_a_column_twice_is_refused_not_renamed(flights: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "dup.csv"
    text = flights.to_csv(index=False).splitlines()
    src.write_text("\n".join([text[0] + ",carrier", *(line + ",XX" for line in text[1:])]) + "\n")
    assert "carrier.1" in pd.read_csv(src).columns, "what pandas alone would have accepted"

    with pytest.raises(BatchRefused) as err:
        ingest("flights", src)
    _assert_refused_and_reported(err, "duplicate_columns", str(src), "'carrier' (2 times)")
    assert err.value.columns == ["carrier"]


def test_a_column_really_named_like_a_renamed_copy_is_not_a_duplicate(flights: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "ok.csv"
    flights.assign(**{"carrier.1": "XX"}).to_csv(src, index=False)
    assert "carrier.1" in read_table(src).columns


def test_duplicate_names_in_parquet_and_in_memory_are_refused(flights: pd.DataFrame, tmp_path: Path) -> None:
    src = tmp_path / "dup.parquet"
    table = pa.Table.from_pandas(flights, preserve_index=False)
    pq.write_table(table.append_column("flight", table["flight"]), src)
    with pytest.raises(BatchRefused, match="'flight' \\(2 times\\)") as err:
        read_table(src)
    assert "corrupt" not in str(err.value), "a readable file is not called corrupt"

    frame = pd.concat([flights, flights[["flight"]]], axis=1)
    with pytest.raises(BatchRefused) as err:
        ingest("flights", frame)
    _assert_refused_and_reported(err, "duplicate_columns", "<in-memory DataFrame>", "'flight' (2 times)")


# --------------------------------------------------------------------------- no rows
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_batch_with_columns_and_no_rows_is_refused_and_reported(flights: pd.DataFrame, tmp_path: Path,
                                                                   suffix: str) -> None:
    src = tmp_path / f"header-only{suffix}"
    if suffix == ".csv":
        src.write_text(flights.head(0).to_csv(index=False))
    else:
        flights.head(0).to_parquet(src, index=False)
    with pytest.raises(BatchRefused) as err:
        ingest("flights", src)
    _assert_refused_and_reported(err, "no_rows", str(src), "no rows")
    with pytest.raises(BatchRefused, match="no rows"):
        check_file(src, "flights", engine="pandas")


def test_an_in_memory_batch_with_no_rows_is_refused(flights: pd.DataFrame) -> None:
    with pytest.raises(BatchRefused, match="no rows"):
        default_load_id("flights", flights.head(0))
    assert _events() == [], "asking for a load id reports nothing"
    with pytest.raises(BatchRefused) as err:
        ingest("flights", flights.head(0), source_name="kafka:flights@8")
    _assert_refused_and_reported(err, "no_rows", "kafka:flights@8", "has columns and no rows")


# --------------------------------------------------------------------------- size limit
def test_a_file_over_the_size_limit_is_refused_before_it_is_read(flights: pd.DataFrame, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "big.csv"
    flights.to_csv(src, index=False)
    size = src.stat().st_size
    monkeypatch.setenv("PIPEWARDEN_MAX_BATCH_BYTES", str(size - 1))
    get_settings.cache_clear()

    from fsspec.implementations.local import LocalFileSystem

    def no_read(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the file was read")

    with monkeypatch.context() as m:
        m.setattr(LocalFileSystem, "cat_file", no_read)
        with pytest.raises(BatchRefused) as err:
            ingest("flights", src)
    _assert_refused_and_reported(err, "too_large", str(src), f"({size} bytes)", "batch size limit")
    assert f"PIPEWARDEN_MAX_BATCH_BYTES={size}" in str(err.value), "the hint says how to raise the limit"

    assert check_batch_size(src, limit=size) == size, "a caller (a streamed reader) may pass its own limit"
    assert check_batch_size(src, limit=0) == size, "0 is no limit"
    monkeypatch.setenv("PIPEWARDEN_MAX_BATCH_BYTES", "1MiB")
    get_settings.cache_clear()
    assert is_landed("flights", ingest("flights", src).load_id)


def test_the_size_limit_can_be_set_in_the_project_file(pw_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEWARDEN_MAX_BATCH_BYTES", raising=False)
    get_settings.cache_clear()
    assert get_settings().max_batch_bytes == 512 * 1024**2, "the default"
    project_file = pw_project / "pipewarden.toml"
    written = project_file.read_text(encoding="utf-8")
    project_file.write_text(written + '\n[limits]\nmax_batch_bytes = "2GiB"\n', encoding="utf-8")
    get_settings.cache_clear()
    assert get_settings().max_batch_bytes == 2 * 1024**3
    monkeypatch.setenv("PIPEWARDEN_MAX_BATCH_BYTES", "0")
    get_settings.cache_clear()
    assert get_settings().max_batch_bytes == 0, "the environment wins over the project file"

    monkeypatch.delenv("PIPEWARDEN_MAX_BATCH_BYTES")
    project_file.write_text(written + '\n[limits]\nmax_batch_bytes = "a lot"\n', encoding="utf-8")
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match=r"pipewarden.toml: \[limits\] max_batch_bytes = 'a lot' is not a size"):
        get_settings()


# --------------------------------------------------------------------------- a file replaced while it is read
def test_a_file_replaced_between_hash_and_parse_lands_with_the_identity_of_its_rows(
        flights: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook `ingest.read` fires after the bytes were hashed and before they are parsed; the file is replaced
    there. The load's hash and id are those of the rows that landed, and the replacement lands later as its own
    load (it is not mistaken for the batch already landed)."""
    src = tmp_path / "batch.csv"
    flights.to_csv(src, index=False)
    original = src.read_bytes()
    replacement = flights.head(10).assign(carrier="ZZ").to_csv(index=False).encode()
    fired: list[str] = []

    def replace_the_file(name: str) -> None:
        if name == "ingest.read":
            fired.append(name)
            src.write_bytes(replacement)

    monkeypatch.setattr(ingest_module, "_crash_point", replace_the_file)
    first = ingest("flights", src)
    assert fired == ["ingest.read"]
    df, _ = read_landed("flights", first.load_id)
    assert first.content_sha256 == hashlib.sha256(original).hexdigest()
    assert first.load_id == f"flights-{first.content_sha256[:12]}"
    pd.testing.assert_frame_equal(df, pd.read_csv(io.BytesIO(original)))

    second = ingest("flights", src)  # now the replacement, read whole
    df2, _ = read_landed("flights", second.load_id)
    assert second.load_id != first.load_id and second.content_sha256 == hashlib.sha256(replacement).hexdigest()
    assert len(df2) == 10 and set(df2["carrier"]) == {"ZZ"}
    assert [r["load_id"] for r in list_loads("flights")] == [first.load_id, second.load_id]


# --------------------------------------------------------------------------- through the guard
def test_the_guard_accepts_a_flattened_batch_and_refuses_an_unflattened_one_with_its_event(
        flights: pd.DataFrame, pw_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.flows.guard import guard_batch

    monkeypatch.setenv("PIPEWARDEN_CHECK_ENGINE", "pandas")
    get_settings.cache_clear()
    nested = _nested_route(flights).drop_columns(["time_hour"]).append_column(
        "time_hour", pa.array(pd.to_datetime(flights["time_hour"], utc=True)))
    with pytest.raises(BatchRefused) as err:
        guard_batch(nested, "flights", source="kafka:flights@9")
    event = _assert_refused_and_reported(err, "nested_columns", "kafka:flights@9", "route (struct<")

    _with_flatten(pw_project, '{route: ""}')
    result = guard_batch(nested, "flights", source="kafka:flights@9")
    assert result.status == "accepted" and result.rows_accepted == ROWS - 1, result.reason  # the null route's row
    assert result.rows_quarantined == 1
    assert [(r["load_id"], r["status"]) for r in list_loads("flights")] == [(result.load_id, "accepted")]
    assert [e.id for e in _events() if e.kind == "run_failed"] == [event.id], "the accepted batch failed nothing"


def test_an_in_memory_column_of_mixed_types_is_refused_by_name(flights: pd.DataFrame) -> None:
    frame = flights.assign(gate=["A1", 7] * (ROWS // 2))
    with pytest.raises(BatchRefused) as err:
        ingest("flights", frame)
    _assert_refused_and_reported(err, "mixed_types", "<in-memory DataFrame>", "column gate")
    assert err.value.columns == ["gate"]
