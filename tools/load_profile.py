"""A compact profile of each accepted load, stored once, so the quality stage reads the history from profiles
instead of scanning every earlier load's rows on every batch.

`write_profile(wh, dataset, load_id)` runs when validate accepts a load, in the same warehouse transaction as its
rows (`flows/validate.py`): for the load's accepted rows in `raw_<dataset>`, the event-time span, the null share of
every column, and the value counts of the columns the quality policy compares across loads (the referential and the
distribution columns). Value counts, not samples: the history built from them is the one `tools.quality.
load_history` computes from the rows (the same null shares, broken-reference shares and known broken values against
the reference table as it is now, the same pooled decile bins), which `tests/flows/test_quality_incremental.py`
holds it to. A column with more than `MAX_DISTINCT` distinct values in a load is not counted (its profile would not
be compact): a distribution column like that is read from the rows when the history is built, as before, and a
history that needs any other missing piece (a load without a profile: accepted before profiles existed, or under a
policy that named other columns) is read from the rows altogether.

Profiles live in the warehouse table `meta_load_profiles` (dataset, load_id, profile JSON), in SQL DuckDB and
PostgreSQL both run. One difference from the row scan: a history over more than `max_rows` rows pools every
value instead of a random sample of them, so its bins no longer vary from run to run.

Public names: `LoadProfile`, `PROFILE_TABLE`, `write_profile`, `history_from_profiles`, `quality_history`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from pipewarden.policies.contract import Contract
from pipewarden.policies.quality import DatasetQuality, dataset_quality
from pipewarden.tools.warehouse import quote_ident as _q

PROFILE_TABLE = "meta_load_profiles"
PROFILE_DDL = f"""
CREATE TABLE IF NOT EXISTS {PROFILE_TABLE} (
    dataset VARCHAR NOT NULL,
    load_id VARCHAR NOT NULL,
    profile VARCHAR NOT NULL
)
"""
MAX_DISTINCT = 50_000


class LoadProfile(BaseModel):
    """What one accepted load looked like, in the terms the quality history uses."""

    load_id: str
    rows: int
    min_time: datetime | None = None
    max_time: datetime | None = None
    time_column: str | None = None
    null_shares: dict[str, float] = Field(default_factory=dict)
    text_counts: dict[str, list[tuple[str, int]]] = Field(
        default_factory=dict, description="Referential columns: each non-null value as text, and its rows.")
    number_counts: dict[str, list[tuple[float, int]]] = Field(
        default_factory=dict, description="Distribution columns: each non-null value as a double, and its rows.")


def profile_load(wh: Any, dataset: str, load_id: str, dq: DatasetQuality | None = None, *,
                 rows: str | None = None, columns: list[str] | None = None) -> LoadProfile:
    """The profile of one load's accepted rows in `raw_<dataset>` (read in the caller's connection).

    `rows` names a relation that holds exactly those rows, with `raw_<dataset>`'s columns and types but `_load_id`
    (the temporary table validate inserted them from): read instead of `raw_<dataset>` filtered by load, so the
    profile costs the load's rows, not the table's. `columns`: `raw_<dataset>`'s columns, when the caller knows
    them."""
    from pipewarden.tools.quality import _utc

    dq = dq or dataset_quality(dataset)
    raw = rows or _q(f"raw_{dataset}")
    where, by_load = ("", []) if rows else (" WHERE _load_id = ?", [load_id])
    present = [c for c in (wh.columns(f"raw_{dataset}") if columns is None else columns) if c != "_load_id"]
    tcol = dq.time_column if dq.time_column in present else None
    select = ["count(*)"] + ([f"min({_q(tcol)})", f"max({_q(tcol)})"] if tcol else ["NULL", "NULL"])
    select += [f"avg(CASE WHEN {_q(c)} IS NULL THEN 1.0 ELSE 0.0 END)" for c in present]
    texts = list(dict.fromkeys(r.column for r in dq.checks.referential.references if r.column in present))
    numbers = [c for c in dict.fromkeys(dq.checks.distribution.columns) if c in present]
    if wh.is_duckdb:  # a column far too varied to count is known from the same scan (an estimate is enough here)
        select += [f"approx_count_distinct({_q(c)})" for c in numbers]
    row = wh.execute(f"SELECT {', '.join(select)} FROM {raw}{where}", by_load)[0]
    nulls = row[3:3 + len(present)]
    profile = LoadProfile(load_id=load_id, rows=int(row[0]), min_time=_utc(row[1]), max_time=_utc(row[2]),
                          time_column=tcol,
                          null_shares={c: float(v) for c, v in zip(present, nulls, strict=True) if v is not None})
    if wh.is_duckdb:
        varied = {c for c, d in zip(numbers, row[3 + len(present):], strict=True) if d and d > 2 * MAX_DISTINCT}
        numbers = [c for c in numbers if c not in varied]
    # the value counts of every compared column in one statement, each branch stopping past MAX_DISTINCT values
    branches: list[str] = []
    for i, col in enumerate([*texts, *numbers]):
        value = (f"CAST({_q(col)} AS VARCHAR) AS t, CAST(NULL AS DOUBLE PRECISION) AS x" if i < len(texts)
                 else f"CAST(NULL AS VARCHAR) AS t, CAST({_q(col)} AS DOUBLE PRECISION) AS x")
        branches.append(f"(SELECT {i} AS i, {value}, count(*) AS n FROM {raw} {where or ' WHERE TRUE'} AND "
                        f"{_q(col)} IS NOT NULL GROUP BY 1, 2, 3 LIMIT {MAX_DISTINCT + 1})")
    counted: dict[int, list[tuple[Any, int]]] = {i: [] for i in range(len(branches))}
    if branches:
        for i, t, x, n in wh.execute(" UNION ALL ".join(branches), by_load * len(branches)):
            counted[int(i)].append((t if int(i) < len(texts) else x, int(n)))
    for i, col in enumerate([*texts, *numbers]):
        if len(counted[i]) > MAX_DISTINCT:
            continue  # too varied to be compact: a history that needs it reads the rows
        if i < len(texts):
            profile.text_counts[col] = [(str(v), n) for v, n in counted[i]]
        else:
            profile.number_counts[col] = [(float(v), n) for v, n in counted[i] if not np.isnan(float(v))]
    return profile


def write_profile(wh: Any, dataset: str, load_id: str, *, rows: str | None = None,
                  columns: list[str] | None = None) -> LoadProfile:
    """Profile a load just accepted and store it, replacing an earlier profile (in the caller's transaction).
    `rows`, `columns`: see `profile_load`."""
    profile = profile_load(wh, dataset, load_id, rows=rows, columns=columns)
    wh.execute(PROFILE_DDL)
    wh.execute(f"DELETE FROM {PROFILE_TABLE} WHERE dataset = ? AND load_id = ?", [dataset, load_id])
    wh.execute(f"INSERT INTO {PROFILE_TABLE} (dataset, load_id, profile) VALUES (?, ?, ?)",
               [dataset, load_id, profile.model_dump_json()])
    return profile


def history_from_profiles(wh: Any, dataset: str, exclude_load_id: str | None, dq: DatasetQuality,
                          contract: Contract | None, *, max_rows: int = 400_000) -> Any:
    """The `tools.quality.History` of `dataset` built from the stored profiles of its accepted loads, or None when a
    load has no profile or a profile lacks a column the policy needs now (then read it from the rows)."""
    from pipewarden.tools.quality import (
        ColumnBins,
        History,
        LoadRecord,
        ReferenceHistory,
        _null_columns,
        _utc,
        bin_shares,
    )

    h = History(dataset=dataset)
    if not wh.has_table("meta_loads"):
        return h
    rows = wh.execute(
        "SELECT load_id, source, arrived_at, rows, status FROM meta_loads WHERE dataset = ? AND status = 'accepted' "
        "AND load_id <> ? ORDER BY arrived_at", [dataset, exclude_load_id or ""])
    loads = [LoadRecord(load_id=r[0], source=r[1], arrived_at=_utc(r[2]), rows=int(r[3]), status=r[4]) for r in rows]
    raw = f"raw_{dataset}"
    if not loads or not wh.has_table(raw):
        h.loads = loads
        return h
    if not wh.has_table(PROFILE_TABLE):
        return None
    stored = dict(wh.execute(f"SELECT load_id, profile FROM {PROFILE_TABLE} WHERE dataset = ?", [dataset]))
    profiles: list[LoadProfile] = []
    for ld in loads:
        if ld.load_id not in stored:
            return None
        profiles.append(LoadProfile.model_validate(json.loads(stored[ld.load_id])))
    present = set(wh.columns(raw))
    tcol = dq.time_column if dq.time_column in present else None
    nulls = [c for c in (_null_columns(dq, contract) if contract else []) if c in present]
    refs = [r for r in dq.checks.referential.references if r.column in present]
    dist = [c for c in dq.checks.distribution.columns if c in present]
    for p in profiles:
        if p.time_column != tcol or any(c not in p.null_shares for c in nulls) \
                or any(r.column not in p.text_counts for r in refs):
            return None
    from_rows = [c for c in dist if any(c not in p.number_counts for p in profiles)]  # too varied to count
    with_rows = {p.load_id for p in profiles if p.rows}  # a load whose rows were taken out has no GROUP BY row
    for ld, p in zip(loads, profiles, strict=True):
        if ld.load_id in with_rows:
            ld.min_time, ld.max_time = p.min_time, p.max_time
            for c in nulls:
                h.null_shares.setdefault(c, []).append(p.null_shares[c])
    h.loads = loads
    for ref in refs:
        ref_table = f"raw_{ref.ref_dataset}"
        if not wh.has_table(ref_table):
            continue
        keys = [str(k[0]) for k in wh.execute(
            f"SELECT DISTINCT CAST({_q(ref.ref_column)} AS VARCHAR) FROM {ref_table} "
            f"WHERE {_q(ref.ref_column)} IS NOT NULL")]
        known = set(keys)
        shares: list[float] = []
        broken: set[str] = set()
        for p in profiles:
            counts = p.text_counts[ref.column]
            total = sum(n for _, n in counts)
            if not total:
                continue
            missing = [(v, n) for v, n in counts if v not in known]
            shares.append(sum(n for _, n in missing) / total)
            broken.update(v for v, _ in missing)
        source = wh.execute("SELECT source FROM meta_loads WHERE dataset = ? ORDER BY arrived_at DESC LIMIT 1",
                            [ref.ref_dataset])
        h.references.append(ReferenceHistory(
            column=ref.column, reference=ref.reference, keys=keys, known_broken=sorted(broken), shares=shares,
            reference_source=source[0][0] if source else ""))
    pol = dq.checks.distribution
    scanned = _values_from_rows(wh, raw, [ld.load_id for ld in loads], from_rows, sum(ld.rows for ld in loads),
                                max_rows) if from_rows else {}
    for col in dist:
        if col in scanned:
            values = scanned[col]
        else:
            pairs = [pair for p in profiles for pair in p.number_counts[col]]
            values = np.repeat(np.array([v for v, _ in pairs], dtype="float64"), [n for _, n in pairs])
        if not len(values):
            continue
        edges = sorted({float(q) for q in np.quantile(values, np.linspace(0, 1, pol.bins + 1)[1:-1])})
        h.bins.append(ColumnBins(column=col, edges=edges, shares=bin_shares(values, edges), rows=len(values)))
    return h


def _values_from_rows(wh: Any, raw: str, ids: list[str], columns: list[str], total: int, max_rows: int
                      ) -> dict[str, np.ndarray]:
    """The non-null values of `columns` over the loads `ids`, read from the rows as `tools.quality.load_history`
    reads them (a random sample of about `max_rows` rows when the loads hold more)."""
    import pandas as pd

    from pipewarden.tools.quality import _in_list, _sample

    where, params = _in_list(wh, "_load_id", ids)
    sample = _sample(wh, max_rows) if total > max_rows else ""
    cols = ", ".join(f"CAST({_q(c)} AS DOUBLE PRECISION) AS {_q(c)}" for c in columns)
    arrays = wh.read_frame(f"SELECT {cols} FROM {raw} WHERE {where}{sample}", params)
    out: dict[str, np.ndarray] = {}
    for col in columns:
        values = pd.to_numeric(arrays[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        out[col] = values[~np.isnan(values)]
    return out


def quality_history(dataset: str, exclude_load_id: str | None, dq: DatasetQuality, contract: Contract | None) -> Any:
    """The history the quality stage judges a batch against: from the stored profiles when every accepted load has
    one, else from the rows (`tools.quality.load_history`)."""
    from pipewarden.tools.quality import History, _connect, load_history

    with _connect() as wh:
        if wh is None:
            return History(dataset=dataset)
        h = history_from_profiles(wh, dataset, exclude_load_id, dq, contract)
    return h if h is not None else load_history(dataset, exclude_load_id, dq, contract)
