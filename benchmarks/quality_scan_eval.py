#!/usr/bin/env python
"""How well `pipewarden quality scan` (tools.quality_scan) finds errors on tables it was not tuned on.

Clean tables are built here (seeded): `people` (ids, names, e-mails, zip -> city -> state, phone, dates, income),
`orders` (SKU codes, status, quantities, prices, country -> currency, order dates, and a contract declaring types,
allowed statuses, bounds and the unique order_id), `sensors` (sensor -> site, timestamps, readings), and `wine`
(scikit-learn's bundled wine table, read from the installed package, with its class name). Errors of each type are
injected into a copy with a seeded RNG, each into its own cells:

  missing     "N/A", "-", "?", "", "null", "none", ... and 9999 / -1 sentinels in numeric columns
  format      a date written 15/03/2021, an e-mail without its @, a zip code missing a digit, a phone without its
              separators, a SKU in lower case, a number with a unit
  typo        one deleted, inserted, swapped or replaced letter in a categorical value
  outlier     a number times 20 to 1000 (or negative), a date 80 to 200 years off
  dependency  a dependent value (city for its zip, currency for its country, site for its sensor) swapped for
              another valid one
  duplicate   exact copies of clean rows inserted at random positions (a whole-row finding); on `orders` with its
              contract, also rows reusing another row's order_id (a key duplicate)

The dirty table is written as CSV and scanned through `scan_file` (the path the CLI takes). Reported per error
type: strict precision / recall / F1 (a cell counts when the scanner's kind is that type's: typo also as
`domain`, outlier also as `range`), recall by any detector, and overall cell-level precision / recall / F1; then
the flags on each clean table (false positives per 1,000 cells), and the scan rate on 100,000 rows.

Run from the repo root:  .venv/bin/python benchmarks/quality_scan_eval.py [--rows 2000] [--seeds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TYPES = ("missing", "format", "typo", "outlier", "dependency", "duplicate")
KINDS = {"missing": {"missing"}, "format": {"format"}, "typo": {"typo", "domain"}, "outlier": {"outlier", "range"},
         "dependency": {"dependency"}, "duplicate": {"duplicate"}}
FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
         "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
         "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony", "Margaret", "Mark", "Sandra"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
        "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson"]
CITIES = {"MA": ["Boston", "Cambridge", "Springfield", "Worcester", "Lowell"],
          "NY": ["Albany", "Buffalo", "Rochester", "Syracuse", "Yonkers"],
          "NJ": ["Newark", "Trenton", "Camden", "Paterson", "Hoboken"],
          "CT": ["Hartford", "Stamford", "Waterbury", "Norwalk", "Danbury"]}
STATUS = ["placed", "paid", "shipped", "delivered", "cancelled"]
COUNTRY_CURRENCY = {"DE": "EUR", "FR": "EUR", "IT": "EUR", "US": "USD", "GB": "GBP", "CH": "CHF", "JP": "JPY",
                    "SE": "SEK", "NO": "NOK", "DK": "DKK"}
SITES = ["Harbour", "Airport", "Riverside", "Old Town", "Hillcrest"]
TOKENS = ["N/A", "-", "?", "", "null", "none", "NULL", "n/a", "NaN", "--"]


# --------------------------------------------------------------------------- clean tables
def _dates(rng: np.random.Generator, n: int, start: str, days: int) -> pd.Series:
    return (pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, days, n), unit="D")).strftime("%Y-%m-%d")


def people(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, Any]]:
    zips = {f"0{1000 + i * 37:04d}"[:5]: (st, city) for i, (st, city) in
            enumerate((st, c) for st, cs in CITIES.items() for c in cs for _ in range(3))}
    zip_keys = list(zips)
    z = rng.choice(zip_keys, n)
    first, last = rng.choice(FIRST, n), rng.choice(LAST, n)
    df = pd.DataFrame({
        "person_id": np.arange(1, n + 1).astype(str),
        "first_name": first, "last_name": last,
        "email": [f"{f.lower()}.{ln.lower()}{rng.integers(1, 99)}@example.{rng.choice(['com', 'org', 'net'])}"
                  for f, ln in zip(first, last, strict=True)],
        "zip": z, "city": [zips[x][1] for x in z], "state": [zips[x][0] for x in z],
        "phone": [f"({rng.integers(200, 999)}) 555-{rng.integers(0, 9999):04d}" for _ in range(n)],
        "birth_date": _dates(rng, n, "1950-01-01", 50 * 365),
        "signup_date": _dates(rng, n, "2019-01-01", 4 * 365),
        "income": np.round(rng.lognormal(10.8, 0.5, n), 2).astype(str),
        "gender": rng.choice(["female", "male", "other"], n, p=[0.49, 0.49, 0.02]),
    })
    roles = {"missing": list(df.columns[1:]), "typo": ["first_name", "last_name", "city", "gender"],
             "format": ["email", "zip", "phone", "birth_date", "signup_date"], "outlier": ["income", "birth_date"],
             "dependency": ["city"], "numeric": ["income"]}
    return df, roles


def orders(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, Any]]:
    country = rng.choice(list(COUNTRY_CURRENCY), n)
    qty = rng.poisson(2, n) + 1
    price = np.round(rng.lognormal(3, 0.8, n), 2)
    df = pd.DataFrame({
        "order_id": np.arange(100001, 100001 + n).astype(str),
        "customer_id": rng.integers(1, max(n // 4, 2), n).astype(str),
        "sku": [f"SKU-{x:05d}" for x in rng.integers(0, 99999, n)],
        "status": rng.choice(STATUS, n, p=[0.1, 0.2, 0.3, 0.35, 0.05]),
        "quantity": qty.astype(str), "unit_price": price.astype(str), "amount": np.round(qty * price, 2).astype(str),
        "country": country, "currency": [COUNTRY_CURRENCY[c] for c in country],
        "order_date": _dates(rng, n, "2024-01-01", 365),
    })
    roles = {"missing": list(df.columns[1:]), "typo": ["status"], "format": ["sku", "order_date"],
             "outlier": ["unit_price", "amount", "order_date"], "dependency": ["currency"],
             "numeric": ["quantity", "unit_price", "amount"]}
    return df, roles


def orders_contract() -> Any:
    from pipewarden.policies.contract import Contract

    cols = [{"name": "order_id", "type": "integer", "nullable": False, "min": 1},
            {"name": "customer_id", "type": "integer", "nullable": False, "min": 1},
            {"name": "sku", "type": "string", "nullable": False, "max_length": 9},
            {"name": "status", "type": "string", "nullable": False, "allowed": STATUS},
            {"name": "quantity", "type": "integer", "nullable": False, "min": 1, "max": 100},
            {"name": "unit_price", "type": "float", "nullable": False, "min": 0, "max": 5000},
            {"name": "amount", "type": "float", "nullable": False, "min": 0, "max": 50000},
            {"name": "country", "type": "string", "nullable": False, "allowed": list(COUNTRY_CURRENCY)},
            {"name": "currency", "type": "string", "nullable": False},
            {"name": "order_date", "type": "timestamp", "nullable": False}]
    return Contract(dataset="orders", owner="eval", columns=cols, unique=[["order_id"]])


def sensors(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, Any]]:
    ids = [f"S-{i:03d}" for i in range(1, 31)]
    site_of = {s: SITES[i % len(SITES)] for i, s in enumerate(ids)}
    sid = rng.choice(ids, n)
    t = pd.Timestamp("2025-03-01") + pd.to_timedelta(np.sort(rng.integers(0, 30 * 86400, n)), unit="s")
    df = pd.DataFrame({
        "sensor_id": sid, "site": [site_of[s] for s in sid], "ts": t.strftime("%Y-%m-%d %H:%M:%S"),
        "temperature": np.round(rng.normal(18, 4, n), 2).astype(str),
        "humidity": np.round(rng.uniform(30, 70, n), 1).astype(str),
        "pressure": np.round(rng.normal(1013, 6, n), 1).astype(str),
        "status": rng.choice(["ok", "warning", "maintenance"], n, p=[0.9, 0.08, 0.02]),
    })
    roles = {"missing": list(df.columns), "typo": ["site", "status"], "format": ["sensor_id", "ts"],
             "outlier": ["temperature", "humidity", "pressure"], "dependency": ["site"],
             "numeric": ["temperature", "humidity", "pressure"]}
    return df, roles


def wine(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, Any]]:
    """scikit-learn's bundled wine table (178 rows, read from the installed package), resampled to `n` rows with
    a little noise so rows are not exact copies, plus the cultivar's name."""
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    frame = data.frame
    pick = rng.integers(0, len(frame), n)
    out = frame.iloc[pick].reset_index(drop=True)
    numeric = [c for c in out.columns if c != "target"]
    noise = rng.normal(1, 0.02, (n, len(numeric)))
    out[numeric] = out[numeric].to_numpy() * noise
    names = {0: "Barolo", 1: "Grignolino", 2: "Barbera"}
    df = pd.DataFrame({"cultivar": out["target"].map(names)})
    cols = ["alcohol", "malic_acid", "ash", "magnesium", "flavanoids", "color_intensity", "proline"]
    for c in cols:
        df[c] = np.round(out[c], 3).astype(str)
    roles = {"missing": list(df.columns), "typo": ["cultivar"], "format": [], "outlier": cols, "dependency": [],
             "numeric": cols}
    return df, roles


TABLES = {"people": people, "orders": orders, "sensors": sensors, "wine": wine}


# --------------------------------------------------------------------------- injecting errors
def _typo(value: str, rng: np.random.Generator) -> str:
    if len(value) < 4:
        return value + "abcdefghijklmnopqrstuvwxyz"[rng.integers(0, 26)]
    i = int(rng.integers(1, len(value) - 1))
    op = rng.integers(0, 4)
    if op == 0:
        return value[:i] + value[i + 1:]
    if op == 1:
        return value[:i] + "abcdefghijklmnopqrstuvwxyz"[rng.integers(0, 26)] + value[i:]
    if op == 2:
        return value[:i - 1] + value[i] + value[i - 1] + value[i + 1:]
    return value[:i] + "aeioustrn"[rng.integers(0, 9)] + value[i + 1:]


def _format(col: str, value: str, rng: np.random.Generator) -> str:
    if "@" in value:
        return value.replace("@", " at ") if rng.random() < 0.5 else value.replace("@", "")
    if col == "zip":
        return value[1:] if rng.random() < 0.5 else value[:2] + "O" + value[3:]
    if value.startswith("("):
        return value.replace("(", "").replace(") ", "").replace("-", "")
    if value.startswith("SKU-") or value.startswith("S-"):
        return value.lower() if rng.random() < 0.5 else value.replace("-", "")
    if len(value) >= 10 and value[4] == "-":
        y, m, d = value[:4], value[5:7], value[8:10]
        return f"{d}/{m}/{y}" if rng.random() < 0.5 else f"{int(m)}/{int(d)}/{y[2:]}" + value[10:]
    return value + " kg"


def _outlier(col: str, value: str, rng: np.random.Generator) -> str:
    if len(value) >= 10 and value[4] == "-":
        year = int(value[:4]) + int(rng.choice([-1, 1]) * rng.integers(80, 200))
        return f"{year:04d}" + value[4:]
    x = float(value)
    f = float(rng.choice([20, 50, 100, 1000]))
    return str(round(-abs(x) * f if rng.random() < 0.2 else x * f, 2))


def inject(df: pd.DataFrame, roles: dict[str, Any], rng: np.random.Generator, rate: float = 0.01,
           contract: bool = False) -> tuple[pd.DataFrame, dict[tuple[int, str | None], str]]:
    """A dirty copy of `df` and the truth: (row in the dirty file, column or None for a whole row) -> error type."""
    dirty = df.copy()
    n = len(df)
    truth: dict[tuple[int, str | None], str] = {}
    used: set[tuple[int, str]] = set()
    dirty_rows: set[int] = set()

    def cells(columns: list[str], count: int) -> list[tuple[int, str]]:
        out = []
        while columns and len(out) < count:
            cell = (int(rng.integers(0, n)), str(rng.choice(columns)))
            if cell not in used:
                used.add(cell)
                out.append(cell)
        return out

    per_type = max(2, int(rate * n))
    makers = {
        "missing": lambda r, c: str(rng.choice(["9999", "99999", "-1"])) if c in roles["numeric"]
        and rng.random() < 0.3 else str(rng.choice(TOKENS)),
        "format": lambda r, c: _format(c, df.at[r, c], rng),
        "typo": lambda r, c: _typo(df.at[r, c], rng),
        "outlier": lambda r, c: _outlier(c, df.at[r, c], rng),
        "dependency": lambda r, c: str(rng.choice([v for v in pd.unique(df[c]) if v != df.at[r, c]])),
    }
    for kind, make in makers.items():
        for r, c in cells(roles[kind], per_type):
            value = make(r, c)
            if value != df.at[r, c]:
                dirty.at[r, c] = value
                truth[(r, c)] = kind
                dirty_rows.add(r)
    # duplicates: copies of untouched rows (and, with a contract, rows reusing an order_id), at random positions
    clean_rows = [r for r in range(n) if r not in dirty_rows]
    copies = [int(x) for x in rng.choice(clean_rows, per_type, replace=False)]
    extra = [dirty.iloc[r].copy() for r in copies]
    key_dups: list[pd.Series] = []
    if contract:
        for r in rng.choice(clean_rows, per_type, replace=False):
            row = dirty.iloc[int(rng.integers(0, n))].copy()
            row["order_id"] = dirty.at[int(r), "order_id"]
            key_dups.append(row)
    rows = [dirty.iloc[i] for i in range(n)]
    origin: list[tuple[str, int]] = [("orig", i) for i in range(n)]
    for tag, block in (("dup", extra), ("key", key_dups)):
        for row in block:
            pos = int(rng.integers(n // 10, len(rows) + 1))  # after the first rows, so the copy comes later
            rows.insert(pos, row)
            origin.insert(pos, (tag, -1))
    out = pd.DataFrame(rows).reset_index(drop=True)
    new_truth: dict[tuple[int, str | None], str] = {}
    position = {o[1]: i for i, o in enumerate(origin) if o[0] == "orig"}
    for (r, c), t in truth.items():
        new_truth[(position[r], c)] = t
    for i, (tag, _) in enumerate(origin):
        if tag == "key":
            new_truth[(i, "order_id")] = "duplicate"
    # an exact copy may land before its original: the later of the two is the duplicate
    for i in np.flatnonzero(out.duplicated(keep="first").to_numpy()):
        new_truth[(int(i), None)] = "duplicate"
    # a key duplicate inserted before its original: the scanner flags the later one; count the later one as truth
    return out, _key_truth_later(out, new_truth)


def _key_truth_later(out: pd.DataFrame, truth: dict[tuple[int, str | None], str]) -> dict[tuple[int, str | None], str]:
    fixed = {k: v for k, v in truth.items() if not (k[1] == "order_id" and v == "duplicate")}
    if "order_id" in out.columns:
        seen = out["order_id"].duplicated(keep="first").to_numpy()
        exact = out.duplicated(keep="first").to_numpy()
        for i in np.flatnonzero(seen & ~exact):
            fixed[(int(i), "order_id")] = "duplicate"
    return fixed


# --------------------------------------------------------------------------- scoring
def score(flags: list[Any], truth: dict[tuple[int, str | None], str]) -> dict[str, dict[str, float]]:
    """Counts per error type (strict: the flag's kind is the type's) and overall (any flag on a true cell)."""
    predicted = {(f.row, f.column): f.kind for f in flags}
    out: dict[str, dict[str, float]] = {}
    for t in TYPES:
        cells = [c for c, v in truth.items() if v == t]
        tp = sum(1 for c in cells if predicted.get(c) in KINDS[t])
        flagged = sum(1 for k in predicted.values() if k in KINDS[t])
        out[t] = {"truth": len(cells), "flagged": flagged, "tp": tp,
                  "any": sum(1 for c in cells if c in predicted)}
    hit = sum(1 for c in predicted if c in truth)
    out["all"] = {"truth": len(truth), "flagged": len(predicted), "tp": hit, "any": hit}
    return out


def prf(c: dict[str, float]) -> tuple[float, float, float, float]:
    p = c["tp"] / c["flagged"] if c["flagged"] else float("nan")
    r = c["tp"] / c["truth"] if c["truth"] else float("nan")
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    anyr = c["any"] / c["truth"] if c["truth"] else float("nan")
    return p, r, f, anyr


def run(rows: int, seeds: int, say: Any) -> dict[str, Any]:
    from pipewarden.tools.quality_scan import scan_file, scan_frame

    totals: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    clean_fp: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            for name, build in TABLES.items():
                for with_contract in ([False, True] if name == "orders" else [False]):
                    label = f"{name}+contract" if with_contract else name
                    rng = np.random.default_rng(seed * 1000 + len(name))
                    clean, roles = build(rows, rng)
                    contract = orders_contract() if with_contract else None
                    base = scan_frame(clean, contract)
                    clean_fp[label].append(1000 * len(base.flags) / clean.size)
                    dirty, truth = inject(clean, roles, rng, contract=with_contract)
                    path = Path(tmp) / f"{label}-{seed}.csv"
                    dirty.to_csv(path, index=False)
                    if contract is not None:
                        report = scan_frame(__import__("pipewarden.tools.quality_scan", fromlist=["read_raw"])
                                            .read_raw(path), contract, source=str(path))
                    else:
                        report = scan_file(path)
                    for t, c in score(report.flags, truth).items():
                        for k, v in c.items():
                            totals[label][t][k] += v
                            totals["ALL"][t][k] += v
                    say(f"{label} seed {seed}: {len(report.flags)} flags, {len(truth)} injected")
    # speed on 100,000 rows (people), read from CSV like the CLI
    rng = np.random.default_rng(7)
    big, roles = people(100_000, rng)
    dirty, _ = inject(big, roles, rng, rate=0.002)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        dirty.to_csv(path, index=False)
        t0 = time.perf_counter()
        report = scan_file(path)
        elapsed = time.perf_counter() - t0
    return {"totals": json.loads(json.dumps(totals)), "clean_fp_per_1000_cells": {k: float(np.mean(v))
            for k, v in clean_fp.items()}, "speed": {"rows": len(dirty), "columns": dirty.shape[1],
            "seconds": round(elapsed, 2), "rows_per_s": round(len(dirty) / elapsed), "flags": len(report.flags)}}


def render(result: dict[str, Any]) -> str:
    lines = []
    totals = result["totals"]
    for label, types in sorted(totals.items(), key=lambda kv: kv[0] == "ALL"):  # every table, then all together
        lines.append(f"\n{label}")
        lines.append(f"  {'error type':<11} {'injected':>8} {'flagged':>8} {'precision':>9} {'recall':>7} {'F1':>6} "
                     f"{'any-kind recall':>15}")
        for t in (*TYPES, "all"):
            c = types.get(t)
            if not c or (not c["truth"] and not c["flagged"]):
                continue
            p, r, f, a = prf(c)
            lines.append(f"  {t:<11} {int(c['truth']):>8} {int(c['flagged']):>8} {p:>9.2f} {r:>7.2f} {f:>6.2f} {a:>15.2f}")
    lines.append("\nflags on the clean tables (false positives per 1,000 cells): " + ", ".join(
        f"{k} {v:.2f}" for k, v in result["clean_fp_per_1000_cells"].items()))
    s = result["speed"]
    lines.append(f"speed: {s['rows']:,} rows x {s['columns']} columns (CSV) scanned in {s['seconds']} s "
                 f"({s['rows_per_s']:,} rows/s), {s['flags']:,} flags")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2000, help="rows per clean table (default 2000)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per table (default 3)")
    p.add_argument("--json", dest="json_path", type=Path, help="also write every figure to this file")
    args = p.parse_args(argv)
    result = run(args.rows, args.seeds, say=lambda m: print(m, file=sys.stderr))
    print(render(result))
    if args.json_path:
        args.json_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
