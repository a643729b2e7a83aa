"""The schema-drift matcher: which reference column does each column of a new table correspond to?

Given a reference (a table, its profiles, or a data contract) and a new table, `match_columns` decides for every
column of the new table its best reference column or none, with a score, and reports the drift: columns
renamed, retyped (with the cast that restores the reference type), added and dropped.

How a pair (new column, reference column) is scored:

* Exact names match first, with score 1.0; they are still checked for a type change.
* Every remaining pair gets three component scores in 0..1:

  - `name_score`: names are split into tokens whatever their style (camelCase, PascalCase, snake, kebab,
    spaces), common abbreviations are expanded (dep -> departure, arr -> arrival, num -> number, dt -> date,
    tz -> timezone, ...), then ``0.5 * token Jaccard + 0.5 * difflib ratio``; a token that is a prefix
    (3+ letters) of the other side's token counts as shared. Identical token lists score 1.0.
  - `embedding_score`: the cosine of the embeddings of the humanized names ("departure delay"), from the
    `Embedder` port (MiniLM in production). Without an embedder this component is skipped and the other
    weights are renormalized.
  - `value_score`: from the column profiles. ``type_score * (0.6 * distribution + 0.2 * null-rate closeness +
    0.2 * distinct-ratio closeness)``, where `type_score` is 1 for the same type (a string column whose values
    parse as integer counts as integer), 0.9 for integer vs float and 0 otherwise, and `distribution` compares
    the p10/p50/p90 quantiles and spread for numeric (and timestamp) columns, or the top values for the
    others. A contract reference has no values, so there `value_score` is half the type score: agreeing types
    are neutral evidence, and the names must carry the match.

* Value conversions (`ColumnMatch.transform`, collected in `MatchReport.transforms`): a numeric column whose
  spread is a known unit factor away from the reference's (x60: minutes -> seconds, x3600, x1000, x100, miles ->
  km...) and whose quantiles match once scaled gets a `unit_scale` transform (`UNIT_FACTORS`); text dates in a
  non-ISO format (`DATE_FORMATS`, e.g. '03/01/2013 05:00') get a `date_format` transform; numbers in the
  epoch-seconds (or milliseconds) range against a timestamp get an `epoch` transform.

* The combined score is ``WEIGHTS`` applied to the components (name 0.45, embedding 0.20, value 0.35), divided
  by the sum of the weights used. Pairs are assigned one to one by maximizing the total score over the pairs
  at or above the threshold (`max_assignment`: scipy's `linear_sum_assignment` method, in Python); a new column left
  without a partner is
  "added", a reference column nothing maps to is "dropped".

Column names and values are data: they are compared and quoted, never interpreted or evaluated.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import InputFileError, UserError
from pipewarden.models import ColumnMapping, ColumnTransform
from pipewarden.policies.column_types import NUMERIC, ColumnType, compatible, observed_type

if TYPE_CHECKING:
    import pandas as pd

    from pipewarden.policies.contract import Contract
    from pipewarden.ports import Embedder

__all__ = [
    "ABBREVIATIONS",
    "CALIBRATION",
    "DATE_FORMATS",
    "UNIT_FACTORS",
    "WEIGHTS",
    "Calibration",
    "Candidate",
    "ColumnMatch",
    "ColumnProfile",
    "MatchReport",
    "match_columns",
    "match_files",
    "max_assignment",
    "reference_for",
    "TOOLS",
    "humanize",
    "name_similarity",
    "name_tokens",
    "token_containment",
    "profile_table",
    "profiles_from_contract",
    "transform_for",
    "type_score",
    "value_similarity",
]

WEIGHTS: dict[str, float] = {"name": 0.45, "embedding": 0.20, "value": 0.35}
"""Weights of the component scores in the combined score (renormalized over the components used)."""

ABBREVIATIONS: dict[str, str] = {
    "dep": "departure", "dept": "departure", "arr": "arrival", "arrv": "arrival",
    "num": "number", "nbr": "number", "nr": "number",
    "dt": "date", "tz": "timezone", "ts": "timestamp", "tm": "time",
    "sched": "scheduled", "schd": "scheduled", "dest": "destination",
    "orig": "origin", "dist": "distance", "dly": "delay", "flt": "flight",
    "hr": "hour", "hrs": "hours", "yr": "year", "yrs": "years", "mins": "minutes", "sec": "second",
    "secs": "seconds", "qty": "quantity", "amt": "amount", "cnt": "count", "avg": "average",
    "pct": "percent", "desc": "description", "addr": "address", "temp": "temperature",
    "lat": "latitude", "lon": "longitude", "lng": "longitude", "cust": "customer", "acct": "account",
    "src": "source", "tgt": "target", "msg": "message", "dow": "day of week",
}
"""Token-level abbreviations expanded before names are compared (keys and values are lower case)."""

UNIT_FACTORS: dict[float, str] = {
    60.0: "x60 (e.g. minutes -> seconds, hours -> minutes)",
    3600.0: "x3600 (hours -> seconds)",
    1000.0: "x1000 (e.g. seconds -> milliseconds, km -> m)",
    100.0: "x100 (e.g. a share -> percent)",
    1.609344: "x1.609 (miles -> km)",
    0.3048: "x0.3048 (feet -> metres)",
}
"""Unit changes the matcher recognises: new = reference x factor (and the inverses, 1/factor)."""

DATE_FORMATS: tuple[str, ...] = (
    "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S",
    "%d.%m.%Y %H:%M", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S", "%d-%b-%Y %H:%M", "%b %d %Y %H:%M",
    "%Y%m%d%H%M", "%Y%m%d %H:%M", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d",
)
"""Non-ISO date formats the matcher tries on text dates (strptime), first full match wins; month-first before
day-first, so an ambiguous '03/01/2013' reads as March 1st unless the reference's dates say otherwise."""

_EPOCH_S = (1e8, 4.2e9)  # 1973 .. 2103 in seconds
_EPOCH_MS = (1e11, 4.2e12)
_UNIT_TOLERANCE = 0.35  # relative error allowed between the p10-p90 spread ratio and a unit factor
_SAMPLE_VALUES = 5
_TOP_VALUES = 20
_TOP_TOKENS = 50
_CANDIDATES = 3  # ranked reference candidates listed per new column
_MANY_CONTAINMENT = 0.15  # each source of a one-to-many answer holds at least this share of the new column's words
_MANY_GAIN = 0.2  # ... and together they hold this much more than the best one alone
_WORD = re.compile(r"[0-9a-z]+")
_MAX_TEXT = 64
_PARSE_SHARE = 0.98  # share of non-null string values that must parse for `parses_as` to be set
_BOOL_WORDS = {"true": True, "false": False, "t": True, "f": False, "yes": True, "no": False, "y": True, "n": False}


class ColumnProfile(BaseModel):
    """What a column looks like: its contract type and a few statistics of its (sampled) values."""

    model_config = ConfigDict(frozen=True)
    name: str
    type: ColumnType = Field(description="Contract type of the column as stored (policies.contract.observed_type).")
    source: Literal["data", "contract"] = Field("data", description="Profiled from values, or from a contract.")
    rows: int = Field(0, description="Rows profiled (after sampling); 0 for a contract.")
    null_rate: float | None = None
    distinct_ratio: float | None = Field(None, description="Distinct non-null values / non-null values.")
    mean: float | None = None
    std: float | None = None
    p10: float | None = None
    p50: float | None = None
    p90: float | None = None
    top_values: dict[str, float] = Field(
        default_factory=dict, description="Most frequent values (as text) with their share of non-null values."
    )
    sample: list[str] = Field(default_factory=list, description="A few example values, as text.")
    parses_as: ColumnType | None = Field(
        None, description="For a string column whose values parse as integer/float/timestamp/boolean: which."
    )
    date_format: str | None = Field(
        None, description="For text dates that are not ISO 8601: the strptime format they follow (DATE_FORMATS)."
    )
    top_tokens: dict[str, float] = Field(
        default_factory=dict,
        description="For free text (a string column that parses as nothing else): its most frequent lower-case "
        "words with their share of all words; a merged or split column shares words with its sources.",
    )

    @property
    def effective_type(self) -> str:
        """The type the values carry: `parses_as` for a parsable string column, else `type`."""
        return self.parses_as or self.type

    @property
    def has_values(self) -> bool:
        return self.source == "data" and self.rows > 0


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Logistic (Platt) calibration of the matcher's scores into probabilities of a right answer.

    Fitted offline by `benchmarks/schema_match_eval.py --fit` on generated pairs of tables (their own tables and
    seeds, apart from those the benchmark reports on) and committed as constants: nothing is trained at run time.
    """

    pair: tuple[float, float, float, float]
    """Intercept, then the weights of a candidate's combined score, its margin (its score minus the best other
    candidate's score for the same new column) and its word containment: P(the reference column corresponds)."""
    no_match: tuple[float, float, float, float]
    """Intercept, then the weights of the best candidate's score, margin and containment: P(no reference column
    corresponds to the new column)."""

    def pair_probability(self, score: float, margin: float, containment: float) -> float:
        return _logistic(self.pair, score, margin, containment)

    def no_match_probability(self, score: float, margin: float, containment: float) -> float:
        return _logistic(self.no_match, score, margin, containment)


def _logistic(coef: tuple[float, float, float, float], *x: float) -> float:
    z = coef[0] + sum(w * v for w, v in zip(coef[1:], x, strict=True))
    return round(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))), 6)


CALIBRATION: dict[str, Calibration] = {
    "names+values": Calibration(pair=(-6.549, 7.088, 14.041, 8.635), no_match=(5.701, -6.401, -12.295, -7.169)),
    "names+embedding+values": Calibration(pair=(-6.423, 6.967, 15.214, 8.155),
                                          no_match=(5.371, -5.772, -13.58, -6.378)),
}
"""The calibration per set of components used (with or without an embedder): `benchmarks/schema_match_eval.py --fit
--seeds 4` on `evals.match_pairs.FIT_TABLES`; its error on the held-out tables is in the README."""


class Candidate(BaseModel):
    """One reference column a new column may correspond to."""

    model_config = ConfigDict(frozen=True)
    column: str = Field(description="The reference column.")
    score: float = Field(ge=0, le=1, description="Combined score of the pair (1.0 for the same name).")
    containment: float = Field(0.0, ge=0, le=1, description="Share of the new column's words among the reference "
                               "column's (free text only; 0 otherwise).")
    probability: float = Field(ge=0, le=1, description="Calibrated probability that the pair corresponds.")


class ColumnMatch(BaseModel):
    """The verdict for one column of the new table."""

    model_config = ConfigDict(frozen=True)
    column: str = Field(description="The column of the new table.")
    match: str | None = Field(description="The reference column it corresponds to, or None (an added column).")
    score: float = Field(ge=0, le=1, description="Combined score of the match (of the best candidate when None).")
    name_score: float = Field(0.0, ge=0, le=1)
    embedding_score: float | None = Field(None, description="None when no embedder was used for this pair.")
    value_score: float = Field(0.0, ge=0, le=1)
    type_compatible: bool = False
    cast: ColumnType | None = Field(None, description="Cast the new column to this type to restore the reference.")
    transform: ColumnTransform | None = Field(None, description="A value conversion (unit, date format, epoch).")
    best_candidate: str | None = Field(None, description="When match is None: the closest reference column.")
    reason: str = ""
    correspondence: Literal["one_to_one", "one_to_many", "no_match"] = Field(
        "one_to_one", description="one_to_one: `match` is the answer; one_to_many: the column combines the `sources` "
        "(e.g. a full name from first and last names); no_match: no reference column corresponds.",
    )
    sources: list[str] = Field(default_factory=list, description="For one_to_many: the reference columns combined.")
    probability: float = Field(0.0, ge=0, le=1, description="Calibrated probability that this answer is right: "
                               "that `match` corresponds, or for no_match that no reference column does.")
    no_match_probability: float = Field(0.0, ge=0, le=1, description="Calibrated probability that no reference "
                                        "column corresponds.")
    candidates: list[Candidate] = Field(default_factory=list, description="Reference columns it may correspond to, "
                                        "most probable first (the same name alone when it has one).")


class MatchReport(BaseModel):
    """Every new column's match plus the drift: renamed, retyped, added and dropped columns."""

    matches: list[ColumnMatch] = Field(description="One per column of the new table, in its column order.")
    renamed: dict[str, str] = Field(default_factory=dict, description="New column name -> reference column name.")
    retyped: dict[str, ColumnType] = Field(
        default_factory=dict, description="Reference column -> the type to cast its new column to."
    )
    transforms: list[ColumnTransform] = Field(
        default_factory=list, description="Value conversions (unit scale, date format, epoch) for matched columns."
    )
    added: list[str] = Field(default_factory=list, description="New columns that match no reference column.")
    dropped: list[str] = Field(default_factory=list, description="Reference columns no new column maps to.")
    one_to_many: dict[str, list[str]] = Field(
        default_factory=dict, description="New column -> the reference columns it combines (one_to_many answers)."
    )
    threshold: float = 0.5
    weights: dict[str, float] = Field(default_factory=dict, description="Component weights actually used.")
    embedder: str | None = Field(None, description="Name of the embedder used, if any.")

    @property
    def clean(self) -> bool:
        """True when the new table has the reference's columns under the same names and types."""
        return not (self.renamed or self.retyped or self.added or self.dropped)

    def match_for(self, column: str) -> ColumnMatch:
        """The match of one new column; raises UserError for a name that is not in the new table."""
        for m in self.matches:
            if m.column == column:
                return m
        raise UserError(f"column {column!r} is not in the new table", hint=f"known: {[m.column for m in self.matches]}")

    def to_mapping(self, dataset: str) -> ColumnMapping:
        """The column mapping that undoes the renames and retypes (a proposal's change; applying it is effectful
        and goes through tools.apply with an approved Decision)."""
        return ColumnMapping(dataset=dataset, renames=dict(self.renamed), casts=dict(self.retyped),
                             transforms=list(self.transforms))

    def describe(self) -> list[str]:
        """One line per drift, for logs and proposals."""
        out = [f"{new!r} is {ref!r} renamed" for new, ref in self.renamed.items()]
        out += [f"{ref!r} changed type; cast it to {t}" for ref, t in self.retyped.items()]
        out += [f"{t.column!r} changed its values' form; {t.describe()}" for t in self.transforms]
        out += [f"{c!r} is a new column" for c in self.added]
        out += [f"{c!r} is missing" for c in self.dropped]
        return out


# ---------------------------------------------------------------------------------------------- profiling


def profile_table(df: pd.DataFrame, sample_rows: int = 20000) -> dict[str, ColumnProfile]:
    """Profile every column of a DataFrame (on a deterministic sample of at most `sample_rows` rows).

    Raises UserError when the frame has duplicate column names (each column must be addressable by name).
    """
    names = [str(c) for c in df.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(
            f"the table has duplicate column names {dupes}", hint="rename or drop the duplicates before matching"
        )
    if sample_rows > 0 and len(df) > sample_rows:
        df = df.sample(n=sample_rows, random_state=0)
    return {str(col): _profile_series(str(col), df[col]) for col in df.columns}


def _profile_series(name: str, s: pd.Series) -> ColumnProfile:
    import pandas as pd

    rows = len(s)
    ctype = observed_type(s)
    non_null = s.dropna()
    n = len(non_null)
    fields: dict[str, object] = {
        "name": name, "type": ctype, "rows": rows,
        "null_rate": round(1 - n / rows, 6) if rows else None,
    }
    if not n:
        return ColumnProfile(**fields)  # type: ignore[arg-type]
    if ctype == "boolean":
        text = non_null.astype(bool).map(lambda v: "true" if v else "false")
    elif ctype == "integer":
        text = non_null.astype("int64").astype(str)
    elif ctype == "timestamp":
        text = pd.Series(pd.to_datetime(non_null, utc=True)).dt.strftime("%Y-%m-%dT%H:%M:%S")
    else:
        text = non_null.map(_as_text) if ctype == "string" else non_null.astype(str)
    counts = text.value_counts()
    fields["distinct_ratio"] = round(len(counts) / n, 6)
    fields["top_values"] = {_clip(str(k)): round(float(v) / n, 6) for k, v in counts.head(_TOP_VALUES).items()}
    fields["sample"] = [_clip(str(v)) for v in text.head(_SAMPLE_VALUES)]

    numbers: pd.Series | None = None
    if ctype in NUMERIC:
        numbers = non_null.astype("float64")
    elif ctype == "timestamp":
        numbers = _epoch_seconds(pd.to_datetime(non_null, utc=True))
    elif ctype == "string":
        parses_as, numbers, date_format = _parse_strings(text)
        fields["parses_as"] = parses_as
        fields["date_format"] = date_format
        if parses_as is None:
            fields["top_tokens"] = _top_tokens(counts)
    if numbers is not None and len(numbers):
        import numpy as np

        # what Series.quantile computes on values without nulls (np.quantile, linear), without its ~3 ms of frames
        q = np.quantile(numbers.to_numpy(dtype="float64"), [0.1, 0.5, 0.9])
        fields.update(
            mean=float(numbers.mean()), std=float(numbers.std(ddof=0)),
            p10=float(q[0]), p50=float(q[1]), p90=float(q[2]),
        )
    return ColumnProfile(**fields)  # type: ignore[arg-type]


def _top_tokens(counts: pd.Series) -> dict[str, float]:
    """The most frequent words of a text column, from its value counts (each distinct value split once)."""
    import pandas as pd

    words = pd.Series(counts.index.astype(str)).str.lower().str.findall(_WORD.pattern)
    mass: dict[str, int] = {}
    for found, n in zip(words.tolist(), counts.tolist(), strict=True):
        for w in found:
            mass[w] = mass.get(w, 0) + n
    if not mass:
        return {}
    total = sum(mass.values())
    top = sorted(mass.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_TOKENS]  # most frequent, ties by word
    return {_clip(k): round(n / total, 6) for k, n in top}


def _as_text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return v if isinstance(v, str) else str(v)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _epoch_seconds(ts: pd.Series) -> pd.Series:
    import pandas as pd

    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return (ts - epoch).dt.total_seconds()


def _parse_strings(text: pd.Series) -> tuple[str | None, pd.Series | None, str | None]:
    """Which contract type a string column's values parse as (integer, float, timestamp, boolean), if any.

    Returns the type, for numeric and timestamp values the parsed numbers (epoch seconds for timestamps), and
    for non-ISO text dates the format they follow.
    """
    import pandas as pd

    stripped = text.str.strip()
    n = len(stripped)
    lengths = stripped.str.len()
    compact = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}.get(int(lengths.iloc[0]) if n else 0)
    if compact and bool((lengths == lengths.iloc[0]).all()) and bool(stripped.str.isdigit().all()):
        ts = pd.to_datetime(stripped, errors="coerce", utc=True, format=compact)
        if ts.notna().mean() >= _PARSE_SHARE:  # digits that are all valid compact dates are dates, not numbers
            return "timestamp", _epoch_seconds(ts.dropna()), compact
    nums = pd.to_numeric(stripped, errors="coerce")
    ok = nums.dropna()
    if len(ok) >= _PARSE_SHARE * n and len(ok):
        ok = ok.astype("float64")
        finite = ok[ok.abs() < math.inf]
        whole = bool(((finite % 1) == 0).all()) and not stripped.str.contains(r"[.eE]", regex=True).any()
        return ("integer" if whole else "float"), finite, None
    lowered = stripped.str.lower()
    if bool(lowered.isin(_BOOL_WORDS).mean() >= _PARSE_SHARE):
        return "boolean", None, None
    # only try dates on values that look like them (a digit and a date separator), to keep this cheap
    if bool(stripped.str.contains(r"\d", regex=True).mean() >= _PARSE_SHARE) and bool(
        stripped.str.contains(r"[-/:]", regex=True).mean() >= _PARSE_SHARE
    ):
        ts = pd.to_datetime(stripped, errors="coerce", utc=True, format="ISO8601")
        fmt: str | None = None
        if ts.notna().mean() < _PARSE_SHARE:
            fmt, ts = _known_date_format(stripped)
        if ts is None or ts.notna().mean() < _PARSE_SHARE:
            # free-form dates parse one by one (slow): try a small sample before the whole column
            probe = pd.to_datetime(stripped.head(200), errors="coerce", utc=True, format="mixed")
            if probe.notna().mean() < _PARSE_SHARE:
                return None, None, None
            ts = pd.to_datetime(stripped, errors="coerce", utc=True, format="mixed")
        if ts.notna().mean() >= _PARSE_SHARE:
            return "timestamp", _epoch_seconds(ts.dropna()), fmt
    return None, None, None


def _known_date_format(text: pd.Series) -> tuple[str | None, pd.Series | None]:
    """The first of `DATE_FORMATS` that nearly every value follows (tried on 200 values, then on all)."""
    import pandas as pd

    probe = text.head(200)
    for fmt in DATE_FORMATS:
        if pd.to_datetime(probe, errors="coerce", utc=True, format=fmt).notna().mean() >= _PARSE_SHARE:
            ts = pd.to_datetime(text, errors="coerce", utc=True, format=fmt)
            if ts.notna().mean() >= _PARSE_SHARE:
                return fmt, ts
    return None, None


def profiles_from_contract(contract: Contract) -> dict[str, ColumnProfile]:
    """Reference profiles from a data contract: names and types only (no value statistics)."""
    return {c.name: ColumnProfile(name=c.name, type=c.type, source="contract") for c in contract.columns}


# ------------------------------------------------------------------------------------------------- names

_CAMEL_1 = re.compile(r"([a-z0-9])([A-Z])")
_CAMEL_2 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_DIGITS = re.compile(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
_SPLIT = re.compile(r"[^0-9A-Za-z]+")


def name_tokens(name: str) -> list[str]:
    """Lower-case word tokens of a column name in any style, with abbreviations expanded.

    >>> name_tokens("ArrDelay"), name_tokens("dep-time"), name_tokens("flightNum")
    (['arrival', 'delay'], ['departure', 'time'], ['flight', 'number'])
    """
    text = _DIGITS.sub(" ", _CAMEL_2.sub(r"\1 \2", _CAMEL_1.sub(r"\1 \2", name)))
    out: list[str] = []
    for tok in _SPLIT.split(text.lower()):
        if tok:
            out.extend(ABBREVIATIONS.get(tok, tok).split())
    return out


def humanize(name: str) -> str:
    """A column name as words, for the embedder: `depDelay` -> `departure delay`."""
    return " ".join(name_tokens(name)) or name.strip().lower()


def _stem(tok: str) -> str:
    return tok[:-1] if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss") else tok


def _tokens_match(a: str, b: str) -> bool:
    if a == b:
        return True
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) >= 3 and long_.startswith(short)


def name_similarity(a: str, b: str) -> float:
    """Similarity of two column names in 0..1, insensitive to case, style and common abbreviations."""
    ta, tb = [_stem(t) for t in name_tokens(a)], [_stem(t) for t in name_tokens(b)]
    if not ta or not tb:
        return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()
    if ta == tb:
        return 1.0
    shared = sum(1 for t in set(ta) if any(_tokens_match(t, u) for u in set(tb)))
    jaccard = shared / (len(set(ta)) + len(set(tb)) - shared)
    ratio = max(
        difflib.SequenceMatcher(None, "_".join(ta), "_".join(tb)).ratio(),
        difflib.SequenceMatcher(None, "".join(ta), "".join(tb)).ratio(),
        difflib.SequenceMatcher(None, _SPLIT.sub("", a.lower()), _SPLIT.sub("", b.lower())).ratio(),
    )
    return round(0.5 * min(jaccard, 1.0) + 0.5 * ratio, 6)


# ------------------------------------------------------------------------------------------------ values


def type_score(new: ColumnProfile, ref: ColumnProfile) -> float:
    """1 for the same (effective) type, 0.9 for integer vs float, 0 for incompatible types.

    Against a contract, a type the contract accepts without a cast (integer for float) also scores 1.
    """
    a, b = new.effective_type, ref.effective_type
    if a == b or (ref.source == "contract" and compatible(b, a)):
        return 1.0
    if b == "timestamp" and _epoch_factor(new) is not None:
        return 1.0  # numbers in the epoch range are timestamps in disguise
    if a in NUMERIC and b in NUMERIC:
        return 0.9
    return 0.0


def _numeric_similarity(a: ColumnProfile, b: ColumnProfile) -> float | None:
    qa, qb = (a.p10, a.p50, a.p90), (b.p10, b.p50, b.p90)
    if any(v is None for v in qa + qb):
        return None
    qa_f = [float(v) for v in qa]  # type: ignore[arg-type]
    qb_f = [float(v) for v in qb]  # type: ignore[arg-type]
    scale = max(qa_f[2] - qa_f[0], qb_f[2] - qb_f[0], a.std or 0.0, b.std or 0.0, abs(qa_f[1]), abs(qb_f[1]), 1e-9)
    dist = sum(abs(x - y) for x, y in zip(qa_f, qb_f, strict=True)) / (3 * scale)
    quantiles = 1.0 / (1.0 + 4.0 * dist)
    sa, sb = a.std or 0.0, b.std or 0.0
    spread = 1.0 if max(sa, sb) < 1e-12 else min(sa, sb) / max(sa, sb)
    return 0.7 * quantiles + 0.3 * spread


def _top_value_similarity(a: ColumnProfile, b: ColumnProfile) -> float | None:
    if not a.top_values or not b.top_values:
        return None
    shared = set(a.top_values) & set(b.top_values)
    weighted = sum(min(a.top_values[k], b.top_values[k]) for k in shared)
    mass = min(sum(a.top_values.values()), sum(b.top_values.values())) or 1.0
    jaccard = len(shared) / len(set(a.top_values) | set(b.top_values))
    return 0.5 * min(weighted / mass, 1.0) + 0.5 * jaccard


def value_similarity(new: ColumnProfile, ref: ColumnProfile) -> float:
    """Similarity of two columns' values in 0..1 (types, distributions, null and distinct rates)."""
    ts = type_score(new, ref)
    if ts == 0.0:
        return 0.0
    if not (new.has_values and ref.has_values):
        return round(0.5 * ts, 6)  # the types agree, nothing is known about the values: a neutral score
    numeric = new.effective_type in NUMERIC | {"timestamp"} and ref.effective_type in NUMERIC | {"timestamp"}
    dist = _numeric_similarity(new, ref) if numeric else None
    if dist is None:
        dist = _top_value_similarity(new, ref)
    if dist is None:
        dist = 0.5
    null_close = 1.0 - min(1.0, abs((new.null_rate or 0.0) - (ref.null_rate or 0.0)) * 2)
    distinct_close = 1.0 - min(1.0, abs((new.distinct_ratio or 0.0) - (ref.distinct_ratio or 0.0)))
    return round(ts * (0.6 * dist + 0.2 * null_close + 0.2 * distinct_close), 6)


def token_containment(new: ColumnProfile, refs: list[ColumnProfile]) -> float:
    """Share of the new column's frequent words found among the frequent words of the reference columns (0..1).

    One reference column: how much of a column's text it holds. Several: whether they hold it together, as
    first and last names hold a full name."""
    if not new.top_tokens:
        return 0.0
    vocab: set[str] = set()
    for r in refs:
        vocab.update(r.top_tokens)
    mass = sum(new.top_tokens.values()) or 1.0
    return round(min(1.0, sum(v for k, v in new.top_tokens.items() if k in vocab) / mass), 6)


def _epoch_factor(p: ColumnProfile) -> float | None:
    """1.0 when a numeric column's values look like epoch seconds, 0.001 for milliseconds, else None."""
    if p.effective_type not in NUMERIC or p.p10 is None or p.p90 is None:
        return None
    lo, hi = float(p.p10), float(p.p90)
    if _EPOCH_S[0] <= lo and hi <= _EPOCH_S[1]:
        return 1.0
    if _EPOCH_MS[0] <= lo and hi <= _EPOCH_MS[1]:
        return 0.001
    return None


def _scaled(p: ColumnProfile, factor: float) -> ColumnProfile:
    vals = {k: (None if getattr(p, k) is None else float(getattr(p, k)) * factor) for k in ("p10", "p50", "p90", "mean")}
    return p.model_copy(update={**vals, "std": None if p.std is None else abs(p.std * factor)})


def _unit_factor(new: ColumnProfile, ref: ColumnProfile) -> tuple[float, str] | None:
    """The factor f with new ~ reference x f, for a known unit change whose scaled quantiles match; else None."""
    if not (new.has_values and ref.has_values) or new.effective_type not in NUMERIC or ref.effective_type not in NUMERIC:
        return None
    if any(v is None for v in (new.p10, new.p90, ref.p10, ref.p90)):
        return None
    spread_new = float(new.p90) - float(new.p10)  # type: ignore[arg-type]
    spread_ref = float(ref.p90) - float(ref.p10)  # type: ignore[arg-type]
    if spread_new <= 0 or spread_ref <= 0:
        return None
    ratio = spread_new / spread_ref
    if 1 / 1.5 <= ratio <= 1.5:
        return None  # the same unit
    unscaled = _numeric_similarity(new, ref) or 0.0
    best: tuple[float, float, str] | None = None
    for base, label in UNIT_FACTORS.items():
        for f, why in ((base, label), (1 / base, f"1/{base:g} (the inverse of {label})")):
            if abs(math.log(ratio / f)) > math.log(1 + _UNIT_TOLERANCE):
                continue
            back = _numeric_similarity(_scaled(new, 1 / f), ref) or 0.0
            if best is None or back > best[0]:
                best = (back, f, why)
    if best is None or best[0] < 0.75 or best[0] < unscaled + 0.15:
        return None
    back, f, why = best
    return f, f"values are {why} the reference's (spread ratio {ratio:.3g}; scaled back, values match {back:.2f})"


def transform_for(new: ColumnProfile, ref: ColumnProfile) -> tuple[ColumnTransform | None, str]:
    """The value conversion that brings the new column back to the reference column, with why; (None, "") if none.

    The transform names the reference column (the contract column it feeds after a rename).
    """
    if ref.effective_type == "timestamp":
        if new.type == "string" and new.parses_as == "timestamp" and new.date_format:
            return (ColumnTransform(column=ref.name, kind="date_format", format=new.date_format),
                    f"dates written as {new.date_format!r}; parse with that format")
        factor = _epoch_factor(new)
        if factor is not None and new.type != "timestamp":
            unit = "seconds" if factor == 1.0 else "milliseconds"
            return (ColumnTransform(column=ref.name, kind="epoch", factor=None if factor == 1.0 else factor),
                    f"numbers are epoch {unit}; read them as UTC timestamps")
        return None, ""
    found = _unit_factor(new, ref)
    if found is None:
        return None, ""
    f, why = found
    return ColumnTransform(column=ref.name, kind="unit_scale", factor=1 / f), why + f"; scale by 1/{f:g}"


def _cast_for(
    new: ColumnProfile, ref: ColumnProfile, transform: ColumnTransform | None = None
) -> tuple[ColumnType | None, str]:
    """The cast that brings the new column back to the reference type (or None), with a short explanation.

    A date or epoch transform already yields timestamps, so it needs no cast."""
    if transform is not None and transform.kind in ("date_format", "epoch"):
        return None, ""
    if new.type == ref.type:
        return None, ""
    if ref.source == "contract":
        if compatible(ref.type, new.type) and (new.type != "string" or new.parses_as == ref.type):
            return None, ""
    elif new.type in NUMERIC and ref.type in NUMERIC:
        return None, f"{ref.type} -> {new.type} (numeric either way; no cast)"
    elif ref.parses_as == "timestamp" and new.type == "timestamp":
        return None, "ISO text -> native timestamp (no cast)"
    if new.type != "string":
        detail = ""
    elif new.parses_as is None:
        detail = f" (values do not all parse as {ref.type}; the cast will fail some rows)"
    elif type_score(new, ref) == 0.0:
        detail = f" (values parse as {new.parses_as}, not {ref.type}; the cast will fail)"
    else:
        detail = f" (values parse as {new.parses_as})"
    return ref.type, f"retyped {ref.type} -> {new.type}{detail}; cast to {ref.type}"


# ----------------------------------------------------------------------------------------------- matching


def _cosine(u: list[float], v: list[float]) -> float:
    dot = sum(x * y for x, y in zip(u, v, strict=False))
    nu = math.sqrt(sum(x * x for x in u))
    nv = math.sqrt(sum(y * y for y in v))
    if nu == 0 or nv == 0:
        return 0.0
    return max(0.0, min(1.0, dot / (nu * nv)))


def _embed_names(embedder: Embedder, names: list[str]) -> dict[str, list[float]]:
    texts = sorted({humanize(n) for n in names})
    if not texts:
        return {}
    vectors = embedder.embed(texts)
    if len(vectors) != len(texts):
        raise UserError(
            f"embedder {getattr(embedder, 'name', type(embedder).__name__)!r} returned {len(vectors)} vectors "
            f"for {len(texts)} texts",
            hint="check the embedder implementation; it must return one vector per text",
        )
    return dict(zip(texts, vectors, strict=True))


def _as_profiles(table: pd.DataFrame | Mapping[str, ColumnProfile], what: str) -> dict[str, ColumnProfile]:
    if isinstance(table, Mapping):
        bad = [k for k, v in table.items() if not isinstance(v, ColumnProfile)]
        if bad:
            raise UserError(
                f"the {what} mapping has values that are not ColumnProfile for {bad[:5]}",
                hint="pass a DataFrame, or the output of profile_table / profiles_from_contract",
            )
        return dict(table)
    if hasattr(table, "columns") and hasattr(table, "dtypes"):
        return profile_table(table)
    raise UserError(
        f"the {what} table is a {type(table).__name__}, not a DataFrame or a dict of ColumnProfile",
        hint="read it with tools.io.read_table, or profile it with profile_table",
    )


def _is_contract(obj: object) -> bool:
    """Whether `obj` is a data contract. A Contract implies its module is loaded, so matching two tables never loads
    it (with the settings, YAML and project modules it imports: ~0.1 s of a `pipewarden schema match`)."""
    module = sys.modules.get("pipewarden.policies.contract")
    return module is not None and isinstance(obj, module.Contract)


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def match_columns(
    reference: pd.DataFrame | Mapping[str, ColumnProfile] | Contract,
    new: pd.DataFrame | Mapping[str, ColumnProfile],
    *,
    embedder: Embedder | None = None,
    threshold: float = 0.5,
) -> MatchReport:
    """Match each column of `new` to its best column of `reference`, or to none, and report the drift.

    `reference` is a DataFrame, a dict of ColumnProfile (from `profile_table` or `profiles_from_contract`) or a
    Contract. `embedder` (a pipewarden.ports.Embedder, e.g. MiniLM) adds name-embedding similarity; without it
    that component is skipped. Pairs scoring below `threshold` are not matched.
    """
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold {threshold} is outside 0..1", hint="pass a threshold such as 0.5")
    ref = profiles_from_contract(reference) if _is_contract(reference) else _as_profiles(reference, "reference")
    cur = _as_profiles(new, "new")

    weights = {k: w for k, w in WEIGHTS.items() if k != "embedding" or embedder is not None}
    total_w = sum(weights.values())
    weights = {k: round(w / total_w, 6) for k, w in weights.items()}

    matches: dict[str, ColumnMatch] = {}
    for name, prof in cur.items():
        if name in ref:
            matches[name] = _exact_match(prof, ref[name])

    rest_new = [n for n in cur if n not in matches]
    rest_ref = [r for r in ref if r not in cur]
    pairs: dict[tuple[str, str], tuple[float, float, float | None, float]] = {}
    if rest_new and rest_ref:
        vectors = _embed_names(embedder, rest_new + rest_ref) if embedder is not None else {}
        for n in rest_new:
            for r in rest_ref:
                ns = name_similarity(n, r)
                vs = value_similarity(cur[n], ref[r])
                es = _cosine(vectors[humanize(n)], vectors[humanize(r)]) if embedder is not None else None
                score = weights["name"] * ns + weights["value"] * vs + (weights.get("embedding", 0.0) * (es or 0.0))
                pairs[(n, r)] = (round(min(score, 1.0), 6), ns, es, vs)

    cal = CALIBRATION["names+embedding+values" if embedder is not None else "names+values"]
    ranked = {n: _rank(n, rest_ref, pairs, cur, ref, cal) for n in rest_new}
    assigned = _assign(rest_new, rest_ref, pairs, threshold)
    for n in rest_new:
        if n in assigned:
            r = assigned[n]
            score, ns, es, vs = pairs[(n, r)]
            transform, twhy = transform_for(cur[n], ref[r])
            cast, why = _cast_for(cur[n], ref[r], transform)
            parts = [f"renamed from {r!r}", f"name {_fmt(ns)}", f"values {_fmt(vs)}"]
            if es is not None:
                parts.append(f"embedding {_fmt(es)}")
            reason = "; ".join([", ".join(parts)] + [w for w in (twhy, why) if w])
            matches[n] = ColumnMatch(
                column=n, match=r, score=score, name_score=ns, embedding_score=es, value_score=vs,
                type_compatible=type_score(cur[n], ref[r]) > 0, cast=cast, transform=transform, reason=reason,
            )
        else:
            matches[n] = _no_match(n, rest_ref, pairs, threshold, cur, ref)
        matches[n] = _calibrated(matches[n], ranked[n], cur[n], ref, cal)
    for n, prof in cur.items():
        if n in ref:
            c = token_containment(prof, [ref[n]])
            only = Candidate(column=n, score=1.0, containment=c, probability=cal.pair_probability(1.0, 1.0, c))
            matches[n] = matches[n].model_copy(update={
                "probability": only.probability, "candidates": [only],
                "no_match_probability": cal.no_match_probability(1.0, 1.0, c),
            })

    ordered = [matches[n] for n in cur]
    matched_refs = {m.match for m in ordered if m.match is not None}
    return MatchReport(
        matches=ordered,
        renamed={m.column: m.match for m in ordered if m.match is not None and m.match != m.column},
        retyped={m.match: m.cast for m in ordered if m.match is not None and m.cast is not None},
        transforms=[m.transform for m in ordered if m.match is not None and m.transform is not None],
        added=[m.column for m in ordered if m.match is None],
        dropped=[r for r in ref if r not in matched_refs],
        one_to_many={m.column: list(m.sources) for m in ordered if m.correspondence == "one_to_many"},
        threshold=threshold,
        weights=weights,
        embedder=getattr(embedder, "name", type(embedder).__name__) if embedder is not None else None,
    )


def _exact_match(new: ColumnProfile, ref: ColumnProfile) -> ColumnMatch:
    transform, twhy = transform_for(new, ref)
    cast, why = _cast_for(new, ref, transform)
    vs = value_similarity(new, ref)
    return ColumnMatch(
        column=new.name, match=ref.name, score=1.0, name_score=1.0, embedding_score=None, value_score=vs,
        type_compatible=type_score(new, ref) > 0, cast=cast, transform=transform,
        reason="same name" + "".join(f"; {w}" for w in (twhy, why) if w)
        + (f"; values {_fmt(vs)}" if new.has_values else ""),
    )


def _rank(
    n: str,
    refs: list[str],
    pairs: dict[tuple[str, str], tuple[float, float, float | None, float]],
    cur: dict[str, ColumnProfile],
    ref: dict[str, ColumnProfile],
    cal: Calibration,
) -> list[Candidate]:
    """Every reference column left for `n` as a Candidate with its calibrated probability, most probable first."""
    scores = {r: pairs[(n, r)][0] for r in refs if (n, r) in pairs}
    if not scores:
        return []
    top = sorted(scores.values(), reverse=True)
    out = []
    for r, s in scores.items():
        best_other = top[1] if s == top[0] and len(top) > 1 else (top[0] if s != top[0] else 0.0)
        margin = s - best_other if len(top) > 1 else s
        c = token_containment(cur[n], [ref[r]]) if cur[n].top_tokens and ref[r].top_tokens else 0.0
        out.append(Candidate(column=r, score=s, containment=c, probability=cal.pair_probability(s, margin, c)))
    return sorted(out, key=lambda c: (-c.probability, -c.score, c.column))


def _calibrated(
    m: ColumnMatch, ranked: list[Candidate], new: ColumnProfile, ref: dict[str, ColumnProfile], cal: Calibration
) -> ColumnMatch:
    """The match with its probabilities, its ranked candidates, and a one-to-many or no-match answer."""
    if not ranked:
        p_none = cal.no_match_probability(0.0, 0.0, 0.0)
        return m.model_copy(update={"correspondence": "no_match" if m.match is None else "one_to_one",
                                    "probability": p_none, "no_match_probability": p_none})
    by_score = max(ranked, key=lambda c: (c.score, c.column))
    scores = sorted((c.score for c in ranked), reverse=True)
    margin = scores[0] - scores[1] if len(scores) > 1 else scores[0]
    p_none = cal.no_match_probability(by_score.score, margin, max(c.containment for c in ranked))
    update: dict[str, object] = {"candidates": ranked[:_CANDIDATES], "no_match_probability": p_none}
    sources = _sources(new, ranked, ref)
    if sources:
        listed = {c.column for c in ranked[:_CANDIDATES]}
        extra = [c for c in ranked if c.column in sources and c.column not in listed]
        update.update(correspondence="one_to_many", sources=sources, candidates=ranked[:_CANDIDATES] + extra,
                      probability=max(c.probability for c in ranked if c.column in sources),
                      reason=m.reason + f"; its words are those of {', '.join(map(repr, sources))} together")
    elif m.match is not None:
        update.update(correspondence="one_to_one",
                      probability=next(c.probability for c in ranked if c.column == m.match))
    else:
        update.update(correspondence="no_match", probability=p_none)
    return m.model_copy(update=update)


def _sources(new: ColumnProfile, ranked: list[Candidate], ref: dict[str, ColumnProfile]) -> list[str]:
    """The reference columns a free-text column combines, when two or more hold its words together."""
    parts = sorted((c for c in ranked if c.containment >= _MANY_CONTAINMENT), key=lambda c: -c.containment)[:3]
    if len(parts) < 2:
        return []
    together = token_containment(new, [ref[c.column] for c in parts])
    if together < parts[0].containment + _MANY_GAIN:
        return []
    return [c.column for c in parts]


def _no_match(
    n: str,
    refs: list[str],
    pairs: dict[tuple[str, str], tuple[float, float, float | None, float]],
    threshold: float,
    cur: dict[str, ColumnProfile],
    ref: dict[str, ColumnProfile],
) -> ColumnMatch:
    candidates = [(pairs[(n, r)], r) for r in refs if (n, r) in pairs]
    if not candidates:
        return ColumnMatch(column=n, match=None, score=0.0, reason="new column; no unmatched reference column is left")
    (score, ns, es, vs), best = max(candidates, key=lambda c: (c[0][0], c[1]))
    if score >= threshold:
        why = f"new column; its best candidate {best!r} ({_fmt(score)}) went to a better-scoring column"
    else:
        why = f"new column; best candidate {best!r} scored {_fmt(score)} < threshold {_fmt(threshold)}"
    return ColumnMatch(
        column=n, match=None, score=score, name_score=ns, embedding_score=es, value_score=vs,
        type_compatible=type_score(cur[n], ref[best]) > 0, best_candidate=best, reason=why,
    )


def _assign(
    rows: list[str],
    cols: list[str],
    pairs: dict[tuple[str, str], tuple[float, float, float | None, float]],
    threshold: float,
) -> dict[str, str]:
    """One-to-one assignment maximizing the total score over pairs at or above the threshold."""
    if not rows or not cols:
        return {}
    m = [[s if (s := pairs[(n, r)][0]) >= threshold else 0.0 for r in cols] for n in rows]
    if len(rows) * len(cols) > _PY_ASSIGN_CELLS:
        from scipy.optimize import linear_sum_assignment

        ri, ci = linear_sum_assignment(m, maximize=True)
        chosen = list(zip(ri.tolist(), ci.tolist(), strict=True))
    else:
        chosen = max_assignment(m)
    return {rows[i]: cols[j] for i, j in chosen if m[i][j] > 0.0}


_PY_ASSIGN_CELLS = 10_000
"""Up to this many (new, reference) pairs `_assign` solves in Python (a 50 x 50 matrix in ~5 ms); above, with
scipy, whose import costs a command ~0.3 s of CPU. Both give the same assignment (tests/tools/test_schema_match_assign.py)."""


def max_assignment(m: list[list[float]]) -> list[tuple[int, int]]:
    """The one-to-one assignment of rows to columns of `m` with the largest total, as (row, column) pairs.

    The shortest augmenting path method (Crouse, "On implementing 2D rectangular assignment algorithms", IEEE TAES
    2016), the one scipy's `linear_sum_assignment(m, maximize=True)` runs, taking the same choices on ties (the
    last column first; a free column among equal path lengths), so both return the same pairs in the same order:
    by row, every row of a wide matrix and every column of a tall one.
    """
    nr, nc = len(m), len(m[0]) if m else 0
    if not nr or not nc:
        return []
    tall = nc < nr
    if tall:  # solve the transpose: every row must find a column
        cost = [[-m[i][j] for i in range(nr)] for j in range(nc)]
        nr, nc = nc, nr
    else:
        cost = [[-x for x in row] for row in m]
    inf = math.inf
    u, v = [0.0] * nr, [0.0] * nc  # dual variables of rows and columns
    col_of, row_of, path = [-1] * nr, [-1] * nc, [-1] * nc
    for start in range(nr):
        dist = [inf] * nc
        rows_seen, cols_seen = [False] * nr, [False] * nc
        todo = list(range(nc - 1, -1, -1))
        low, i, sink = 0.0, start, -1
        while sink == -1:
            rows_seen[i] = True
            best, at = inf, -1
            row, ui = cost[i], u[i]
            for k, j in enumerate(todo):
                r = low + row[j] - ui - v[j]
                if r < dist[j]:
                    path[j], dist[j] = i, r
                if dist[j] < best or (dist[j] == best and row_of[j] == -1):
                    best, at = dist[j], k
            low = best
            if low == inf:  # cannot happen with finite entries
                raise ValueError("no feasible assignment")
            j = todo[at]
            if row_of[j] == -1:
                sink = j
            else:
                i = row_of[j]
            cols_seen[j] = True
            todo[at] = todo[-1]
            todo.pop()
        u[start] += low
        for r in range(nr):
            if rows_seen[r] and r != start:
                u[r] += low - dist[col_of[r]]
        for c in range(nc):
            if cols_seen[c]:
                v[c] -= low - dist[c]
        j = sink
        while True:  # flip the path's assignments
            i = path[j]
            row_of[j] = i
            col_of[i], j = j, col_of[i]
            if i == start:
                break
    if tall:
        return [(col_of[c], c) for c in sorted(range(nr), key=lambda c: col_of[c])]
    return [(r, col_of[r]) for r in range(nr)]


def match_files(
    reference_path: str | Path,
    new_path: str | Path,
    embedder: Embedder | None = None,
    *,
    threshold: float = 0.5,
) -> MatchReport:
    """Match the columns of two table files (CSV or Parquet, read with tools.io.read_table).

    A reference path ending in `.yaml`/`.yml` is read as a data contract instead (names and types only).
    Raises InputFileError for an unreadable file and ConfigError for an invalid contract.
    """
    from pipewarden.tools.io import read_table

    rp = Path(reference_path)
    reference: pd.DataFrame | Contract
    if rp.suffix.lower() in (".yaml", ".yml"):
        from pipewarden.policies.contract import load_contract

        if not rp.is_file():
            raise InputFileError(rp, "no such contract file", hint="check the path, e.g. contracts/flights.yaml")
        reference = load_contract(rp.stem, rp.parent)
    else:
        reference = read_table(rp)
    return match_columns(reference, read_table(new_path), embedder=embedder, threshold=threshold)


# ------------------------------------------------------------------------------------------------ reference


def reference_for(contract: Contract, rows: int = 20_000) -> pd.DataFrame | dict[str, ColumnProfile]:
    """What a batch of `contract.dataset` is matched against: a sample of its accepted rows in the warehouse
    (`raw_<dataset>`, read-only), or the contract's names and types when there are none or the warehouse is busy."""
    from pipewarden.settings import get_settings
    from pipewarden.tools.warehouse import DUCKDB_PREFIX, WarehouseUnavailable, connect

    url = get_settings().warehouse
    if url.startswith(DUCKDB_PREFIX) and not get_settings().warehouse_path.exists():
        return profiles_from_contract(contract)
    try:
        with connect(url, read_only=True) as wh:
            table = f"raw_{contract.dataset}"
            have = set(wh.columns(table))
            cols = [c for c in contract.names if c in have]
            if cols:
                quoted = ", ".join(wh.quote(c) for c in cols)
                sample = f"USING SAMPLE {int(rows)} ROWS" if wh.is_duckdb else f"ORDER BY random() LIMIT {int(rows)}"
                df = wh.read_frame(f"SELECT {quoted} FROM {wh.quote(table)} {sample}")
                if len(df):
                    return df
    except WarehouseUnavailable:  # another process is writing the DuckDB file: the contract will do
        return profiles_from_contract(contract)
    return profiles_from_contract(contract)


# ------------------------------------------------------------------------------------------------ tools


class BatchColumnInput(BaseModel):
    """A column of the batch a schema-drift event reports."""

    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(description="The id of the schema_drift event (given in the data as event_id).")
    column: str = Field(description="A column of that batch, exactly as named in incoming_columns.")


class BatchInput(BaseModel):
    """The batch a schema-drift event reports."""

    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(description="The id of the schema_drift event (given in the data as event_id).")


def _event_batch(event_id: str) -> tuple[pd.DataFrame, str]:
    from pipewarden.errors import ModelRetry, PipewardenError
    from pipewarden.store import StateStore
    from pipewarden.tools.io import read_table

    try:
        event = StateStore().get_event(event_id)
    except (PipewardenError, ValueError) as exc:
        raise ModelRetry(f"no event {event_id!r}", hint="use the event_id given in the data") from exc
    path = getattr(event, "batch_path", None)
    if not path:
        raise ModelRetry(f"event {event_id!r} has no batch", hint="use the event_id given in the data")
    df = read_table(path)
    return df[[c for c in df.columns if not str(c).startswith("_")]], str(event.dataset)


def _profile_column_tool(args: BatchColumnInput) -> ColumnProfile:
    from pipewarden.errors import ModelRetry

    df, _ = _event_batch(args.event_id)
    if args.column not in df.columns:
        raise ModelRetry(f"the batch has no column {args.column!r}",
                         hint=f"columns: {', '.join(map(str, df.columns))}")
    return profile_table(df[[args.column]])[args.column]


def _match_columns_tool(args: BatchInput) -> MatchReport:
    from pipewarden.tools.contracts import active_contract

    df, dataset = _event_batch(args.event_id)
    return match_columns(reference_for(active_contract(dataset)), df)


def _tools() -> list:
    from pipewarden.tools.registry import Tool

    return [
        Tool("profile_column", "Profile one column of the drifted batch: type, null rate, quantiles, top values, "
             "and for text: which type and date format the values parse as.", BatchColumnInput, ColumnProfile,
             _profile_column_tool),
        Tool("match_columns", "Match every column of the drifted batch to the dataset's reference (accepted rows, "
             "or the contract): renames, casts, unit and date transforms, added and dropped columns, with scores.",
             BatchInput, MatchReport, _match_columns_tool),
    ]


TOOLS = _tools()
