"""Reading a table file (CSV or Parquet) with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipewarden.errors import InputFileError

SUPPORTED = (".csv", ".parquet", ".pq")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (UTF-8) or Parquet file into a DataFrame.

    Raises InputFileError for a missing, empty, truncated or wrongly encoded file, or an unknown extension.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(p, "no such file", hint="check the path")
    if p.is_dir():
        raise InputFileError(p, "is a folder, not a table file", hint=f"pass one {'/'.join(SUPPORTED)} file")
    if p.stat().st_size == 0:
        raise InputFileError(p, "the file is empty (0 bytes)", hint="re-export the batch from its source")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        try:
            df = pd.read_csv(p, encoding="utf-8", low_memory=False)
        except UnicodeDecodeError as exc:
            raise InputFileError(
                p, f"is not UTF-8 (byte {exc.start}: {exc.reason})",
                hint="re-encode it, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8.csv`",
            ) from exc
        except pd.errors.EmptyDataError as exc:
            raise InputFileError(p, "has no columns or rows", hint="re-export the batch with a header row") from exc
        except pd.errors.ParserError as exc:
            raise InputFileError(p, f"is not valid CSV: {exc}", hint="check the delimiter and quoting") from exc
    elif suffix in (".parquet", ".pq"):
        import pyarrow as pa

        try:
            df = pd.read_parquet(p)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFileError(
                p, f"is not a readable Parquet file (truncated or corrupt: {exc})",
                hint="re-copy the file; its footer is missing or damaged",
            ) from exc
    else:
        raise InputFileError(p, f"unsupported file type {suffix or '(none)'!r}", hint=f"use one of {', '.join(SUPPORTED)}")
    if len(df.columns) == 0:
        raise InputFileError(p, "has no columns", hint="re-export the batch with a header row")
    return df
