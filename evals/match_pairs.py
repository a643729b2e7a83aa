"""Matching pairs for the schema matcher, built from tables that installed packages ship (no download).

One wide table is split into a REFERENCE and a NEW table the four ways of Valentine (Koutras et al., ICDE 2021):

* `unionable`: the rows split in two, every column on both sides;
* `view_unioned`: the rows split in two, each side a subset of the columns, some shared;
* `joinable`: the columns split with some shared, the rows overlapping (40%);
* `semantically_joinable`: joinable, with the NEW side's values perturbed (noise, rounding, date formats, case,
  typos) so that exact value overlap fails.

The NEW side's columns are renamed as another team would (`rename`): abbreviations (quantity -> qty), synonyms
(price -> cost) and a convention per table (camelCase, PascalCase, UPPER_SNAKE, kebab-case, a prefix). Some pairs
also merge two text columns into one (first and last name -> a full name: a one-to-many correspondence), and half
of them get an ingestion column nothing corresponds to. The ground truth is the set of (new column, reference
column) pairs.

Tables come from vega_datasets' bundled `local_data` and statsmodels' bundled data sets (both in the `dev`
extra). `FIT_TABLES` are for fitting the matcher's calibration (`benchmarks/schema_match_eval.py --fit`), and
`REPORT_TABLES`, kept apart, for the figures and the tests.

Measures: `recall_at_gt` (Valentine's recall at the size of the ground truth), `answer_right`, `ece`.

Public names: `SPLITS`, `FIT_TABLES`, `REPORT_TABLES`, `MatchPair`, `load_table`, `make_pair`, `pairs`, `rename`,
`recall_at_gt`, `answer_right`, `ece`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipewarden.tools.schema_match import ColumnMatch, MatchReport

__all__ = [
    "FIT_TABLES", "REPORT_TABLES", "SPLITS", "MatchPair", "answer_right", "ece", "load_table", "make_pair", "pairs",
    "recall_at_gt", "rename",
]

Split = Literal["joinable", "unionable", "view_unioned", "semantically_joinable"]
SPLITS: tuple[Split, ...] = ("joinable", "unionable", "view_unioned", "semantically_joinable")

# table -> (package, name in it)
_SOURCES: dict[str, tuple[str, str]] = {
    "cars": ("vega", "cars"), "seattle_weather": ("vega", "seattle_weather"), "la_riots": ("vega", "la_riots"),
    "airports": ("vega", "airports"), "us_employment": ("vega", "us_employment"), "barley": ("vega", "barley"),
    "stocks": ("vega", "stocks"), "ohlc": ("vega", "ohlc"),
    "macrodata": ("statsmodels", "macrodata"), "anes96": ("statsmodels", "anes96"), "fair": ("statsmodels", "fair"),
    "modechoice": ("statsmodels", "modechoice"), "star98": ("statsmodels", "star98"),
}
FIT_TABLES: tuple[str, ...] = ("airports", "us_employment", "barley", "stocks", "fair", "modechoice", "star98")
"""Tables whose pairs fit the calibration."""
REPORT_TABLES: tuple[str, ...] = ("cars", "seattle_weather", "la_riots", "ohlc", "macrodata", "anes96")
"""Tables whose pairs the figures and the tests are measured on (never used for fitting)."""

# table -> (two text columns, the merged column's name): a one-to-many correspondence
_MERGES: dict[str, tuple[str, str, str]] = {
    "la_riots": ("first_name", "last_name", "full_name"), "airports": ("city", "state", "location"),
    "barley": ("variety", "site", "trial"), "cars": ("Name", "Origin", "model_and_market"),
}

ABBREVIATIONS: dict[str, str] = {
    "quantity": "qty", "number": "no", "miles": "mi", "gallon": "gal", "per": "p", "weight": "wt",
    "displacement": "displ", "horsepower": "hp", "acceleration": "accel", "cylinders": "cyl", "origin": "orig",
    "precipitation": "precip", "temperature": "temp", "maximum": "max", "minimum": "min", "latitude": "lat",
    "longitude": "lng", "country": "ctry", "state": "st", "city": "cty", "name": "nm", "first": "fst",
    "last": "lst", "address": "addr", "neighborhood": "nbhd", "date": "dt", "death": "dth", "year": "yr",
    "quarter": "qtr", "income": "inc", "education": "edu", "children": "kids", "occupation": "occ",
    "variety": "var", "price": "px", "symbol": "sym", "signal": "sig", "private": "pvt", "manufacturing": "mfg",
    "construction": "constr", "government": "govt", "service": "svc", "services": "svcs", "providing": "prov",
    "trade": "trd", "goods": "gds", "married": "mar", "religious": "relig", "rate": "rt", "individual": "indiv",
    "choice": "ch", "mode": "md", "close": "cls", "open": "opn", "high": "hi", "low": "lo", "wind": "wnd",
    "weather": "wx", "gender": "gdr", "type": "typ", "age": "ag", "site": "ste", "yield": "yld",
}
"""Word -> abbreviation, as teams shorten names (most are not in the matcher's own list)."""

SYNONYMS: dict[str, str] = {
    "price": "cost", "name": "title", "weight": "mass", "city": "town", "country": "nation", "state": "region",
    "gender": "sex", "race": "ethnicity", "address": "street", "neighborhood": "district", "type": "category",
    "age": "years_old", "income": "earnings", "educ": "schooling", "children": "kids", "religious": "faith",
    "occupation": "job", "affairs": "infidelity", "weather": "conditions", "precipitation": "rainfall",
    "wind": "wind_speed", "horsepower": "power", "origin": "market", "cylinders": "cyl_count", "date": "day",
    "symbol": "ticker", "open": "opening_price", "close": "closing_price", "high": "day_high", "low": "day_low",
    "unemp": "jobless_rate", "pop": "population", "infl": "inflation", "cpi": "consumer_prices",
    "realgdp": "real_output", "tbilrate": "treasury_rate", "vote": "ballot", "income_": "pay", "year": "period",
    "variety": "cultivar", "site": "location", "yield": "harvest", "mode": "transport", "choice": "chosen",
    "iata": "airport_code", "latitude": "lat_deg", "longitude": "lon_deg", "temp_max": "high_temp",
    "temp_min": "low_temp", "nonfarm": "total_jobs", "first_name": "given_name", "last_name": "surname",
    "death_date": "date_of_death", "Miles_per_Gallon": "fuel_economy", "Displacement": "engine_size",
}
"""Whole name or word -> synonym, as another team would call it."""

Convention = Literal["snake", "camel", "pascal", "upper", "kebab", "flat"]
_CONVENTIONS: tuple[Convention, ...] = ("snake", "camel", "pascal", "upper", "kebab", "flat")
_PREFIXES = ("src_", "f_", "col_", "raw_")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


@dataclass(frozen=True)
class MatchPair:
    """A REFERENCE and a NEW table from one wide table, with the true correspondences."""

    table: str
    split: Split
    seed: int
    reference: pd.DataFrame
    new: pd.DataFrame
    truth: frozenset[tuple[str, str]]
    """(new column, reference column) pairs that correspond."""
    merged: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """New column -> the reference columns it combines (one-to-many)."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Original column -> its name in the new table."""

    @property
    def unmatched(self) -> set[str]:
        """New columns that nothing in the reference corresponds to."""
        return set(self.new.columns) - {n for n, _ in self.truth}


@cache
def load_table(name: str) -> pd.DataFrame:
    """One of the bundled tables, as shipped (raises KeyError for an unknown name)."""
    package, attr = _SOURCES[name]
    if package == "vega":
        from vega_datasets import local_data

        return getattr(local_data, attr)()
    import importlib

    return importlib.import_module(f"statsmodels.datasets.{attr}").load_pandas().data


def rename(column: str, rng: np.random.Generator, convention: Convention, prefix: str) -> str:
    """The name another team gives `column`: maybe a synonym or abbreviations, then its convention and prefix."""
    words = [w.lower() for w in _WORDS.findall(column)] or [column.lower()]
    roll = rng.random()
    if roll < 0.35 and (column in SYNONYMS or "_".join(words) in SYNONYMS):
        words = SYNONYMS.get(column, SYNONYMS.get("_".join(words), column)).lower().split("_")
    elif roll < 0.35:
        words = [SYNONYMS.get(w, w) for w in words]
        words = "_".join(words).split("_")
    elif roll < 0.75:
        words = [ABBREVIATIONS.get(w, w[:4] if len(w) > 6 else w) for w in words]
    if convention == "camel":
        name = words[0] + "".join(w.capitalize() for w in words[1:])
    elif convention == "pascal":
        name = "".join(w.capitalize() for w in words)
    elif convention == "upper":
        name = "_".join(words).upper()
    elif convention == "kebab":
        name = "-".join(words)
    elif convention == "flat":
        name = "".join(words)
    else:
        name = "_".join(words)
    return prefix + name


def _perturb(s: pd.Series, rng: np.random.Generator) -> pd.Series:
    """The same values as another system writes them: noise and rounding, another date format, case and typos."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(s):
        fmt = str(rng.choice(["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y%m%d"]))
        return s.dt.strftime(fmt)
    if pd.api.types.is_bool_dtype(s):
        return s
    if pd.api.types.is_numeric_dtype(s):
        x = s.astype("float64")
        noisy = x * rng.normal(1.0, 0.03, len(x))
        if pd.api.types.is_integer_dtype(s):
            return noisy.round().astype("Int64")
        return noisy.round(2)
    text = s.astype("string")
    how = rng.integers(3)
    text = text.str.upper() if how == 0 else text.str.title() if how == 1 else text.str.lower()
    typo = rng.random(len(text)) < 0.05
    chars = np.array(list("aeiourstn"))
    return text.where(~typo, text.str.slice(0, -1) + pd.Series(rng.choice(chars, len(text)), index=text.index))


def make_pair(table: str, split: Split, seed: int, *, merge: bool = False, max_rows: int = 2000) -> MatchPair:
    """One seeded pair of `table` split the `split` way (see the module docstring)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = load_table(table)
    df = df.sample(n=min(len(df), 2 * max_rows), random_state=seed).reset_index(drop=True)
    cols = list(df.columns)
    n = len(df)
    if split in ("unionable", "view_unioned"):
        ref_rows, new_rows = df.iloc[: n // 2], df.iloc[n // 2 :]
    else:
        ref_rows, new_rows = df.iloc[: int(n * 0.7)], df.iloc[int(n * 0.3) :]
    if split == "unionable":
        ref_cols, new_cols = cols, cols
    else:
        order = list(rng.permutation(cols))
        k = max(2, round(len(cols) * (0.5 if split == "view_unioned" else 0.4)))
        shared, rest = order[:k], order[k:]
        cut = len(rest) // 2
        ref_cols = [c for c in cols if c in shared or c in rest[:cut]]
        new_cols = [c for c in cols if c in shared or c in rest[cut:]]
    reference = ref_rows[ref_cols].reset_index(drop=True)
    new = new_rows[new_cols].reset_index(drop=True).copy()
    truth = {(c, c) for c in new_cols if c in ref_cols}
    merged: dict[str, tuple[str, ...]] = {}
    spec = _MERGES.get(table)
    if merge and spec and spec[0] in new.columns and spec[1] in new.columns and {spec[0], spec[1]} <= set(ref_cols):
        a, b, name = spec
        new[name] = new[a].astype("string") + " " + new[b].astype("string")
        new = new.drop(columns=[a, b])
        truth = {t for t in truth if t[0] not in (a, b)} | {(name, a), (name, b)}
        merged[name] = (a, b)
    if split == "semantically_joinable":
        for c in new.columns:
            if c not in merged:
                new[c] = _perturb(new[c], rng)
    if rng.random() < 0.5:
        new["loaded_at"] = pd.Timestamp("2026-01-05") + pd.to_timedelta(rng.integers(0, 86400, len(new)), unit="s")
    convention = _CONVENTIONS[int(rng.integers(len(_CONVENTIONS)))]
    prefix = str(rng.choice(_PREFIXES)) if rng.random() < 0.2 else ""
    names: dict[str, str] = {}
    for c in new.columns:
        if c == "loaded_at" or rng.random() < 0.15:
            names[c] = str(c)
            continue
        name = rename(str(c), rng, convention, prefix)
        while name in names.values() or (name in reference.columns and name != c):
            name += "_2"
        names[c] = name
    new = new.rename(columns=names)
    return MatchPair(table=table, split=split, seed=seed, reference=reference, new=new,
                     truth=frozenset((names[n], r) for n, r in truth),
                     merged={names[k]: v for k, v in merged.items()}, renamed=names)


def pairs(tables: tuple[str, ...], seeds: range, *, max_rows: int = 2000) -> list[MatchPair]:
    """Every split of every table for every seed; a table with a merge spec merges on odd seeds."""
    return [make_pair(t, s, seed, merge=seed % 2 == 1, max_rows=max_rows)
            for t in tables for s in SPLITS for seed in seeds]


def recall_at_gt(report: MatchReport, truth: frozenset[tuple[str, str]]) -> float:
    """Share of the ground truth among the top |truth| candidate pairs ranked by probability."""
    if not truth:
        return 1.0
    listed = sorted(((c.probability, c.score, m.column, c.column) for m in report.matches for c in m.candidates),
                    reverse=True)
    top = {(n, r) for _, _, n, r in listed[: len(truth)]}
    return len(top & truth) / len(truth)


def answer_right(m: ColumnMatch, pair: MatchPair) -> bool:
    """Whether a column's answer (its match, its one-to-many sources, or no-match) is the true one."""
    true_refs = {r for n, r in pair.truth if n == m.column}
    if m.correspondence == "no_match":
        return not true_refs
    if m.correspondence == "one_to_many":
        return set(m.sources) == true_refs
    return m.match in true_refs


def ece(points: list[tuple[float, bool]], bins: int = 10) -> float:
    """Expected calibration error: |mean probability - share right| over equal-width bins, weighted by size."""
    if not points:
        return 0.0
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            conf = sum(p for p, _ in inside) / len(inside)
            acc = sum(1 for _, y in inside if y) / len(inside)
            total += len(inside) * abs(conf - acc)
    return total / len(points)
