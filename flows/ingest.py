"""Ingest: land a batch (a file, a DataFrame or an Arrow table) in the Parquet batch storage, tagged with its
load, and record the load.

A batch lands at `<storage>/<dataset>/<load_id>.parquet`, where `storage` is `settings.storage`: a local folder
(default `PIPEWARDEN_HOME/landing`) or any fsspec URL (`s3://bucket/prefix`). In a local folder it is written to a
temporary file beside its place and moved there with `os.replace`; an object store gets it in one PUT. Either
way a reader sees the whole batch or none. A temporary file left by a crashed landing is swept (and logged) by the
next ingest of that dataset once it is older than `STALE_TEMP_AFTER_S` (15 minutes: a file being written now is
younger, whichever machine or container writes it) and no process of this host named in it still runs. Its load
metadata is stored twice: as Parquet key-value metadata (`pipewarden.source`,
`.load_id`, `.arrived_at`, `.schema_fingerprint`, ...) and as a row of the warehouse table `meta_loads` (DuckDB
or any SQLAlchemy warehouse, through `tools.warehouse`).

A file is read once: its bytes are hashed and those same bytes parsed, so the content hash always belongs to the
rows that landed. The default load id is derived from that hash (for a DataFrame or Arrow table, from the hash
of its Arrow IPC stream), so ingesting the same data twice lands it once. A file that cannot be read raises
before anything is written.

A batch that is read but refused (`tools.io.BatchRefused`: over the size limit, a column named twice, nested
columns the contract does not `flatten`, no rows, an in-memory column of mixed types) is never landed either, and it is reported: a `RunFailed`
event (stage `ingest`, the source and the problem in `error`) goes to the outbox before the error is raised, so
the supervisor hears of it (the triage agent puts it in the inbox as needs-a-human). The event's id derives from
the dataset, the source, its content hash and the problem, so the same refused batch is reported once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from pipewarden.errors import InputFileError, UnknownNameError, UserError
from pipewarden.events import RunFailed
from pipewarden.ids import utcnow
from pipewarden.policies.contract import load_contract, observed_type, schema_fingerprint
from pipewarden.settings import get_settings
from pipewarden.tools.io import (
    BatchRefused,
    arrow_table,
    check_has_rows,
    check_unique_columns,
    exists,
    filesystem,
    flatten_nested,
    is_url,
    landed_load_ids,
    landed_uri,
    parse_table,
    read_bytes,
)
from pipewarden.tools.mapping import conform_to_contract
from pipewarden.tools.warehouse import Warehouse

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "Landed", "default_load_id", "ingest", "ingest_reference", "ingest_rows", "is_landed", "landed_frame",
    "landed_path", "landed_uri", "list_loads", "read_landed", "set_load_status",
]

log = logging.getLogger(__name__)
META_PREFIX = "pipewarden."
IN_MEMORY_DATAFRAME = "<in-memory DataFrame>"
IN_MEMORY_TABLE = "<in-memory Arrow table>"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_AFTER_S = 15 * 60.0
"""A temporary landing file this much older than now is a crashed landing's leftover (a live writer touches it)."""
REFUSED_NAMESPACE = uuid.UUID("0c6f7a52-2b8e-4d5f-9a41-3e7d1b9c8f20")
META_LOADS_DDL = """
CREATE TABLE IF NOT EXISTS meta_loads (
    dataset VARCHAR NOT NULL,
    load_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    arrived_at TIMESTAMPTZ NOT NULL,
    schema_fingerprint VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    status VARCHAR NOT NULL,
    PRIMARY KEY (dataset, load_id)
)
"""


class Landed(BaseModel):
    """A batch as it landed: where, when, from where, and the schema it arrived with."""

    model_config = ConfigDict(frozen=True)
    dataset: str
    load_id: str
    source: str
    """The file it came from (absolute path or URL), or a name for an in-memory batch."""
    uri: str
    """Where it landed: a local path when the storage is a local folder, else an fsspec URL (`s3://...`)."""
    arrived_at: datetime
    rows: int
    schema_fingerprint: str
    columns: dict[str, str]
    content_sha256: str = ""
    """The sha256 of the file's bytes as read, or of the in-memory batch's Arrow IPC stream."""

    @property
    def path(self) -> str:
        """Deprecated alias of `uri` (kept while callers move over); not a local path for an object store."""
        return self.uri

    def parquet_metadata(self) -> dict[bytes, bytes]:
        """The load metadata as Parquet key-value pairs (`pipewarden.<field>`)."""
        fields = {
            "dataset": self.dataset, "load_id": self.load_id, "source": self.source,
            "arrived_at": self.arrived_at.isoformat(), "rows": str(self.rows),
            "schema_fingerprint": self.schema_fingerprint, "columns": json.dumps(self.columns),
            "content_sha256": self.content_sha256,
        }
        return {f"{META_PREFIX}{k}".encode(): v.encode() for k, v in fields.items()}


# --------------------------------------------------------------------------- paths and ids
def landed_path(dataset: str, load_id: str) -> Path:
    """Where the batch `load_id` of `dataset` lands in a local landing folder. ConfigError when batches are
    stored in an object store: use `landed_uri` there."""
    get_settings().landing_dir  # noqa: B018 - raises ConfigError for an object store
    return Path(landed_uri(dataset, load_id))


def is_landed(dataset: str, load_id: str) -> bool:
    """Whether the batch `load_id` of `dataset` is in the batch storage."""
    return exists(landed_uri(dataset, load_id))


def file_sha256(source: str | Path) -> str:
    """The sha256 of a file's bytes (a local path or an fsspec URL), in hex."""
    return hashlib.sha256(read_bytes(source)).hexdigest()


def arrow_sha256(table: pa.Table) -> str:
    """The sha256 of an Arrow table's IPC stream (schema metadata left out, chunks combined), in hex: the same
    columns, types and values always give the same hash."""
    import pyarrow as pa

    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(memoryview(sink.getvalue())).hexdigest()


def default_load_id(dataset: str, source: str | Path | pd.DataFrame | pa.Table) -> str:
    """`<dataset>-<first 12 hex of the content hash>`: the same file (or the same in-memory data) always gets the
    same id."""
    if isinstance(source, str | Path):
        return f"{dataset}-{file_sha256(source)[:12]}"
    return f"{dataset}-{_read_source(dataset, source, None, _flatten_rule(dataset), report=False).sha256[:12]}"


def _flatten_rule(dataset: str) -> dict[str, str]:
    """The active contract's rule for nested columns (struct column -> prefix)."""
    from pipewarden.tools.contracts import active_contract

    return dict(active_contract(dataset).flatten)


@contextmanager
def connect(read_only: bool = False) -> Iterator[Warehouse]:
    """The warehouse (`settings.warehouse`: DuckDB or any SQLAlchemy URL) for the block, closed after."""
    from pipewarden.tools.warehouse import connect as connect_warehouse

    settings = get_settings()
    settings.ensure_home()
    with connect_warehouse(settings.warehouse, read_only=read_only) as wh:
        yield wh


def ensure_meta_loads(wh: Warehouse) -> None:
    """Create the `meta_loads` table if it is missing."""
    wh.execute(META_LOADS_DDL)


def _crash_point(name: str) -> None:
    """A named point where a crash test can make the process die (tests replace this function); a no-op."""


# --------------------------------------------------------------------------- reading the source
@dataclass(frozen=True)
class _Batch:
    table: pa.Table
    frame: pd.DataFrame
    sha256: str
    source: str


def _read_source(dataset: str, source: object, source_name: str | None,
                 flatten: dict[str, str] | None = None, *, report: bool = True) -> _Batch:
    """The batch as an Arrow table and a DataFrame, its content hash and the name to record as its source.

    `flatten` is the contract's rule for nested columns. A batch refused by `tools.io` (`BatchRefused`) is
    reported as a `RunFailed` event before the error is raised again (see `_report_refused`), unless `report`
    is false (a load id asked for is not a batch landed).
    """
    import pyarrow as pa

    def refused(label: str, exc: BatchRefused, sha256: str) -> BatchRefused:
        if report:
            return _report_refused(dataset, label, exc, sha256)
        return BatchRefused(exc.path, exc.reason, exc.problem, hint=exc.hint or "", columns=exc.columns)

    if isinstance(source, str | Path):
        name = str(source) if is_url(source) else str(Path(source).resolve())
        try:
            data = read_bytes(source)  # read once: the hash and the rows come from the same bytes
        except BatchRefused as exc:
            raise refused(source_name or name, exc, "") from exc
        sha256 = hashlib.sha256(data).hexdigest()
        _crash_point("ingest.read")
        try:
            frame = parse_table(data, source, flatten=flatten)
        except BatchRefused as exc:
            raise refused(source_name or name, exc, sha256) from exc
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return _Batch(table, frame, sha256, source_name or name)
    if isinstance(source, pd.DataFrame):
        name = IN_MEMORY_DATAFRAME
    elif isinstance(source, pa.Table):
        name = IN_MEMORY_TABLE
    else:
        raise UserError(f"cannot ingest a {type(source).__name__}",
                        hint="pass a CSV or Parquet file path, a pandas DataFrame or a pyarrow Table")
    label = source_name or name
    if len(source.columns) == 0:
        raise UserError(f"the {name} has no columns", hint="ingest a batch with the dataset's columns")
    try:
        check_unique_columns(source.column_names if isinstance(source, pa.Table) else source.columns, label)
        if isinstance(source, pd.DataFrame):
            frame, table = source, arrow_table(source, label)
        else:
            frame, table = None, source
        flat = flatten_nested(table, flatten, label)
        if flat is not table or frame is None:
            table, frame = flat, flat.to_pandas()
        check_has_rows(table.num_rows, label, header=False)
    except BatchRefused as exc:
        raise refused(label, exc, "") from exc
    return _Batch(table, frame, arrow_sha256(table), label)


def _report_refused(dataset: str, source: str, exc: BatchRefused, sha256: str) -> BatchRefused:
    """Put a `RunFailed` event (stage `ingest`) for a refused batch in the outbox; the error to raise names it."""
    from pipewarden.flows.emit import emit

    key = f"batch_refused|{dataset}|{source}|{sha256}|{exc.reason}|{exc.problem}"
    event = RunFailed(id=uuid.uuid5(REFUSED_NAMESPACE, key), dataset=dataset, stage="ingest",
                      error=f"{exc.path}: {exc.problem} (hint: {exc.hint})")
    emit(event)
    return BatchRefused(
        exc.path, exc.reason,
        f"{exc.problem}; nothing was landed; event {event.kind} {event.id} is in the outbox",
        hint=exc.hint or "", columns=exc.columns,
    )


# --------------------------------------------------------------------------- ingest
def ingest(dataset: str, source: str | Path | pd.DataFrame | pa.Table, *, load_id: str | None = None, source_name: str | None = None) -> Landed:
    """Land one batch of `dataset` and record the load in `meta_loads` (see `ingest_rows`, which also hands back
    the rows as they landed)."""
    return ingest_rows(dataset, source, load_id=load_id, source_name=source_name)[0]


def ingest_rows(dataset: str, source: str | Path | pd.DataFrame | pa.Table, *, load_id: str | None = None,
                source_name: str | None = None) -> tuple[Landed, pa.Table | None]:
    """Land one batch of `dataset` and record the load in `meta_loads`; return the `Landed` record and the rows as
    they landed: an Arrow table with the landed file's schema, metadata included, so `landed_frame` of it is the
    frame `read_landed` would read back. The table is None when that cannot be vouched for without reading the
    file (an object store, a load landed earlier without a content hash, a type the Parquet file did not keep).

    `source` is a CSV or Parquet file (a path or an fsspec URL), a pandas DataFrame or a pyarrow Table.
    `source_name` is recorded as the batch's source (default: the file's absolute path or URL, or
    "<in-memory DataFrame>"). Raises UnknownNameError for a dataset without a contract and InputFileError for a
    file that cannot be read (missing, empty, truncated, not UTF-8), in both cases before anything is written;
    BatchRefused (after its event is in the outbox) for a batch over the size limit, with a column named twice,
    nested columns the contract does not flatten, or no rows. Ingesting data that already landed under the same load id returns the first landing unchanged.
    """
    load_contract(dataset)
    flatten = _flatten_rule(dataset)
    if not is_url(get_settings().storage):
        _sweep_stale_temps(dataset)
    batch = _read_source(dataset, source, source_name, flatten)
    load_id = load_id or f"{dataset}-{batch.sha256[:12]}"
    uri = landed_uri(dataset, load_id)
    if exists(uri):
        schema, landed = _landed_schema(dataset, load_id)
        if landed.content_sha256 and landed.content_sha256 != batch.sha256:
            raise UserError(
                f"load {load_id!r} of {dataset} already landed from another source ({landed.source})",
                hint="omit --load-id to get one derived from the data, or pick a new load id",
            )
        _record_load(landed, status="landed", replace=False)
        # the same content hash: the same columns, types and values as the file holds
        return landed, _as_landed(batch.table, uri, schema) if landed.content_sha256 else None
    columns = {str(c): observed_type(batch.frame[c]) for c in batch.frame.columns}
    landed = Landed(
        dataset=dataset, load_id=load_id, source=batch.source, uri=uri, arrived_at=utcnow(),
        rows=batch.table.num_rows, schema_fingerprint=schema_fingerprint(columns), columns=columns,
        content_sha256=batch.sha256,
    )
    _land(batch.table, landed)
    return landed, _as_landed(batch.table, uri)


def _as_landed(table: pa.Table, uri: str, schema: pa.Schema | None = None) -> pa.Table | None:
    """`table` with the schema of the file landed at `uri` (a local file; read when `schema` is not given), or None
    when the file's columns or types are not the table's (Parquet did not keep a type) or it lies in an object
    store."""
    import pyarrow.parquet as pq

    if is_url(uri):
        return None
    if schema is None:
        schema = pq.read_schema(uri)
    if not schema.equals(table.schema, check_metadata=False):
        return None
    return table.replace_schema_metadata(schema.metadata)


def landed_frame(table: pa.Table) -> pd.DataFrame:
    """The frame of rows `ingest_rows` handed back, as `read_landed` reads them from the file
    (`tests/flows/test_ingest_rows.py` holds the two equal)."""
    return table.to_pandas()


def _land(table: pa.Table, landed: Landed) -> None:
    """Write the Parquet file and the meta_loads row together: the row commits only if the file is in place."""
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **landed.parquet_metadata()})
    if is_url(landed.uri):
        _land_object(table, landed)
    else:
        _land_local(table, landed)


def _land_local(table: pa.Table, landed: Landed) -> None:
    """Temp file beside the target, then `os.replace` inside the meta_loads transaction."""
    import pyarrow.parquet as pq

    path = Path(landed.uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        pq.write_table(table, tmp)
        _crash_point("ingest.temp_written")
        with connect() as wh:
            ensure_meta_loads(wh)
            try:
                with wh.transaction():
                    _insert_load(wh, landed, status="landed", replace=True)
                    os.replace(tmp, path)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
    finally:
        tmp.unlink(missing_ok=True)


def _land_object(table: pa.Table, landed: Landed) -> None:
    """One PUT of the whole object inside the meta_loads transaction (s3fs sends up to 100 MB as a single PUT
    and larger batches as a multipart upload, which also appears only when complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    fs, path = filesystem(landed.uri)
    with connect() as wh:
        ensure_meta_loads(wh)
        try:
            with wh.transaction():
                _insert_load(wh, landed, status="landed", replace=True)
                fs.pipe_file(path, data)
        except BaseException:
            if fs.exists(path):
                fs.rm_file(path)
            raise


def _sweep_stale_temps(dataset: str, *, older_than_s: float = STALE_TEMP_AFTER_S,
                       now: float | None = None) -> list[Path]:
    """Remove the temporary files a crashed landing of `dataset` left in the local landing folder: those last
    written more than `older_than_s` seconds before `now` whose writer (a process of this host named in the
    file's name) is gone. A younger file may be another machine's or container's landing in progress: kept.
    Each removal is logged. Returns what was removed."""
    folder = get_settings().landing_dir / dataset
    if not folder.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = []
    for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
        try:
            written = tmp.stat().st_mtime
            if written > cutoff or _writer_alive(tmp):
                continue
            tmp.unlink()
        except FileNotFoundError:  # its writer finished (or another sweep took it) meanwhile
            continue
        log.warning("removed %s: a temporary file of a landing of %s that did not finish (last written %.0f s ago)",
                    tmp, dataset, cutoff + older_than_s - written)
        removed.append(tmp)
    return removed


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temp file's name (`.<load_id>.<pid>.<hex>.tmp`) still runs on this host."""
    parts = tmp.name.removesuffix(TEMP_SUFFIX).rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # not written by this version: only its age counts
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _insert_load(wh: Warehouse, landed: Landed, *, status: str, replace: bool) -> None:
    """Write the load's `meta_loads` row: `replace` overwrites an existing row, else an existing row is kept."""
    _upsert_load(wh, [landed.dataset, landed.load_id, landed.source, landed.arrived_at, landed.schema_fingerprint,
                      landed.rows, status], replace=replace)


def _upsert_load(wh: Warehouse, row: list[object], *, replace: bool) -> None:
    """One `meta_loads` row (dataset, load_id, source, arrived_at, schema_fingerprint, rows, status). DuckDB: INSERT
    OR REPLACE / OR IGNORE; elsewhere (portable SQL): a delete then an insert, or an insert only when the key is
    new, in one transaction."""
    insert = ("INTO meta_loads (dataset, load_id, source, arrived_at, schema_fingerprint, rows, status) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)")
    if wh.is_duckdb:
        wh.execute(f"{'INSERT OR REPLACE' if replace else 'INSERT OR IGNORE'} {insert}", row)
        return
    key = row[:2]
    with wh.transaction():
        if replace:
            wh.execute("DELETE FROM meta_loads WHERE dataset = ? AND load_id = ?", key)
        elif wh.execute("SELECT 1 FROM meta_loads WHERE dataset = ? AND load_id = ?", key):
            return
        wh.execute(f"INSERT {insert}", row)


def _record_load(landed: Landed, *, status: str, replace: bool) -> None:
    with connect() as wh:
        ensure_meta_loads(wh)
        _insert_load(wh, landed, status=status, replace=replace)


def set_load_status(dataset: str, load_id: str, status: str, con: Warehouse | None = None) -> None:
    """Set a load's status in `meta_loads`: landed, accepted, accepted_unchecked, halted_schema, halted_checks,
    halted_quality or reference. `con`: an open warehouse (its open transaction, if any), else one of its own."""
    sql = "UPDATE meta_loads SET status = ? WHERE dataset = ? AND load_id = ?"
    if con is not None:
        ensure_meta_loads(con)
        con.execute(sql, [status, dataset, load_id])
        return
    with connect() as own:
        ensure_meta_loads(own)
        own.execute(sql, [status, dataset, load_id])


# --------------------------------------------------------------------------- reading back
def read_landed(dataset: str, load_id: str, *, columns: list[str] | None = None) -> tuple[pd.DataFrame, Landed]:
    """A landed batch and its load metadata, read back from the batch storage (for re-runs).

    `columns=[]` reads only the metadata. An unknown load id fails with the load ids that did land.
    """
    fh, uri = _open_landed(dataset, load_id)
    with fh:
        _, landed = _landed_metadata(fh, uri)
        if columns == []:
            return pd.DataFrame(), landed
        fh.seek(0)
        return pd.read_parquet(fh, columns=columns), landed


def _landed_schema(dataset: str, load_id: str) -> tuple[pa.Schema, Landed]:
    """A landed batch's Arrow schema (metadata included) and its load metadata, without reading its rows."""
    fh, uri = _open_landed(dataset, load_id)
    with fh:
        return _landed_metadata(fh, uri)


def _open_landed(dataset: str, load_id: str) -> tuple[Any, str]:
    """The landed batch's file, open for reading, and its URI; an unknown load id fails with the ones that landed."""
    uri = landed_uri(dataset, load_id)
    fs, path = filesystem(uri)
    try:
        return fs.open(path, "rb"), uri
    except FileNotFoundError:
        raise UnknownNameError(f"load of {dataset}", load_id, landed_load_ids(dataset)) from None


def _landed_metadata(fh: object, uri: str) -> tuple[pa.Schema, Landed]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(fh)
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if k.startswith(META_PREFIX.encode())}

    def get(key: str) -> str:
        try:
            return meta[f"{META_PREFIX}{key}"]
        except KeyError:
            raise InputFileError(uri, f"has no {META_PREFIX}{key} load metadata",
                                 hint="land batches with `ingest`, not by copying files") from None
    landed = Landed(
        dataset=get("dataset"), load_id=get("load_id"), source=get("source"), uri=uri,
        arrived_at=datetime.fromisoformat(get("arrived_at")), rows=int(get("rows")),
        schema_fingerprint=get("schema_fingerprint"), columns=json.loads(get("columns")),
        content_sha256=meta.get(f"{META_PREFIX}content_sha256", ""),
    )
    return schema, landed


def list_loads(dataset: str | None = None) -> list[dict[str, object]]:
    """The rows of `meta_loads` (all datasets, or one), oldest first."""
    names = ["dataset", "load_id", "source", "arrived_at", "schema_fingerprint", "rows", "status"]
    with connect() as wh:
        ensure_meta_loads(wh)
        q = (f"SELECT {', '.join(names)} FROM meta_loads" + (" WHERE dataset = ?" if dataset else "")
             + " ORDER BY arrived_at")
        return [dict(zip(names, row, strict=True)) for row in wh.execute(q, [dataset] if dataset else [])]


# --------------------------------------------------------------------------- reference tables
def ingest_reference(name: str, frame: pd.DataFrame | Callable[[], pd.DataFrame], *, source: str) -> int:
    """Load reference dataset `name` whole into `raw_<name>` when it is not in the warehouse yet; return its rows.

    `frame` is the table, or a function that reads it (called only when the table is missing). It is conformed to
    the dataset's contract types (e.g. a timestamp column becomes a UTC timestamp) and tagged
    `_load_id = 'reference'`; `source` (where it was read from) goes into its `meta_loads` row. Idempotent: a table
    already in the warehouse is left as it is. A team's own flow usually guards its reference tables like any
    batch (`pipewarden.prefect.guard(table, dataset=name)`); this is the unguarded bulk load for fixtures.
    """
    table = f"raw_{name}"
    with connect() as wh:
        ensure_meta_loads(wh)
        if not wh.has_table(table):
            contract = load_contract(name)
            frame = conform_to_contract(frame() if callable(frame) else frame, contract)[contract.names]
            frame["_load_id"] = "reference"
            columns = {c: observed_type(frame[c]) for c in contract.names}
            with wh.transaction():
                wh.write_frame(table, frame)
                _upsert_load(wh, [name, "reference", source, utcnow(), schema_fingerprint(columns), len(frame),
                                  "reference"], replace=True)
        return int(wh.execute(f"SELECT count(*) FROM {wh.quote(table)}")[0][0])
