"""Ingest: the demo source, landing batches atomically with their load metadata, and the reference tables."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipewarden.errors import InputFileError, UnknownNameError, UserError
from pipewarden.evals.flights_data import ingest_reference_tables, load_table, month_batch, source_dir
from pipewarden.flows import ingest as ingest_module
from pipewarden.flows.data import inject_drift, write_batch
from pipewarden.flows.ingest import default_load_id, ingest, is_landed, landed_path, landed_uri, list_loads, read_landed
from pipewarden.flows.warehouse import connect
from pipewarden.settings import get_settings


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    """January's flights, read straight from the package (no cache: module fixtures run outside a test home)."""
    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    return flights[flights["month"] == 1].reset_index(drop=True)


@pytest.fixture
def small(january: pd.DataFrame) -> pd.DataFrame:
    return january.head(500).copy()


def _landing_files() -> list[Path]:
    d = get_settings().landing_dir
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def _meta_rows() -> list[dict[str, object]]:
    return list_loads()


# --------------------------------------------------------------------------- the flights example's data (evals)
def test_month_batch_has_the_month_with_all_columns_and_original_dtypes(pw_home: Path) -> None:
    jan = month_batch(1)
    assert jan.shape == (27004, 19)
    assert set(jan["month"]) == {1}
    assert jan["dep_time"].dtype == "float64" and jan["flight"].dtype == "int64"
    assert pd.api.types.is_string_dtype(jan["time_hour"])
    assert list(jan.index[:3]) == [0, 1, 2]
    assert (pw_home / "cache" / "flights.parquet").exists(), "the full table is cached as Parquet"
    assert month_batch(1).equals(jan), "a cached load gives the same frame"


def test_month_batch_rejects_a_month_that_does_not_exist() -> None:
    with pytest.raises(UserError, match="month 13"):
        month_batch(13)


def test_load_table_reads_reference_tables_and_names_unknown_ones() -> None:
    assert load_table("airlines").shape == (16, 2)
    with pytest.raises(UnknownNameError, match="planez") as err:
        load_table("planez")
    assert "planes" in str(err.value)


def test_inject_drift_renames_and_stringifies_without_touching_its_input(small: pd.DataFrame) -> None:
    before = small.copy()
    drifted = inject_drift(small, renames={"dep_delay": "departureDelay"}, to_string=["flight", "dep_time"])
    pd.testing.assert_frame_equal(small, before)
    assert "departureDelay" in drifted and "dep_delay" not in drifted
    assert drifted["flight"].iloc[0] == str(small["flight"].iloc[0])
    assert drifted["dep_time"].iloc[0] == str(int(small["dep_time"].iloc[0])), "whole floats print without .0"
    assert drifted["dep_time"].isna().sum() == small["dep_time"].isna().sum(), "nulls stay null"
    with pytest.raises(UnknownNameError):
        inject_drift(small, to_string=["nope"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_batch_round_trips(small: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = write_batch(small, tmp_path / "sub" / f"b{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert back.shape == small.shape and list(back.columns) == list(small.columns)
    with pytest.raises(UserError, match="unsupported"):
        write_batch(small, tmp_path / "b.xlsx")


# --------------------------------------------------------------------------- landing
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ingest_lands_parquet_with_metadata_and_a_meta_loads_row(small: pd.DataFrame, tmp_path: Path,
                                                                 suffix: str) -> None:
    src = write_batch(small, tmp_path / f"batch{suffix}")
    landed = ingest("flights", src)

    assert landed.load_id == default_load_id("flights", src) and landed.load_id.startswith("flights-")
    assert landed.uri == landed_uri("flights", landed.load_id) == str(landed_path("flights", landed.load_id))
    assert Path(landed.uri).parent == get_settings().landing_dir / "flights"
    assert landed.rows == 500
    assert landed.columns["flight"] == "integer" and landed.columns["carrier"] == "string"
    assert landed.content_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    meta = pq.read_schema(landed.uri).metadata
    assert meta[b"pipewarden.load_id"] == landed.load_id.encode()
    assert meta[b"pipewarden.source"] == str(src.resolve()).encode()
    assert meta[b"pipewarden.schema_fingerprint"] == landed.schema_fingerprint.encode()
    assert b"pipewarden.arrived_at" in meta
    assert [p.name for p in _landing_files()] == [f"{landed.load_id}.parquet"], "no temporary file is left"

    rows = _meta_rows()
    assert len(rows) == 1
    assert rows[0]["load_id"] == landed.load_id and rows[0]["rows"] == 500 and rows[0]["status"] == "landed"
    assert rows[0]["schema_fingerprint"] == landed.schema_fingerprint

    df, again = read_landed("flights", landed.load_id)
    assert again == landed
    pd.testing.assert_frame_equal(df, pd.read_csv(src) if suffix == ".csv" else pd.read_parquet(src))


def test_reingesting_the_same_file_lands_it_once(small: pd.DataFrame, tmp_path: Path) -> None:
    src = write_batch(small, tmp_path / "batch.csv")
    first = ingest("flights", src)
    second = ingest("flights", src)
    assert second == first, "same load id, same arrival time"
    assert len(_landing_files()) == 1 and len(_meta_rows()) == 1


def test_an_explicit_load_id_cannot_be_reused_for_another_file(small: pd.DataFrame, tmp_path: Path) -> None:
    ingest("flights", write_batch(small, tmp_path / "a.csv"), load_id="jan-1")
    with pytest.raises(UserError, match="already landed from another source"):
        ingest("flights", write_batch(small.head(10), tmp_path / "b.csv"), load_id="jan-1")
    with pytest.raises(UserError, match="already landed from another source"):
        ingest("flights", small.head(10), load_id="jan-1")


def _truncated_parquet(small: pd.DataFrame, tmp_path: Path) -> Path:
    good = write_batch(small, tmp_path / "good.parquet")
    bad = tmp_path / "truncated.parquet"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return bad


def _latin1_csv(small: pd.DataFrame, tmp_path: Path) -> Path:
    frame = small.head(5).copy()
    frame["dest"] = ["SÃO", "MÜN", "ZÜR", "BOG", "LIM"]
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(frame.to_csv(index=False).encode("latin-1"))
    return bad


def _empty(small: pd.DataFrame, tmp_path: Path) -> Path:
    bad = tmp_path / "empty.csv"
    bad.write_bytes(b"")
    return bad


@pytest.mark.parametrize(
    ("make", "needle"),
    [(_truncated_parquet, "truncated"), (_latin1_csv, "not UTF-8"), (_empty, "empty")],
    ids=["truncated-parquet", "latin1-csv", "empty-file"],
)
def test_an_unreadable_file_raises_naming_it_and_lands_nothing(small: pd.DataFrame, tmp_path: Path, make,
                                                               needle: str) -> None:
    bad = make(small, tmp_path)
    with pytest.raises(InputFileError) as err:
        ingest("flights", bad)
    assert str(bad) in str(err.value) and needle in str(err.value)
    assert _landing_files() == []
    assert _meta_rows() == []


def test_an_unknown_dataset_raises_naming_it_and_lands_nothing(small: pd.DataFrame, tmp_path: Path) -> None:
    src = write_batch(small, tmp_path / "batch.csv")
    with pytest.raises(UnknownNameError) as err:
        ingest("flighst", src)
    assert "flighst" in str(err.value) and "flights" in str(err.value)
    assert _landing_files() == []
    assert _meta_rows() == []


def test_read_landed_names_the_loads_that_exist(small: pd.DataFrame, tmp_path: Path) -> None:
    landed = ingest("flights", write_batch(small, tmp_path / "batch.csv"))
    with pytest.raises(UnknownNameError) as err:
        read_landed("flights", "flights-000000000000")
    assert landed.load_id in str(err.value)
    with pytest.raises(UserError, match="cannot name a file"):
        landed_path("flights", "../escape")


# --------------------------------------------------------------------------- in-memory batches
def test_an_in_memory_dataframe_lands_under_a_load_id_derived_from_its_content(small: pd.DataFrame) -> None:
    landed = ingest("flights", small)
    assert landed.source == "<in-memory DataFrame>" and landed.rows == 500
    assert landed.load_id == default_load_id("flights", small) == f"flights-{landed.content_sha256[:12]}"
    assert landed.uri == landed_uri("flights", landed.load_id) and is_landed("flights", landed.load_id)
    assert ingest("flights", small.copy()) == landed, "the same data lands once, under the same load id"
    assert ingest("flights", pa.Table.from_pandas(small, preserve_index=False)) == landed, \
        "an Arrow table of the same data is the same batch"
    other = ingest("flights", small.head(499), source_name="kafka:flights@42")
    assert other.load_id != landed.load_id and other.source == "kafka:flights@42"
    assert [(r["load_id"], r["source"]) for r in _meta_rows()] == [
        (landed.load_id, "<in-memory DataFrame>"), (other.load_id, "kafka:flights@42")]

    df, again = read_landed("flights", landed.load_id)
    assert again == landed
    pd.testing.assert_frame_equal(df, small)


def test_an_unusable_in_memory_source_raises_and_lands_nothing() -> None:
    with pytest.raises(UserError, match="cannot ingest a dict"):
        ingest("flights", {"flight": [1]})  # type: ignore[arg-type]
    with pytest.raises(UserError, match="no columns"):
        ingest("flights", pd.DataFrame())
    assert _landing_files() == [] and _meta_rows() == []


def test_the_content_hash_belongs_to_the_rows_that_were_parsed(small: pd.DataFrame, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The source file is replaced right after ingest read it. Hashing the file in a second read (the old design)
    would pair the new file's hash with the old file's rows; the hash of the bytes read is that of the rows."""
    src = write_batch(small, tmp_path / "batch.csv")
    original = src.read_bytes()
    replacement = small.head(10).to_csv(index=False).encode()
    real_read_bytes, reads = ingest_module.read_bytes, []

    def read_then_replace(location: str | Path) -> bytes:
        data = real_read_bytes(location)
        reads.append(str(location))
        src.write_bytes(replacement)
        return data

    monkeypatch.setattr(ingest_module, "read_bytes", read_then_replace)
    landed = ingest("flights", src)

    assert reads == [str(src)], "the file is read once, for both the rows and the hash"

    assert landed.content_sha256 == hashlib.sha256(original).hexdigest() != hashlib.sha256(replacement).hexdigest()
    assert landed.load_id == f"flights-{hashlib.sha256(original).hexdigest()[:12]}"
    df, _ = read_landed("flights", landed.load_id)
    assert landed.rows == len(df) == 500
    pd.testing.assert_frame_equal(df, pd.read_csv(io.BytesIO(original)))


_CRASH_DURING_LANDING = """
import os, sys
from pipewarden.flows import ingest
ingest._crash_point = lambda name: os._exit(17) if name == "ingest.temp_written" else None
ingest.ingest("flights", sys.argv[1])
"""


def test_a_crashed_landing_leaves_a_temp_file_that_the_next_ingest_sweeps(
        small: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = write_batch(small, tmp_path / "batch.csv")
    crashed = subprocess.run([sys.executable, "-c", _CRASH_DURING_LANDING, str(src)], capture_output=True,
                             text=True, env=os.environ.copy(), timeout=120)
    assert crashed.returncode == 17, crashed.stderr
    leftovers = _landing_files()
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp"), "the crash left its temporary file"
    assert _meta_rows() == [] and not is_landed("flights", default_load_id("flights", src))
    crashed_tmp = leftovers[0]
    an_hour_ago = time.time() - 3600
    os.utime(crashed_tmp, (an_hour_ago, an_hour_ago))

    # a temporary file of a writer that is still running (this process) is not touched, however old
    live = crashed_tmp.with_name(f".flights-live.{os.getpid()}.0123abcd.tmp")
    live.write_bytes(b"being written")
    os.utime(live, (an_hour_ago, an_hour_ago))
    # nor is a fresh one whose writer this host cannot see (another machine or container writing right now)
    elsewhere = crashed_tmp.with_name(".flights-elsewhere.4194303.0123abcd.tmp")
    elsewhere.write_bytes(b"being written on another host")

    with caplog.at_level("WARNING", logger="pipewarden.flows.ingest"):
        landed = ingest("flights", src)
    assert sorted(p.name for p in _landing_files()) == sorted(
        [f"{landed.load_id}.parquet", live.name, elsewhere.name])
    assert [r["load_id"] for r in _meta_rows()] == [landed.load_id]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"removed {crashed_tmp}"], "the sweep is logged"


# --------------------------------------------------------------------------- reference tables
def test_reference_tables_land_once_with_contract_types() -> None:
    counts = ingest_reference_tables()
    assert counts == {"airlines": 16, "airports": 1458, "planes": 3322, "weather": 26115}
    assert ingest_reference_tables() == counts, "a second call leaves the tables as they are"
    with connect(read_only=True) as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'raw_weather'").fetchall())
        assert types["time_hour"] == "TIMESTAMP WITH TIME ZONE" and types["wind_dir"] == "BIGINT"
        assert con.execute("SELECT count(*) FROM raw_planes WHERE _load_id = 'reference'").fetchall()[0][0] == 3322
    assert {r["dataset"] for r in _meta_rows() if r["status"] == "reference"} == set(counts)


def test_ingest_reference_loads_any_reference_dataset_once_and_reads_it_only_when_missing() -> None:
    from pipewarden.flows.ingest import ingest_reference

    frame = pd.DataFrame({"carrier": ["AA", "ZZ"], "name": ["American", "Zed Air"]})
    assert ingest_reference("airlines", frame, source="mine.csv") == 2

    def never() -> pd.DataFrame:
        raise AssertionError("a table already in the warehouse is not read again")

    assert ingest_reference("airlines", never, source="other.csv") == 2
    assert [(r["source"], r["status"]) for r in _meta_rows() if r["dataset"] == "airlines"] == [("mine.csv", "reference")]


def test_out_of_range_past_the_contract_bound_needs_the_dataset(small: pd.DataFrame) -> None:
    from pipewarden.flows.data import inject_out_of_range

    with pytest.raises(UserError, match="pass dataset=NAME"):
        inject_out_of_range(small, "dep_delay", 0.1)
    bounded = inject_out_of_range(small, "dep_delay", 0.1, dataset="flights")
    assert (bounded["dep_delay"] > 1500).sum() == max(1, round(small["dep_delay"].notna().sum() * 0.1))  # past max
