"""Cell-level error detection on one table, with or without its data contract (`pipewarden quality scan`).

`scan_frame(frame, contract=None)` returns a `ScanReport`: one `CellFlag` per suspicious cell, `{row, column,
kind, reason, value}`, where `row` is the 0-based position in the file (never the DataFrame's index, which a
Parquet file may carry) and `column` is None for a whole-row finding (an exact duplicate row). Each detector
below is one error type behind the small `Detector` protocol; `DETECTORS` is their order of precedence (missing,
typo, format, domain/range, outlier, dependency, duplicate): a cell flagged by an earlier detector is not flagged
again by a later one, so each cell carries its best explanation ("aBrolo" is a typo of "Barolo" before it is a
break of the column's `Aa` pattern).

- `missing`: missing values in disguise ("N/A", "-", "?", "null", "none", ...) and clear numeric or date
  sentinels (9999-style values far above every other value, -1 in a column otherwise >= 0, 1900-01-01 /
  9999-12-31). Empty cells (an empty CSV field, a Parquet null) are flagged in columns that are otherwise filled
  (at most `EMPTY_RARE` of them empty); with a contract, in columns declared `nullable: false`.
- `format`: a value that does not parse as its column's type (declared by the contract, else inferred when at
  least 95% of the values parse), or breaks the column's dominant pattern: a well-known one (e-mail, URL, UUID)
  or a character-class signature (digits counted, letter runs collapsed: "02134" is `99999`, "AB-12" is `A-99`)
  that covers at least 95% of the values, tried specific first, then with alphanumeric runs merged.
- `domain` / `range` (contract only): a value outside the contract's `allowed` set (and not a near miss of one,
  see `typo`), longer than `max_length`, or outside `min`/`max`.
- `typo`: in a low-cardinality column (its frequent values cover most rows), a rare value within a small edit
  distance (or equal up to case and spaces) of a value at least ten times more frequent. A value with digits is
  never a typo (a code's changes are format questions); one under four characters only by case and spacing
  ("UA" and "US" are two carriers). With a contract, the `allowed` values are the reference.
- `outlier`: numeric and date values far from the column's centre by a robust z-score (median and MAD, IQR when
  the MAD is zero), on a log scale when the column is positive and right-skewed; beyond 6, and beyond twice the
  column's own 99th-percentile z, so a naturally heavy tail (flight delays) is not a run of outliers.
- `dependency`: approximate functional dependencies A -> B discovered between categorical columns (B is what A
  says in at least 95% of the rows, and A explains most of B's spread); the B cell of a minority row in an
  otherwise consistent group is flagged ("zip 02134 is Boston in 48 of 50 rows"). A violation whose determinant
  cell is itself flagged by another dependency is left out (the determinant is the suspect).
- `duplicate`: exact duplicate rows (every later copy, column None; only in a table whose rows rarely repeat, at
  most `DUPLICATE_RARE` of them, since a narrow table of categories repeats by nature), and duplicate keys: the contract's `unique`
  keys, or without a contract a column named like an identifier (`id`, `*_id`, `uuid`, `key`) that is otherwise
  unique.

A CSV is read as text (`read_raw`: no value is turned into a null on the way in, so "N/A" stays visible); a
Parquet file keeps its types. Everything is vectorized pandas/numpy over a column's distinct values where it can
be; the only hand-written algorithm is the bounded edit distance of `typo`, run on a column's rare x frequent
values only (rapidfuzz is not a dependency and the pairs are few). Read-only: nothing is written.

Public names: `ErrorKind`, `CellFlag`, `ScanReport`, `ScanTable`, `ScanColumn`, `Hits`, `Detector`, `DETECTORS`,
`MISSING_TOKENS`, `read_raw`, `prepare`, `scan_frame`, `scan_file`, `signature`, `edit_distance`.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Literal, NamedTuple, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from pipewarden.errors import InputFileError
from pipewarden.policies.contract import ColumnContract, Contract
from pipewarden.progress import NullReporter, Reporter

ErrorKind = Literal["missing", "format", "domain", "range", "typo", "outlier", "dependency", "duplicate"]
ColumnKind = Literal["numeric", "code", "date", "boolean", "text"]

MISSING_TOKENS: frozenset[str] = frozenset({
    "", "n/a", "na", "n.a.", "#n/a", "-", "--", "---", "?", "??", "null", "none", "nil", "nan", "missing",
    "undefined", "not available", ".",
})
DATE_SENTINELS: frozenset[str] = frozenset({"1900-01-01", "9999-12-31", "0001-01-01", "1899-12-30"})
DATE_FORMATS: tuple[str, ...] = ("ISO8601", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y", "%m-%d-%Y")
KNOWN_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an e-mail address", re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")),
    ("a URL", re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)),
    ("a UUID", re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)),
)
ID_NAME = re.compile(r"(^|_)(id|uuid|key)$|[a-z]Id$|ID$", re.IGNORECASE)

TYPE_SHARE = 0.95  # share of values that must parse for a column to be typed (number, date) without a contract
PATTERN_COVER = 0.95  # share of values the dominant signatures must cover
PATTERN_MAJOR = 0.05  # a signature this frequent is one of the dominant ones
PATTERN_RARE = 0.01  # a signature at most this frequent breaks the pattern
EMPTY_RARE = 0.05  # without a contract, empty cells are flagged in columns with at most this share of them
DUPLICATE_RARE = 0.05  # exact duplicate rows are flagged in tables where at most this share of rows repeat
ROBUST_Z = 6.0
TAIL_FACTOR = 2.0  # an outlier's robust z-score
FD_HOLDS = 0.95  # share of rows in which an approximate dependency A -> B must hold
MAX_FD_COLUMNS = 40
DENSE_PAIRS = 4_000_000  # (A, B) value pairs counted in a dense table, above it by sorting
TYPO_MAX_VALUES = 5_000  # a column with more distinct values is not checked for typos (without a contract)
TYPO_COMPARISONS = 200_000  # rare x frequent value pairs compared per column, at most


# --------------------------------------------------------------------------- results
class CellFlag(BaseModel):
    """One suspicious cell: its 0-based row in the file, its column (None: the whole row), the error type, why,
    and the value as text."""

    model_config = ConfigDict(frozen=True)
    row: int
    column: str | None
    kind: ErrorKind
    reason: str
    value: str | None = None


class ScanReport(BaseModel):
    """What `scan_frame` found: every flagged cell in row order, and how many of each kind."""

    source: str = ""
    dataset: str | None = None
    rows: int
    columns: list[str]
    column_kinds: dict[str, ColumnKind]
    flags: list[CellFlag]
    counts: dict[str, int]


# --------------------------------------------------------------------------- the prepared table
@dataclass
class ScanColumn:
    """One column as the detectors see it: its text, which cells are missing, its kind and parsed values."""

    name: str
    codes: np.ndarray  # int: each cell's index into `uniques` (`pd.factorize`; per-value work runs on `uniques`)
    uniques: np.ndarray  # object array of the column's distinct values as text ("" for a null)
    null: np.ndarray  # bool: a real null (Parquet) or an empty CSV cell
    kind: ColumnKind
    numbers: np.ndarray | None = None  # float, NaN where the value is not a number (numeric and code columns)
    dates: np.ndarray | None = None  # float days since 1970-01-01, NaN where not a date (date columns)
    date_format: str | None = None
    contract: ColumnContract | None = None
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # set by the missing detector

    @property
    def present(self) -> np.ndarray:
        return ~self.missing

    @property
    def text(self) -> np.ndarray:
        """Each cell's text (object array)."""
        return self.uniques[self.codes]

    def cells(self, per_value: np.ndarray) -> np.ndarray:
        """A per-distinct-value array spread to the cells."""
        return per_value[self.codes]

    def isin(self, values: Iterable[str]) -> np.ndarray:
        """Cells whose text is one of `values`."""
        return self.cells(_isin(self.uniques, values))

    @cached_property
    def norm(self) -> np.ndarray:
        """The distinct values stripped and lower-cased."""
        return np.array([v.strip().lower() for v in self.uniques], dtype=object)


@dataclass
class ScanTable:
    """The table being scanned, prepared once for every detector. `taken[col]` marks cells already flagged."""

    columns: dict[str, ScanColumn]
    rows: int
    contract: Contract | None = None
    taken: dict[str, np.ndarray] = field(default_factory=dict)


class Hits(NamedTuple):
    """Flagged cells of one column (None: whole rows): positions and one reason each (or one for all)."""

    column: str | None
    rows: np.ndarray
    reasons: Sequence[str] | str


class Detector(Protocol):
    """One error type: looks at the prepared table and yields the cells it flags."""

    kind: ErrorKind

    def detect(self, table: ScanTable) -> Iterable[Hits]: ...


# --------------------------------------------------------------------------- reading and preparing
def read_raw(path: str | Path) -> pd.DataFrame:
    """Read a CSV as text (every cell a string, nothing turned into a null) or a Parquet file with its types.
    Errors name the file (`tools.io`'s size limit, encoding, duplicate columns, no rows)."""
    from pipewarden.tools.io import check_has_rows, check_unique_columns, parse_table, read_bytes

    data = read_bytes(path)
    suffix = PurePosixPath(str(path)).suffix.lower()
    if suffix != ".csv":
        return parse_table(data, path).reset_index(drop=True)
    import csv

    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is not part of the first column's name
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"is not UTF-8 (byte {exc.start}: {exc.reason})",
                             hint="re-encode it, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8.csv`") from exc
    header = next(csv.reader(io.StringIO(text[: text.find("\n") + 1 or None])), [])
    if not header:
        raise InputFileError(path, "has no columns or rows", hint="re-export the table with a header row")
    check_unique_columns(header, path)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as exc:
        raise InputFileError(path, f"is not valid CSV: {exc}", hint="check the delimiter and quoting") from exc
    check_has_rows(len(df), path, header=True)
    return df


def _factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes, distinct values as text ("" for a null) and the null mask of a column."""
    null = series.isna().to_numpy()
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if pd.api.types.is_float_dtype(series.dtype):
        texts = [_fmt_float(v) for v in np.asarray(uniques, dtype=float)]
    else:
        texts = [str(v) for v in np.asarray(uniques, dtype=object)]
    uniq = np.array([*texts, ""], dtype=object)
    codes = np.where(codes < 0, len(uniq) - 1, codes)
    return codes, uniq, null


def _fmt_float(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _parse_numbers(uniques: np.ndarray) -> np.ndarray:
    """Each distinct value as a number (NaN where it is not one)."""
    return pd.to_numeric(pd.Series(uniques, dtype=object).str.strip(), errors="coerce").to_numpy(dtype=float)


def _parse_dates(uniques: np.ndarray, fmt: str | None = None) -> tuple[np.ndarray, str | None]:
    """Each distinct value as days since 1970 (NaN where not a date) in the format most values follow (or
    `fmt`), and that format."""
    s = pd.Series(uniques, dtype=object).str.strip()
    best, best_fmt, best_n = None, None, -1
    for f in (fmt,) if fmt else DATE_FORMATS:
        try:
            parsed = pd.to_datetime(s, format=f, errors="coerce", utc=True)
        except (ValueError, TypeError):
            continue
        n = int(parsed.notna().sum())
        if n > best_n:
            best, best_fmt, best_n = parsed, f, n
    if best is None:
        return np.full(len(uniques), np.nan), None
    days = (best - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
    return days.to_numpy(dtype=float), best_fmt


def _declared_kind(c: ColumnContract) -> ColumnKind:
    return {"integer": "numeric", "float": "numeric", "timestamp": "date", "boolean": "boolean"}.get(c.type, "text")


def _column(name: str, series: pd.Series, contract: ColumnContract | None) -> ScanColumn:
    codes, uniques, null = _factorize(series)
    col = ScanColumn(name=name, codes=codes, uniques=uniques, null=null, kind="text", contract=contract)
    blank_u = _isin(col.norm, MISSING_TOKENS)
    weights = np.bincount(codes, weights=~null, minlength=len(uniques))
    live = (~blank_u) & (weights > 0)  # distinct values that are present somewhere
    n_present = max(float(weights[live].sum()), 1.0)
    kind: ColumnKind | None = _declared_kind(contract) if contract is not None else None
    if pd.api.types.is_bool_dtype(series.dtype):
        kind = "boolean"
    if kind in (None, "numeric"):
        sample = uniques[live][:200]
        numeric_like = len(sample) > 0 and np.isfinite(_parse_numbers(sample)).mean() >= 0.5
        numbers_u = _parse_numbers(uniques) if kind == "numeric" or numeric_like else np.full(len(uniques), np.nan)
        if kind == "numeric" or weights[live & np.isfinite(numbers_u)].sum() >= TYPE_SHARE * n_present:
            col.numbers, kind = numbers_u[codes], "numeric"
            if contract is None and _is_code(uniques[live & np.isfinite(numbers_u)]):
                kind = "code"
    if kind in (None, "date"):
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            stamps = pd.to_datetime(series, utc=True)
            days = ((stamps - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)).to_numpy(dtype=float)
            fmt: str | None = "ISO8601"
        elif kind == "date" or _looks_like_dates(uniques[live]):
            days_u, fmt = _parse_dates(uniques)
            days = days_u[codes]
        else:
            days, fmt = np.full(len(codes), np.nan), None
        present = ~null & ~blank_u[codes]
        if kind == "date" or np.isfinite(days[present]).sum() >= TYPE_SHARE * max(int(present.sum()), 1):
            col.dates, col.date_format, kind = days, fmt, "date"
    col.kind = kind or "text"
    return col


def _is_code(values: np.ndarray) -> bool:
    """Integers written with a fixed number of digits (zip codes, account numbers): a pattern, not a quantity."""
    if len(values) == 0:
        return False
    s = pd.Series(values.astype(str)).str.strip()
    if not s.str.fullmatch(r"\d+").all():
        return False
    lengths = s.str.len()
    width = int(lengths.mode().iloc[0])
    leading_zero = (s.str.len() > 1) & s.str.startswith("0")
    return (width >= 4 and (lengths == width).mean() >= 0.98) or bool(leading_zero.mean() >= 0.02)


def _looks_like_dates(values: np.ndarray) -> bool:
    sample = pd.Series(values[:200].astype(str))
    return bool(len(sample)) and bool(sample.str.contains(r"^\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}", regex=True).mean() >= 0.5)


def prepare(frame: pd.DataFrame, contract: Contract | None = None) -> ScanTable:
    """The table as the detectors see it (column kinds inferred, or declared by the contract)."""
    declared = {c.name: c for c in contract.columns} if contract is not None else {}
    frame = frame.reset_index(drop=True)
    columns = {str(name): _column(str(name), frame[name], declared.get(str(name))) for name in frame.columns}
    return ScanTable(columns=columns, rows=len(frame), contract=contract,
                     taken={name: np.zeros(len(frame), dtype=bool) for name in columns})


# --------------------------------------------------------------------------- helpers
def signature(values: pd.Series, level: int = 1) -> pd.Series:
    """A value's character-class signature. Level 1: each digit is `9` (so the count of digits shows), a run of
    upper-case letters `A`, of lower-case letters `a`, other characters as they are ("AB-0123" -> `A-9999`).
    Level 2: every run of letters and digits is `w` ("john.smith42@x.org" -> `w.w@w.w`)."""
    s = values.astype(str)
    if level == 1:
        return s.str.replace(r"\d", "9", regex=True).str.replace(r"[A-Z]+", "A", regex=True) \
            .str.replace(r"[a-z]+", "a", regex=True).str.replace(r"\s+", " ", regex=True)
    return s.str.replace(r"[A-Za-z0-9]+", "w", regex=True).str.replace(r"\s+", " ", regex=True)


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Optimal-string-alignment distance (a transposition counts one), stopping at `limit` + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _robust_z(x: np.ndarray) -> tuple[np.ndarray, float]:
    """|x - median| / robust spread (1.4826 MAD, else IQR / 1.349, else the mean absolute deviation)."""
    med = float(np.median(x))
    dev = np.abs(x - med)
    scale = 1.4826 * float(np.median(dev))
    if scale == 0:
        q1, q3 = np.percentile(x, [25, 75])
        scale = float(q3 - q1) / 1.349
    if scale == 0:
        scale = 1.2533 * float(dev.mean())
    if scale == 0:
        return np.zeros_like(x), med
    return dev / scale, med


def _isin(values: np.ndarray, members: Iterable[object]) -> np.ndarray:
    """`np.isin` for object arrays of text, by hashing (numpy sorts object arrays, which is slow)."""
    return pd.Series(values, dtype=object).isin(list(members)).to_numpy(dtype=bool)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


# --------------------------------------------------------------------------- detectors
class MissingValues:
    """Missing values in disguise, real nulls where they should not be, and clear sentinels."""

    kind: ErrorKind = "missing"

    def detect(self, table: ScanTable) -> Iterable[Hits]:
        for col in table.columns.values():
            norm = col.norm
            token_u = _isin(norm, MISSING_TOKENS) & (norm != "")
            if col.contract is not None and col.contract.allowed:
                token_u &= ~_isin(norm, [a.strip().lower() for a in col.contract.allowed])
            empty = col.null | col.cells(norm == "")
            token = col.cells(token_u) & ~empty
            # without a contract an empty cell is an error where the column is nearly always filled
            flag_empty = (empty.mean() <= EMPTY_RARE) if col.contract is None else not col.contract.nullable
            col.missing = token | empty
            empty_reason = "missing value (empty)" if col.contract is None else \
                "missing value in a column the contract declares not nullable"
            sentinel_u, why_u = self._sentinels(col)
            reason_u = why_u
            for i in np.flatnonzero(token_u):
                reason_u[i] = f"missing value in disguise: {col.uniques[i].strip()!r}"
            sentinel = col.cells(sentinel_u) & ~col.missing
            col.missing |= sentinel
            hits = token | (empty & flag_empty) | sentinel
            rows = np.flatnonzero(hits)
            if len(rows):
                reasons = np.where(empty[rows], empty_reason, reason_u[col.codes[rows]])
                yield Hits(col.name, rows, list(reasons))

    @staticmethod
    def _sentinels(col: ScanColumn) -> tuple[np.ndarray, np.ndarray]:
        """Per distinct value: is it a clear sentinel, and why."""
        k = len(col.uniques)
        mask, why = np.zeros(k, dtype=bool), np.full(k, "", dtype=object)
        ok_cells = ~col.missing
        if col.kind == "numeric" and col.numbers is not None:
            x = _parse_numbers(col.uniques)
            finite = np.isfinite(x)
            whole = finite & (np.abs(np.nan_to_num(x)) >= 99) & (np.nan_to_num(x) == np.round(np.nan_to_num(x)))
            nines = np.zeros(k, dtype=bool)
            digits = [str(int(abs(v))) for v in x[whole]]
            nines[np.flatnonzero(whole)[[d.strip("9") == "" for d in digits]]] = True
            cell_x = col.numbers
            usable = ok_cells & np.isfinite(cell_x) & ~col.cells(nines) & (cell_x != -1)
            others = cell_x[usable]
            if len(others) >= 10:
                hi, lo = np.percentile(others, [99, 1])
                big = nines & (((x > 0) & (x > 2 * max(hi, 0) + 1)) | ((x < 0) & (lo >= 0)))
                neg1 = finite & (x == -1) & (others.min() >= 0)
                mask = big | neg1
        elif col.kind == "date" and col.dates is not None:
            mask = np.array([v.strip()[:10] in DATE_SENTINELS for v in col.uniques], dtype=bool)
        for i in np.flatnonzero(mask):
            what = "the placeholder date" if col.kind == "date" else "the sentinel"
            why[i] = f"missing value in disguise: {what} {col.uniques[i].strip()} lies outside every other value"
        return mask, why


class TypeAndPattern:
    """A value that is not of its column's type, or breaks the column's dominant pattern."""

    kind: ErrorKind = "format"

    def detect(self, table: ScanTable) -> Iterable[Hits]:
        for col in table.columns.values():
            present = col.present & ~table.taken[col.name]
            if not present.any():
                continue
            declared = f" (the contract's type {col.contract.type})" if col.contract is not None else ""
            if col.kind in ("numeric", "code") and col.numbers is not None:
                bad = present & ~np.isfinite(col.numbers)
                if col.contract is not None and col.contract.type == "integer":
                    bad |= present & np.isfinite(col.numbers) & (col.numbers != np.round(col.numbers))
                if bad.any():
                    what = "digits like the column's codes" if col.kind == "code" else "a number like the column's values"
                    yield Hits(col.name, np.flatnonzero(bad), f"not {what}{declared}")
                    present &= ~bad
            if col.kind == "date" and col.dates is not None:
                bad = present & ~np.isfinite(col.dates)
                if bad.any():
                    like = "" if col.date_format in (None, "ISO8601") else f" ({col.date_format})"
                    yield Hits(col.name, np.flatnonzero(bad), f"not a date in the column's format{like}{declared}")
                    present &= ~bad
            if col.kind == "boolean" and col.contract is not None:
                ok = col.cells(_isin(col.norm, ["true", "false", "0", "1", "yes", "no", "t", "f"]))
                bad = present & ~ok
                if bad.any():
                    yield Hits(col.name, np.flatnonzero(bad), f"not a boolean{declared}")
                    present &= ~bad
            if col.kind in ("text", "code", "date"):
                yield from self._pattern(col, present)

    @staticmethod
    def _pattern(col: ScanColumn, present: np.ndarray) -> Iterable[Hits]:
        counts = np.bincount(col.codes[present], minlength=len(col.uniques))
        live = np.flatnonzero(counts)
        if len(live) == 0:
            return
        uniq = pd.Series(col.uniques[live], dtype=object)
        weights = counts[live]
        total = weights.sum()

        def flag(bad_live: np.ndarray, reason: str) -> Hits:
            bad_u = np.zeros(len(col.uniques), dtype=bool)
            bad_u[live[bad_live]] = True
            return Hits(col.name, np.flatnonzero(present & col.cells(bad_u)), reason)

        stripped = uniq.str.strip()
        for label, pattern in KNOWN_PATTERNS:
            match = stripped.str.match(pattern).to_numpy(dtype=bool)
            if weights[match].sum() >= PATTERN_COVER * total:
                if not match.all():
                    yield flag(~match, f"not {label}, as {weights[match].sum() / total:.0%} of the column is")
                return
        spaced = weights[stripped.str.contains(" ", regex=False).to_numpy(dtype=bool)].sum() / total
        if col.kind == "text" and spaced > 0.2:
            return  # free text (names, addresses): no single pattern to hold it to
        for level in (1, 2):
            sigs = signature(stripped, level).to_numpy(dtype=object)
            count = pd.Series(weights).groupby(sigs).sum()
            share = count / total
            major = share[(share >= PATTERN_MAJOR) & (count >= 3)]
            if major.sum() < PATTERN_COVER:
                continue
            rare = share[count <= max(1.0, PATTERN_RARE * total)].index
            if level == 1:
                # numbers of varying width inside a value ("anna7@", "anna42@"): a width is no pattern to hold to
                widths = pd.Series(major.index).str.replace(r"9+", "9", regex=True).value_counts()
                varying = set(widths[widths >= 2].index)
                rare = [r for r in rare if re.sub(r"9+", "9", r) not in varying]
            if len(rare) == 0:
                return
            shown = ", ".join(f"{s!r}" for s in major.sort_values(ascending=False).index[:3])
            yield flag(_isin(sigs, rare), f"breaks the column's pattern ({shown} cover {major.sum():.0%} "
                                                  "of values)")
            return


class ContractRules:
    """Values outside the contract's allowed set, length or bounds (only with a contract)."""

    kind: ErrorKind = "domain"

    def detect(self, table: ScanTable) -> Iterable[Hits]:
        for col in table.columns.values():
            c = col.contract
            if c is None:
                continue
            present = col.present & ~table.taken[col.name]
            if c.allowed is not None:
                near = _near_allowed(col, present, c.allowed)
                bad = present & ~col.isin(c.allowed) & ~near
                if bad.any():
                    yield Hits(col.name, np.flatnonzero(bad),
                               f"not one of the contract's allowed values ({', '.join(c.allowed[:6])})")
                    present &= ~bad
            if c.max_length is not None:
                bad = present & col.cells(np.array([len(v) > c.max_length for v in col.uniques], dtype=bool))
                if bad.any():
                    yield Hits(col.name, np.flatnonzero(bad), f"longer than the contract's max_length {c.max_length}")
                    present &= ~bad
            if col.numbers is not None and (c.min is not None or c.max is not None):
                x = col.numbers
                low = present & np.isfinite(x) & (x < c.min) if c.min is not None else np.zeros_like(present)
                high = present & np.isfinite(x) & (x > c.max) if c.max is not None else np.zeros_like(present)
                if low.any():
                    yield RangeHits(col.name, np.flatnonzero(low), f"below the contract's min {_fmt(c.min or 0)}")
                if high.any():
                    yield RangeHits(col.name, np.flatnonzero(high), f"above the contract's max {_fmt(c.max or 0)}")


class RangeHits(Hits):
    """Hits of the contract's bounds: reported as kind `range`."""


def _near_allowed(col: ScanColumn, present: np.ndarray, allowed: list[str]) -> np.ndarray:
    """Cells whose value is a near miss of an allowed value (left to the typo detector)."""
    live = np.flatnonzero(np.bincount(col.codes[present], minlength=len(col.uniques)))
    near_u = np.zeros(len(col.uniques), dtype=bool)
    for i in live:
        v = col.uniques[i]
        near_u[i] = v not in allowed and _closest(v, allowed) is not None
    return col.cells(near_u)


def _closest(value: str, candidates: Iterable[str]) -> str | None:
    """The candidate `value` is most plausibly a typo of: equal up to case and spaces, or within a small edit
    distance (none under 4 characters, 1 up to 5, 2 for longer ones)."""
    key = " ".join(value.split()).casefold()
    if any(ch.isdigit() for ch in key):
        return None  # codes and numbers: a changed digit or letter case is a format question, not a typo
    limit = 0 if len(key) < 4 else 1 if len(key) <= 5 else 2  # short codes one letter apart are other codes
    best, best_d = None, limit + 1
    for cand in candidates:
        ck = " ".join(cand.split()).casefold()
        if ck == key and key:
            return cand
        if limit == 0:
            continue
        d = edit_distance(key, ck, limit)
        if d < best_d:
            best, best_d = cand, d
    return best


class Typos:
    """Rare values a small edit away from a value at least ten times more frequent in a low-cardinality column."""

    kind: ErrorKind = "typo"

    def detect(self, table: ScanTable) -> Iterable[Hits]:
        for col in table.columns.values():
            if col.kind not in ("text", "code") and not (col.contract and col.contract.allowed):
                continue
            if len(col.uniques) > max(TYPO_MAX_VALUES, 0.2 * table.rows) and not (col.contract and col.contract.allowed):
                continue  # many distinct values: not a categorical column
            present = col.present & ~table.taken[col.name]
            counts = pd.Series(np.bincount(col.codes[col.present], minlength=len(col.uniques)), index=col.uniques)
            counts = counts[counts > 0].sort_values(ascending=False)
            if counts.empty:
                continue
            allowed = col.contract.allowed if col.contract is not None and col.contract.allowed else None
            if allowed is not None:
                targets = pd.Series({a: max(int(counts.get(a, 0)), 1) for a in allowed})
                candidates = counts[~counts.index.isin(allowed)]
                ratio = 0.0
            else:
                floor = max(3, int(0.002 * table.rows))
                targets = counts[counts >= floor]
                if targets.empty or targets.sum() < 0.8 * counts.sum() or len(targets) > 300:
                    continue  # not a low-cardinality column
                candidates = counts[counts * 10 <= targets.iloc[0]]
                ratio = 10.0
            budget = TYPO_COMPARISONS // max(len(targets), 1)
            found: dict[str, str] = {}
            for value, n in candidates.iloc[::-1].iloc[:budget].items():
                target = _closest(str(value), (f for f, m in targets.items() if m >= ratio * n and f != value))
                if target is not None:
                    found[str(value)] = target
            if not found:
                continue
            rows = np.flatnonzero(present & col.isin(found))
            yield Hits(col.name, rows, [f"looks like a typo of {found[v]!r}" for v in col.uniques[col.codes[rows]]])


class Outliers:
    """Numeric and date values far from the column's centre (robust z-score; log scale when right-skewed)."""

    kind: ErrorKind = "outlier"

    def detect(self, table: ScanTable) -> Iterable[Hits]:
        for col in table.columns.values():
            if col.kind == "numeric" and col.numbers is not None:
                x, unit = col.numbers, ""
            elif col.kind == "date" and col.dates is not None:
                x, unit = col.dates, " (dates)"
            else:
                continue
            ok = col.present & np.isfinite(x)
            values = x[ok]
            if len(values) < 20 or len(np.unique(values)) < 3:
                continue
            scale = ""
            z, _ = _robust_z(values)
            positive = values > 0
            if col.kind == "numeric" and positive.mean() >= 0.99 and _right_skewed(values[positive]):
                z_log, _ = _robust_z(np.log(values[positive]))
                z[positive], scale = z_log, " on a log scale"
            # a heavy tail (delays, amounts) is the column's nature, not a run of errors: beyond the usual
            # ROBUST_Z, a value must also be TAIL_FACTOR times as far out as the column's 99th percentile
            far = z > max(ROBUST_Z, TAIL_FACTOR * float(np.percentile(z, 99)))
            if not far.any():
                continue
            med = float(np.median(x[ok]))
            center = _fmt(med) if col.kind == "numeric" else str(pd.Timestamp(med, unit="D").date())
            rows = np.flatnonzero(ok)[far]
            rows_free = rows[~table.taken[col.name][rows]]
            yield Hits(col.name, rows_free, [f"far from the column's typical values{unit}{scale} (median {center}, "
                                             f"robust z {zz:.0f})" for zz in z[far][~table.taken[col.name][rows]]])


def _right_skewed(values: np.ndarray) -> bool:
    """Quantile skewness (5%, 50%, 95%) clearly positive, and smaller in size on a log scale."""
    def skew(v: np.ndarray) -> float:
        q05, q50, q95 = np.percentile(v, [5, 50, 95])
        return float((q95 + q05 - 2 * q50) / (q95 - q05)) if q95 > q05 else 0.0

    raw = skew(values)
    return raw > 0.2 and abs(skew(np.log(values))) < raw


class Dependencies:
    """Rows breaking an approximate functional dependency A -> B between categorical columns."""

    kind: ErrorKind = "dependency"

    def detect(self, table: ScanTable) -> Iterable[Hits]:
        n = table.rows
        cats: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        common: dict[str, int] = {}
        for col in table.columns.values():
            if col.kind == "date" or (col.kind == "numeric" and col.numbers is not None
                                       and not np.all(np.nan_to_num(col.numbers) == np.round(np.nan_to_num(col.numbers)))):
                continue
            codes = np.where(col.present, col.codes, -1)
            counts = np.bincount(col.codes[col.present], minlength=len(col.uniques))
            if 2 <= int((counts > 0).sum()) <= 0.5 * n:
                cats[col.name] = (codes, col.uniques, len(col.uniques))
                common[col.name] = int((counts >= 3).sum())  # values seen 3+ times: rare errors do not count
        names = sorted(cats, key=lambda c: -cats[c][2])[:MAX_FD_COLUMNS]
        position = {name: i for i, name in enumerate(table.columns)}
        found: list[tuple[str, str, np.ndarray, list[str]]] = []
        for a in names:
            for b in names:
                if a == b:
                    continue
                ka, kb = common[a], common[b]
                if ka < kb or (ka == kb and position[a] > position[b]):
                    continue  # A determines B only with at least as many values; a 1-1 pair is checked once
                hit = self._violations(cats[a], cats[b], n)
                if hit is not None:
                    rows, reasons = hit
                    found.append((a, b, rows, [r.format(a=a, b=b) for r in reasons]))
        flagged = {(b, int(r)) for _, b, rows, _ in found for r in rows}
        for a, b, rows, reasons in found:
            keep = np.array([(a, int(r)) not in flagged and not table.taken[b][r] for r in rows], dtype=bool)
            if keep.any():
                yield Hits(b, rows[keep], [r for r, k in zip(reasons, keep, strict=True) if k])

    @staticmethod
    def _violations(ca: tuple[np.ndarray, np.ndarray, int], cb: tuple[np.ndarray, np.ndarray, int],
                    n: int) -> tuple[np.ndarray, list[str]] | None:
        a, a_vals, ka = ca
        b, b_vals, kb = cb
        valid = (a >= 0) & (b >= 0)
        nv = int(valid.sum())
        if nv < 20 or nv / ka < 3:
            return None  # A is nearly unique: every dependency would hold trivially
        key = a[valid].astype(np.int64) * kb + b[valid]
        if ka * kb <= DENSE_PAIRS:  # the usual case: a dense (A, B) count table, no sort
            table = np.bincount(key, minlength=ka * kb).reshape(ka, kb)
            group, top_b, top_n = table.sum(axis=1), table.argmax(axis=1), table.max(axis=1).astype(float)
            pair_count = table.ravel()
        else:
            pairs, counts = np.unique(key, return_counts=True)
            pa, pb = pairs // kb, pairs % kb
            group = np.bincount(pa, weights=counts, minlength=ka)
            order = np.lexsort((-counts, pa))
            first = np.ones(len(order), dtype=bool)
            first[1:] = pa[order][1:] != pa[order][:-1]
            top_b = np.full(ka, -1)
            top_n = np.zeros(ka)
            top_b[pa[order][first]] = pb[order][first]
            top_n[pa[order][first]] = counts[order][first]
            lookup = dict(zip(pairs.tolist(), counts.tolist(), strict=True))
            pair_count = None
        holds = top_n.sum() / nv
        b_mode = np.bincount(b[valid], minlength=kb).max() / nv
        if holds < FD_HOLDS or (1 - holds) > 0.25 * (1 - b_mode):
            return None
        rows = np.flatnonzero(valid & (b != top_b[np.maximum(a, 0)]))
        if len(rows) == 0:
            return None
        ga, gb = a[rows], b[rows]
        minority = pair_count[ga.astype(np.int64) * kb + gb] if pair_count is not None else \
            np.array([lookup[int(x) * kb + int(y)] for x, y in zip(ga, gb, strict=True)])
        ok = (group[ga] >= 3) & (top_n[ga] >= 0.75 * group[ga]) & (minority <= np.maximum(1, 0.1 * top_n[ga]))
        rows = rows[ok]
        if len(rows) == 0:
            return None
        reasons = [f"{{a}} {a_vals[x]!r} has {{b}} {b_vals[top_b[x]]!r} in {int(top_n[x])} of {int(group[x])} rows; "
                   f"here {b_vals[y]!r}" for x, y in zip(a[rows], b[rows], strict=True)]
        return rows, reasons


class Duplicates:
    """Exact duplicate rows (whole row), and duplicate keys (the contract's `unique`, else an identifier column)."""

    kind: ErrorKind = "duplicate"

    def detect(self, table: ScanTable) -> Iterable[Hits]:
        if table.rows == 0:
            return
        frame = pd.DataFrame({name: c.codes for name, c in table.columns.items()})
        h = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        dup = pd.Series(h).duplicated(keep="first").to_numpy()
        firsts = pd.Series(np.arange(table.rows)).groupby(h).transform("min").to_numpy()
        reported = bool(dup.any() and dup.mean() <= DUPLICATE_RARE)  # where rows repeat by nature, no error
        if reported:
            rows = np.flatnonzero(dup)
            yield Hits(None, rows, [f"an exact duplicate of row {firsts[r]}" for r in rows])
        keys = [list(k) for k in table.contract.unique] if table.contract is not None else [
            [name] for name, c in table.columns.items()
            if ID_NAME.search(name) and c.kind in ("numeric", "code", "text")
            and len(np.unique(c.codes[c.present])) >= 0.98 * max(int(c.present.sum()), 1)]
        for key in keys:
            if not all(k in table.columns for k in key):
                continue
            sub = frame[key]
            complete = np.logical_and.reduce([table.columns[k].present for k in key])
            at = np.flatnonzero(complete)  # rows whose key is filled (nulls are not compared)
            kh = pd.util.hash_pandas_object(sub.iloc[at], index=False).to_numpy()
            later = pd.Series(kh).duplicated(keep="first").to_numpy()
            kfirst = np.zeros(table.rows, dtype=np.int64)
            kfirst[at] = at[pd.Series(np.arange(len(at))).groupby(kh).transform("min").to_numpy()]
            rows = at[later]
            if reported:
                rows = rows[~dup[rows]]  # already a whole-row finding
            if len(rows) == 0:
                continue
            label = ", ".join(key)
            for k in key:
                free = rows[~table.taken[k][rows]]
                yield Hits(k, free, [f"duplicate key ({label}): the same as row {int(kfirst[r])}" for r in free])


DETECTORS: tuple[Detector, ...] = (MissingValues(), Typos(), TypeAndPattern(), ContractRules(), Outliers(),
                                   Dependencies(), Duplicates())


# --------------------------------------------------------------------------- scanning
def scan_frame(frame: pd.DataFrame, contract: Contract | None = None, *, source: str = "",
               reporter: Reporter | None = None, detectors: Sequence[Detector] = DETECTORS) -> ScanReport:
    """Every detector over the table, in precedence order; one flag per cell (rows are 0-based positions)."""
    bar = reporter or NullReporter()
    label = f"scan {source}" if source else "scan"
    bar.update(completed=0, total=len(detectors) + 1, description=f"{label}: reading the columns")
    table = prepare(frame, contract)
    bar.advance()
    flags: list[CellFlag] = []
    for det in detectors:
        bar.say(f"{label}: {det.kind}")
        for hits in det.detect(table):
            kind: ErrorKind = "range" if isinstance(hits, RangeHits) else det.kind
            rows = np.asarray(hits.rows, dtype=np.int64)
            if hits.column is not None:
                taken = table.taken[hits.column]
                fresh = ~taken[rows]
                reasons = [hits.reasons] * len(rows) if isinstance(hits.reasons, str) else list(hits.reasons)
                rows, reasons = rows[fresh], [r for r, f in zip(reasons, fresh, strict=True) if f]
                taken[rows] = True
                col = table.columns[hits.column]
                text = col.uniques[col.codes[rows]]
                flags.extend(CellFlag.model_construct(row=int(r), column=hits.column, kind=kind, reason=why,
                                                      value=str(v)) for r, why, v in zip(rows, reasons, text, strict=True))
            else:
                reasons = [hits.reasons] * len(rows) if isinstance(hits.reasons, str) else list(hits.reasons)
                flags.extend(CellFlag.model_construct(row=int(r), column=None, kind=kind, reason=why, value=None)
                             for r, why in zip(rows, reasons, strict=True))
        bar.advance()
    order = {name: i for i, name in enumerate(table.columns)}
    flags.sort(key=lambda f: (f.row, -1 if f.column is None else order[f.column]))
    return ScanReport(source=source, dataset=contract.dataset if contract is not None else None, rows=table.rows,
                      columns=list(table.columns), column_kinds={n: c.kind for n, c in table.columns.items()},
                      flags=flags, counts=dict(Counter(f.kind for f in flags)))


def scan_file(path: str | Path, *, dataset: str | None = None, reporter: Reporter | None = None) -> ScanReport:
    """Read `path` (`read_raw`) and scan it, with the contract in force for `dataset` when one is named (an
    unknown dataset fails first, with the known names)."""
    contract = None
    if dataset is not None:
        from pipewarden.tools.contracts import active_contract

        contract = active_contract(dataset)
    frame = read_raw(path)
    return scan_frame(frame, contract, source=str(path), reporter=reporter)
