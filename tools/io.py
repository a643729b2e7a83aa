"""Reading a table file (CSV or Parquet) with errors that name the file and the problem, and where landed batches
live in the batch storage (`settings.storage`: a local folder or any fsspec URL such as `s3://bucket/prefix`).

A table is read in one pass: `read_bytes` fetches the file's bytes once and `parse_table` parses those same
bytes, so a caller that also hashes them (ingest) hashes exactly what it parsed. A location is a local path or
an fsspec URL; both read the same way.

A readable file can still be a batch nothing should take as it is; `BatchRefused` (an `InputFileError`, exit 2)
names the file, the reason and what to do:

- `too_large`: bigger than `settings.max_batch_bytes` (`PIPEWARDEN_MAX_BATCH_BYTES`, else the project file's
  `[limits] max_batch_bytes`, else 512 MiB),
  checked from the file's size before a byte is read (`check_batch_size`; a streamed or pushed-down reader may
  call it with its own limit, or skip it);
- `duplicate_columns`: a column name twice in the header (pandas would rename the second to `name.1`);
- `nested_columns`: a struct, list or map column; a struct column the contract lists under `flatten`
  (`flatten: {address: address_}`) becomes one column per field (`address_city`, nested structs joined by `_`),
  anything else nested is refused (`flatten_nested`);
- `no_rows`: a header and no rows (an empty export is not "nothing happened");
- `mixed_types`: an in-memory batch with a column whose values have no one type (`1` and `"a"`), which cannot be
  stored (`arrow_table`).

The nested-column flattening is a few lines over Arrow's own `ChunkedArray.flatten` (which keeps a null struct's
fields null); no library does it under a contract's rule.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import pandas as pd

from pipewarden.errors import InputFileError, UserError
from pipewarden.settings import get_settings

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

SUPPORTED = (".csv", ".parquet", ".pq")
LANDED_SUFFIX = ".parquet"
Refusal = Literal["too_large", "duplicate_columns", "nested_columns", "no_rows", "mixed_types"]


class BatchRefused(InputFileError):
    """A readable batch that is not taken as it is: too large, a column name twice, nested columns without a
    flatten rule, or no rows. `reason` says which; `columns` names the columns at fault (if any). Exit 2."""

    def __init__(self, path: object, reason: Refusal, problem: str, *, hint: str,
                 columns: Iterable[str] = ()) -> None:
        super().__init__(path, problem, hint=hint)
        self.reason: Refusal = reason
        self.columns = list(columns)


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
def max_batch_bytes() -> int:
    """The largest batch file that is read, in bytes (`settings.max_batch_bytes`); 0 means no limit."""
    return int(get_settings().max_batch_bytes or 0)  # resolved at settings load: never None there


def check_batch_size(location: str | Path, limit: int | None = None, *, size: int | None = None) -> int:
    """The size in bytes of a batch file (a local path or an fsspec URL), refused (`BatchRefused`, reason
    `too_large`) when it is over `limit` (default `max_batch_bytes()`; 0: no limit). Reads no content; `size`
    skips the lookup when the caller knows it."""
    from pydantic import ByteSize

    if size is None:
        fs, path = filesystem(location)
        fs.invalidate_cache(path)
        try:
            size = int(fs.size(path))
        except FileNotFoundError:
            raise InputFileError(location, "no such file", hint="check the path") from None
    limit = max_batch_bytes() if limit is None else limit
    if limit and size > limit:
        raise BatchRefused(
            location, "too_large",
            f"is {ByteSize(size).human_readable()} ({size} bytes), over the {ByteSize(limit).human_readable()} "
            "batch size limit",
            hint=f"split it into smaller batches, or raise the limit (`[limits] max_batch_bytes = \"2GiB\"` in "
                 f"pipewarden.toml, or PIPEWARDEN_MAX_BATCH_BYTES={size}; 0 for none) on a machine with memory to "
                 "spare: reading a CSV takes several times its size in memory",
        )
    return size


def read_bytes(location: str | Path, *, limit: int | None = None) -> bytes:
    """The whole content of a table file (a local path or an fsspec URL), read once.

    Raises InputFileError for a missing file, a folder, or an empty file, and BatchRefused for a file over
    `limit` (default `max_batch_bytes()`; see `check_batch_size`), before reading it.
    """
    fs, path = filesystem(location)
    fs.invalidate_cache(path)
    if fs.isdir(path):
        raise InputFileError(location, "is a folder, not a table file", hint=f"pass one {'/'.join(SUPPORTED)} file")
    check_batch_size(location, limit)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise InputFileError(location, "no such file", hint="check the path") from None
    if not data:
        raise InputFileError(location, "the file is empty (0 bytes)", hint="re-export the batch from its source")
    check_batch_size(location, limit, size=len(data))  # it may have grown between the look and the read
    return data


def check_unique_columns(names: Iterable[object], location: str | Path) -> None:
    """Refuse (`BatchRefused`, reason `duplicate_columns`) a batch whose header names a column more than once."""
    seen: dict[str, int] = {}
    for name in names:
        seen[str(name)] = seen.get(str(name), 0) + 1
    twice = [name for name, n in seen.items() if n > 1 and name != ""]
    if twice:
        shown = ", ".join(f"{name!r} ({seen[name]} times)" for name in twice)
        raise BatchRefused(
            location, "duplicate_columns", f"names a column more than once: {shown}", columns=twice,
            hint="give every column its own name in the export (which of the copies is the real one cannot be "
                 "guessed), then run it again",
        )


def check_has_rows(rows: int, location: str | Path, *, header: bool) -> None:
    """Refuse (`BatchRefused`, reason `no_rows`) a batch with columns and no rows."""
    if rows == 0:
        raise BatchRefused(
            location, "no_rows", "has a header and no rows" if header else "has columns and no rows",
            hint="an empty batch usually means the export failed: re-export it from its source (and do not run "
                 "the pipeline for a period with no data)",
        )


def _csv_header(data: bytes) -> list[str]:
    """The header row of CSV bytes as the csv module reads it (pandas' dialect: comma, double quotes)."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", errors="replace", newline="")
    return next(csv.reader(text), [])


def _is_nested(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_nested(t))


def _type_text(t: pa.DataType, width: int = 60) -> str:
    text = str(t)
    return text if len(text) <= width else text[: width - 3] + "..."


def flatten_nested(table: pa.Table, flatten: Mapping[str, str] | None, location: str | Path) -> pa.Table:
    """The table with each struct column named in `flatten` (column -> prefix) replaced by one column per field
    (`prefix + field`; a struct inside joins its fields with `_`). Any other nested column (a struct without a
    rule, a list, a map, or one inside a flattened struct) is refused with `BatchRefused` (`nested_columns`),
    naming each. A table with no nested column comes back as it is."""
    import pyarrow as pa

    if not any(_is_nested(f.type) for f in table.schema):
        return table
    rules = dict(flatten or {})
    names: list[str] = []
    arrays: list[pa.ChunkedArray] = []
    refused: list[tuple[str, pa.DataType]] = []

    def add(name: str, path: str, column: pa.ChunkedArray, prefix: str | None) -> None:
        if not _is_nested(column.type):
            names.append(name)
            arrays.append(column)
        elif pa.types.is_struct(column.type) and prefix is not None:
            for field, child in zip(column.type, column.flatten(), strict=True):
                add(f"{prefix}{field.name}", f"{path}.{field.name}", child, f"{prefix}{field.name}_")
        else:
            refused.append((path, column.type))

    for field, column in zip(table.schema, table.columns, strict=True):
        add(field.name, field.name, column, rules.get(field.name))
    if refused:
        structs = [path for path, t in refused if pa.types.is_struct(t) and "." not in path]
        how = []
        if structs:
            how.append(f"flatten a struct column in the contract (`flatten: {{{structs[0]}: {structs[0]}_}}` "
                       f"reads {structs[0]}.<field> as {structs[0]}_<field>)")
        if len(structs) < len(refused):
            how.append("export a list or map column as text (JSON), or leave it out of the batch")
        raise BatchRefused(
            location, "nested_columns",
            "has nested columns the contract does not flatten: "
            + ", ".join(f"{path} ({_type_text(t)})" for path, t in refused),
            columns=[path for path, _ in refused], hint="; or ".join(how),
        )
    check_unique_columns(names, location)  # a flattened field may take a name the batch already has
    return pa.Table.from_arrays(arrays, names=names)


def arrow_table(frame: pd.DataFrame, location: str | Path) -> pa.Table:
    """A DataFrame as an Arrow table (no index), or `BatchRefused` (`mixed_types`) naming the column whose values
    have no one type."""
    import re

    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        text = "; ".join(str(a) for a in exc.args)
        named = re.search(r"Conversion failed for column (.+?) with type", text)
        raise BatchRefused(
            location, "mixed_types", f"has a column whose values are not of one type: {text}",
            columns=[named.group(1)] if named else [],
            hint="give each column values of one type before guarding it (e.g. `df[col].astype(str)` for text)",
        ) from exc


def parse_table(data: bytes, location: str | Path, *, flatten: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Parse a table file's bytes, read from `location` (whose suffix says CSV or Parquet; errors name it).

    `flatten` (the contract's rule: struct column -> prefix) flattens nested Parquet columns. Raises
    InputFileError for a file that cannot be parsed and BatchRefused for a column named twice, a nested column
    without a rule, or no rows.
    """
    suffix = PurePosixPath(str(location)).suffix.lower()
    if suffix == ".csv":
        check_unique_columns(_csv_header(data), location)
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
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(io.BytesIO(data))
            check_unique_columns(parquet.schema_arrow.names, location)
            table = parquet.read()
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFileError(
                location, f"is not a readable Parquet file (truncated or corrupt: {exc})",
                hint="re-copy the file; its footer is missing or damaged",
            ) from exc
        df = flatten_nested(table, flatten, location).to_pandas()
    else:
        raise InputFileError(location, f"unsupported file type {suffix or '(none)'!r}",
                             hint=f"use one of {', '.join(SUPPORTED)}")
    if len(df.columns) == 0:
        raise InputFileError(location, "has no columns", hint="re-export the batch with a header row")
    check_has_rows(len(df), location, header=suffix == ".csv")
    return df


def read_table(path: str | Path, *, flatten: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read a CSV (UTF-8) or Parquet file (a local path or an fsspec URL) into a DataFrame.

    Raises InputFileError for a missing, empty, truncated or wrongly encoded file, or an unknown extension, and
    BatchRefused for a batch not taken as it is (see the module docstring). `flatten`: see `parse_table`.
    """
    return parse_table(read_bytes(path), path, flatten=flatten)
