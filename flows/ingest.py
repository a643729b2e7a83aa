"""Ingest: land a batch file in the Parquet landing zone, tagged with its load, and record the load.

A batch lands at `PIPEWARDEN_HOME/landing/<dataset>/<load_id>.parquet`, written to a temporary file in the
same folder and moved into place with `os.replace`, so a reader sees the whole file or none. Its load
metadata is stored twice: as Parquet key-value metadata (`pipewarden.source`, `.load_id`, `.arrived_at`,
`.schema_fingerprint`, ...) and as a row of the DuckDB table `meta_loads`. The default load id is derived from
the file's bytes, so ingesting the same file twice lands it once. A file that cannot be read raises before
anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from flows.data import REFERENCE_TABLES, load_table
from flows.warehouse import connect
from pipewarden.errors import InputFileError, UnknownNameError, UserError
from pipewarden.ids import utcnow
from pipewarden.settings import get_settings
from policies.contract import load_contract, observed_type, schema_fingerprint
from tools.io import read_table
from tools.mapping import conform_to_contract

META_PREFIX = "pipewarden."
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
    path: str
    arrived_at: datetime
    rows: int
    schema_fingerprint: str
    columns: dict[str, str]
    content_sha256: str = ""

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
    """Where the batch `load_id` of `dataset` lands (or landed)."""
    for part, what in ((dataset, "dataset"), (load_id, "load id")):
        if not part or "/" in part or "\\" in part or part.startswith("."):
            raise UserError(f"{what} {part!r} cannot name a file", hint="use letters, digits, '-' and '_'")
    return get_settings().landing_dir / dataset / f"{load_id}.parquet"


def file_sha256(source: str | Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(source, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_load_id(dataset: str, source: str | Path) -> str:
    """`<dataset>-<first 12 hex of the sha256 of the file's bytes>`: the same file always gets the same id."""
    return f"{dataset}-{file_sha256(source)[:12]}"


def ensure_meta_loads(con: object) -> None:
    """Create the `meta_loads` table if it is missing."""
    con.execute(META_LOADS_DDL)  # type: ignore[attr-defined]


@contextmanager
def transaction(con: object) -> Iterator[object]:
    """BEGIN on a DuckDB connection; COMMIT if the block ends normally, ROLLBACK (and re-raise) if it raises."""
    con.begin()  # type: ignore[attr-defined]
    try:
        yield con
    except BaseException:
        con.rollback()  # type: ignore[attr-defined]
        raise
    con.commit()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- ingest
def ingest(dataset: str, source: str | Path, *, load_id: str | None = None) -> Landed:
    """Land one batch file (CSV or Parquet) of `dataset` and record the load in `meta_loads`.

    Raises UnknownNameError for a dataset without a contract and InputFileError for a file that cannot be
    read (missing, empty, truncated, not UTF-8), in both cases before anything is written. Ingesting a
    file that already landed under the same load id returns the first landing unchanged.
    """
    load_contract(dataset)
    src = Path(source)
    df = read_table(src)
    sha = file_sha256(src)
    load_id = load_id or f"{dataset}-{sha[:12]}"
    path = landed_path(dataset, load_id)
    if path.exists():
        _, landed = read_landed(dataset, load_id, columns=[])
        if landed.content_sha256 and landed.content_sha256 != sha:
            raise UserError(
                f"load {load_id!r} of {dataset} already landed from another file ({landed.source})",
                hint="omit --load-id to get one derived from the file, or pick a new load id",
            )
        _record_load(landed, status="landed", replace=False)
        return landed
    columns = {str(c): observed_type(df[c]) for c in df.columns}
    landed = Landed(
        dataset=dataset, load_id=load_id, source=str(src.resolve()), path=str(path), arrived_at=utcnow(),
        rows=len(df), schema_fingerprint=schema_fingerprint(columns), columns=columns, content_sha256=sha,
    )
    _land(df, landed)
    return landed


def _land(df: pd.DataFrame, landed: Landed) -> None:
    """Write the Parquet file and the meta_loads row together: the row commits only if the file is in place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(landed.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **landed.parquet_metadata()})
    try:
        pq.write_table(table, tmp)
        with connect() as con:
            ensure_meta_loads(con)
            try:
                with transaction(con):
                    _insert_load(con, landed, status="landed", replace=True)
                    os.replace(tmp, path)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
    finally:
        tmp.unlink(missing_ok=True)


def _insert_load(con: object, landed: Landed, *, status: str, replace: bool) -> None:
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    con.execute(  # type: ignore[attr-defined]
        f"{verb} INTO meta_loads (dataset, load_id, source, arrived_at, schema_fingerprint, rows, status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [landed.dataset, landed.load_id, landed.source, landed.arrived_at, landed.schema_fingerprint,
         landed.rows, status],
    )


def _record_load(landed: Landed, *, status: str, replace: bool) -> None:
    with connect() as con:
        ensure_meta_loads(con)
        _insert_load(con, landed, status=status, replace=replace)


def set_load_status(dataset: str, load_id: str, status: str, con: object | None = None) -> None:
    """Set a load's status in `meta_loads`: landed, accepted, accepted_unchecked, halted_schema,
    halted_checks or reference."""
    sql = "UPDATE meta_loads SET status = ? WHERE dataset = ? AND load_id = ?"
    if con is not None:
        ensure_meta_loads(con)
        con.execute(sql, [status, dataset, load_id])  # type: ignore[attr-defined]
        return
    with connect() as own:
        ensure_meta_loads(own)
        own.execute(sql, [status, dataset, load_id])


# --------------------------------------------------------------------------- reading back
def read_landed(dataset: str, load_id: str, *, columns: list[str] | None = None) -> tuple[pd.DataFrame, Landed]:
    """A landed batch and its load metadata, read back from the landing zone (for re-runs).

    `columns=[]` reads only the metadata. An unknown load id fails with the load ids that did land.
    """
    import pyarrow.parquet as pq

    path = landed_path(dataset, load_id)
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.parquet")) if path.parent.exists() else []
        raise UnknownNameError(f"load of {dataset}", load_id, known)
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()
            if k.startswith(META_PREFIX.encode())}

    def get(key: str) -> str:
        try:
            return meta[f"{META_PREFIX}{key}"]
        except KeyError:
            raise InputFileError(path, f"has no {META_PREFIX}{key} load metadata",
                                 hint="land batches with `ingest`, not by copying files") from None
    landed = Landed(
        dataset=get("dataset"), load_id=get("load_id"), source=get("source"), path=str(path),
        arrived_at=datetime.fromisoformat(get("arrived_at")), rows=int(get("rows")),
        schema_fingerprint=get("schema_fingerprint"), columns=json.loads(get("columns")),
        content_sha256=meta.get(f"{META_PREFIX}content_sha256", ""),
    )
    if columns == []:
        return pd.DataFrame(), landed
    return pd.read_parquet(path, columns=columns), landed


def list_loads(dataset: str | None = None) -> list[dict[str, object]]:
    """The rows of `meta_loads` (all datasets, or one), oldest first."""
    with connect() as con:
        ensure_meta_loads(con)
        q = "SELECT * FROM meta_loads" + (" WHERE dataset = ?" if dataset else "") + " ORDER BY arrived_at"
        cur = con.execute(q, [dataset] if dataset else [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --------------------------------------------------------------------------- reference tables
def ingest_reference_tables(names: tuple[str, ...] = REFERENCE_TABLES) -> dict[str, int]:
    """Load the demo's reference tables (airlines, airports, planes, weather) into `raw_<name>`.

    Each is conformed to its contract's types (e.g. weather.time_hour becomes a UTC timestamp) and tagged
    `_load_id = 'reference'`. Idempotent: a table already in the warehouse is left as it is. Returns each
    table's row count in the warehouse.
    """
    counts: dict[str, int] = {}
    with connect() as con:
        ensure_meta_loads(con)
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for name in names:
            table = f"raw_{name}"
            if table not in present:
                contract = load_contract(name)
                frame = conform_to_contract(load_table(name), contract)[contract.names]
                frame["_load_id"] = "reference"
                columns = {c: observed_type(frame[c]) for c in contract.names}
                con.register("_reference_frame", frame)
                try:
                    with transaction(con):
                        con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM _reference_frame')
                        con.execute(
                            "INSERT OR REPLACE INTO meta_loads VALUES (?, 'reference', ?, ?, ?, ?, 'reference')",
                            [name, str(_reference_source(name)), utcnow(), schema_fingerprint(columns), len(frame)],
                        )
                finally:
                    con.unregister("_reference_frame")
            counts[name] = int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])
    return counts


def _reference_source(name: str) -> Path:
    from flows.data import source_dir

    return source_dir() / f"{name}.csv"
