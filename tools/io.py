"""Reading a table file (CSV or Parquet) with errors that name the file and the problem, and where landed batches
live in the batch storage (`settings.storage`: a local folder or any fsspec URL such as `s3://bucket/prefix`).

A table is read in one pass: `read_bytes` fetches the file's bytes once and `parse_table` parses those same
bytes, so a caller that also hashes them (ingest) hashes exactly what it parsed. A location is a local path or
an fsspec URL; both read the same way.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pandas as pd

from pipewarden.errors import InputFileError, UserError
from pipewarden.settings import get_settings

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

SUPPORTED = (".csv", ".parquet", ".pq")
LANDED_SUFFIX = ".parquet"


# --------------------------------------------------------------------------- locations
def is_url(location: str | Path) -> bool:
    """True for an fsspec URL (`s3://...`, `file://...`), false for a plain local path."""
    return "://" in str(location)


def filesystem(location: str | Path) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of a location and the location's path inside it."""
    from fsspec.core import url_to_fs

    if not is_url(location):
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), str(Path(location))
    return url_to_fs(str(location))


def landing_root() -> tuple[AbstractFileSystem, str]:
    """The batch storage's filesystem and its root path inside it."""
    return filesystem(get_settings().storage)


def _check_name(part: str, what: str) -> None:
    if not part or "/" in part or "\\" in part or part.startswith(".") or "://" in part:
        raise UserError(f"{what} {part!r} cannot name a file", hint="use letters, digits, '-' and '_'")


def landed_uri(dataset: str, load_id: str) -> str:
    """Where the batch `load_id` of `dataset` lands (or landed): `<storage>/<dataset>/<load_id>.parquet`.

    A local path when the storage is a local folder, else an fsspec URL (`s3://bucket/prefix/flights/x.parquet`).
    """
    _check_name(dataset, "dataset")
    _check_name(load_id, "load id")
    storage = get_settings().storage
    if is_url(storage):
        return f"{storage.rstrip('/')}/{dataset}/{load_id}{LANDED_SUFFIX}"
    return str(Path(storage) / dataset / f"{load_id}{LANDED_SUFFIX}")


def landed_load_ids(dataset: str) -> list[str]:
    """The load ids of `dataset` that landed, sorted (none for an unknown dataset)."""
    _check_name(dataset, "dataset")
    fs, root = landing_root()
    folder = f"{root.rstrip('/')}/{dataset}"
    fs.invalidate_cache(folder)  # another process may have landed batches since this client last listed
    found = fs.glob(f"{folder}/*{LANDED_SUFFIX}")
    return sorted(PurePosixPath(str(p)).stem for p in found)


def exists(location: str | Path) -> bool:
    """Whether a file (a local path or an fsspec URL) exists."""
    fs, path = filesystem(location)
    fs.invalidate_cache(path)  # ask the store, not a listing cached by this client
    return bool(fs.isfile(path))


# --------------------------------------------------------------------------- reading
def read_bytes(location: str | Path) -> bytes:
    """The whole content of a table file (a local path or an fsspec URL), read once.

    Raises InputFileError for a missing file, a folder, or an empty file.
    """
    fs, path = filesystem(location)
    fs.invalidate_cache(path)
    if fs.isdir(path):
        raise InputFileError(location, "is a folder, not a table file", hint=f"pass one {'/'.join(SUPPORTED)} file")
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise InputFileError(location, "no such file", hint="check the path") from None
    if not data:
        raise InputFileError(location, "the file is empty (0 bytes)", hint="re-export the batch from its source")
    return data


def parse_table(data: bytes, location: str | Path) -> pd.DataFrame:
    """Parse a table file's bytes, read from `location` (whose suffix says CSV or Parquet; errors name it)."""
    suffix = PurePosixPath(str(location)).suffix.lower()
    if suffix == ".csv":
        try:
            df = pd.read_csv(io.BytesIO(data), encoding="utf-8", low_memory=False)
        except UnicodeDecodeError as exc:
            raise InputFileError(
                location, f"is not UTF-8 (byte {exc.start}: {exc.reason})",
                hint="re-encode it, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8.csv`",
            ) from exc
        except pd.errors.EmptyDataError as exc:
            raise InputFileError(location, "has no columns or rows", hint="re-export the batch with a header row") from exc
        except pd.errors.ParserError as exc:
            raise InputFileError(location, f"is not valid CSV: {exc}", hint="check the delimiter and quoting") from exc
    elif suffix in (".parquet", ".pq"):
        import pyarrow as pa

        try:
            df = pd.read_parquet(io.BytesIO(data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFileError(
                location, f"is not a readable Parquet file (truncated or corrupt: {exc})",
                hint="re-copy the file; its footer is missing or damaged",
            ) from exc
    else:
        raise InputFileError(location, f"unsupported file type {suffix or '(none)'!r}",
                             hint=f"use one of {', '.join(SUPPORTED)}")
    if len(df.columns) == 0:
        raise InputFileError(location, "has no columns", hint="re-export the batch with a header row")
    return df


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (UTF-8) or Parquet file (a local path or an fsspec URL) into a DataFrame.

    Raises InputFileError for a missing, empty, truncated or wrongly encoded file, or an unknown extension.
    """
    return parse_table(read_bytes(path), path)
