"""Batch storage on S3: land, read back, validate and point events at the object, against moto's S3 server.

The server runs in this process (moto's server mode on 127.0.0.1, a free port); pipewarden and s3fs reach it
through `AWS_ENDPOINT_URL`, which botocore reads itself, so nothing S3-specific is configured in pipewarden.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipewarden.errors import ConfigError, UnknownNameError
from pipewarden.evals.flights_data import source_dir
from pipewarden.events import CheckFailed, parse_event
from pipewarden.flows.data import write_batch
from pipewarden.flows.ingest import ingest, is_landed, landed_path, landed_uri, list_loads, read_landed
from pipewarden.flows.validate import validate
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from pipewarden.tools.io import read_table
from pipewarden.tools.quality import load_batch

moto_server = pytest.importorskip("moto.server", reason="moto[server] (the dev extra) serves a local S3")
s3fs = pytest.importorskip("s3fs", reason="s3fs (the dev or s3 extra) reads and writes s3:// URLs")

BUCKET = "bucket"
STORAGE = f"s3://{BUCKET}/landing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[s3fs.S3FileSystem]:
    """Batch storage at s3://bucket/landing on a fresh moto server; yields an s3fs client of its own."""
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST")).close()
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint, "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"), "NO_PROXY": "127.0.0.1",
        "PIPEWARDEN_STORAGE_URI": STORAGE,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    get_settings.cache_clear()
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(skip_instance_cache=True, client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir(BUCKET)
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    flights = pd.read_csv(source_dir() / "flights.csv.zip")
    return flights[flights["month"] == 1].head(2000).reset_index(drop=True)


def test_a_batch_lands_in_s3_as_one_object_and_reads_back_by_its_uri(s3: s3fs.S3FileSystem, january: pd.DataFrame,
                                                                     tmp_path: Path, pw_home: Path) -> None:
    assert get_settings().storage == STORAGE
    batch = january.head(500)
    landed = ingest("flights", batch)

    assert landed.uri == landed_uri("flights", landed.load_id) == f"{STORAGE}/flights/{landed.load_id}.parquet"
    key = f"{BUCKET}/landing/flights/{landed.load_id}.parquet"
    assert s3.ls(f"{BUCKET}/landing/flights", refresh=True) == [key], "one object, no temporary ones"
    with s3.open(key, "rb") as fh:
        meta = pq.read_schema(fh).metadata
    assert meta[b"pipewarden.load_id"] == landed.load_id.encode()
    assert meta[b"pipewarden.content_sha256"] == landed.content_sha256.encode()
    assert not (pw_home / "landing").exists(), "nothing lands on the local disk"

    df, again = read_landed("flights", landed.load_id)
    assert again == landed and is_landed("flights", landed.load_id)
    pd.testing.assert_frame_equal(df, batch)
    assert ingest("flights", batch.copy()) == landed, "the same data lands once"

    from_file = ingest("flights", write_batch(january.head(20), tmp_path / "b.csv"))
    assert from_file.uri.startswith(f"{STORAGE}/flights/") and from_file.source == str(tmp_path / "b.csv")
    assert sorted(s3.ls(f"{BUCKET}/landing/flights", refresh=True)) == sorted([key, from_file.uri.removeprefix("s3://")])
    assert [r["load_id"] for r in list_loads("flights")] == [landed.load_id, from_file.load_id]

    with pytest.raises(UnknownNameError) as err:
        read_landed("flights", "flights-000000000000")
    assert landed.load_id in str(err.value) and from_file.load_id in str(err.value)
    with pytest.raises(ConfigError, match="not a local folder"):
        landed_path("flights", landed.load_id)


def test_validate_reads_the_batch_from_s3_and_its_events_carry_the_s3_uri(s3: s3fs.S3FileSystem,
                                                                          january: pd.DataFrame) -> None:
    clean = ingest("flights", january)
    out = validate(clean)  # no frame passed: validate reads the batch back from S3
    assert not out.halted and out.rows_accepted + out.rows_quarantined == len(january)

    bad = january.head(400).copy()
    bad["origin"] = "XXX"
    landed = ingest("flights", bad, source_name="test: every origin broken")
    halted = validate(landed)
    assert halted.halted and halted.rows_quarantined == 400
    [stored] = StateStore().list_events()
    event = parse_event(stored["payload"])
    assert isinstance(event, CheckFailed) and event.batch_path == landed.uri
    assert event.batch_path.startswith(f"{STORAGE}/flights/") and s3.exists(event.batch_path)
    pd.testing.assert_frame_equal(read_table(event.batch_path), bad)  # an agent reads the batch the event names
    frame, _ = load_batch("flights", landed.load_id)  # the quality tools find it by load id
    pd.testing.assert_frame_equal(frame, bad)
