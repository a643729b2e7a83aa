"""(g) Big batches: a 20-column batch of 1M and 10M rows checked and quarantined, GX path against the pushdown path.

The data is generated in a temporary folder by DuckDB (never committed): 20 columns (integers, floats with nulls,
strings, timestamps, a boolean), about 0.5% of the rows breaking one rule or two (a bound, a null, a value outside
its set, a string too long, a repeated id), under a contract with a rule of every kind. Each case runs in its own
child process, so its peak memory (the RSS high-water mark from `resource.getrusage`, imports included) is its own:

- `bare`: a bare DuckDB scan of the Parquet file evaluating the same predicates (`tools.pushdown.compile_rules`,
  one count per rule): the floor the pushdown path is compared with (target: within 3x);
- `pushdown_check`: `tools.pushdown.run_pushdown` counts only (what `pipewarden check` does on a big file);
- `pushdown_validate`: the same, with the rejected rows quarantined (reason and row JSON, chunks of 100k rows) and
  the accepted rows inserted, in a DuckDB warehouse file (what `flows.validate.validate_pushdown` does);
- `gx`: the in-memory path, the file read into pandas and `tools.checks.run_checks` on GX, the quarantine rows
  built (reason and row JSON) and both quarantined and accepted rows (`conform_to_contract`) written to a DuckDB
  warehouse file, as `flows.validate.validate` does in memory; run under an address-space limit (`GX_LIMIT_GB`) so it cannot starve the machine,
  and reported as over it when it hits it.

Reported per case and size: wall seconds, rows per second, peak RSS in MB, rows rejected, and the pushdown check's
time over the bare scan. Called by bench.py (`--big-batch-only`); prints nothing itself and asserts nothing.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = (1_000_000, 10_000_000)
CASES = ("bare", "pushdown_check", "pushdown_validate", "gx")
GX_LIMIT_GB = 12
THROUGHPUT_TARGET = 3.0
MEMORY_TARGET_MB = 2048


def contract() -> Any:
    """The benchmark's contract: a rule of every kind over 20 columns."""
    from pipewarden.policies.contract import ColumnContract, Contract

    cols = [ColumnContract(name="id", type="integer", nullable=False)]
    cols += [ColumnContract(name=f"i{k}", type="integer", nullable=k != 1, min=0, max=1000) for k in range(1, 7)]
    cols += [ColumnContract(name=f"f{k}", type="float", nullable=k != 1, min=-1000, max=1000) for k in range(1, 6)]
    cols += [ColumnContract(name="s1", type="string", nullable=False, allowed=["a", "b", "c", "d"]),
             ColumnContract(name="s2", type="string", nullable=True, max_length=8),
             ColumnContract(name="s3", type="string", nullable=True),
             ColumnContract(name="s4", type="string", nullable=False),
             ColumnContract(name="t1", type="timestamp", nullable=False),
             ColumnContract(name="t2", type="timestamp", nullable=True),
             ColumnContract(name="b1", type="boolean", nullable=True)]
    return Contract(dataset="bench", owner="bench", max_failure_rate=0.05, columns=cols, unique=[["id"]])


def generate(path: Path, rows: int) -> None:
    """Write the batch as Parquet with DuckDB (streamed, no pandas)."""
    import duckdb

    ints = ", ".join(f"CAST((range * {7 + k}) % 1000 AS BIGINT) AS i{k}" if k != 1 else
                     "CASE WHEN range % 1000 = 1 THEN 5000 ELSE range % 1000 END AS i1" for k in range(1, 7))
    floats = ", ".join(("CASE WHEN range % 997 = 3 THEN NULL ELSE CAST(range % 1999 AS DOUBLE) - 999.5 END AS f1"
                        if k == 1 else f"CASE WHEN range % 50 = {k} THEN NULL ELSE "
                        f"CAST((range * {k}) % 1999 AS DOUBLE) - 999.25 END AS f{k}") for k in range(1, 6))
    con = duckdb.connect(config={"memory_limit": "1GB"})
    try:
        con.execute(f"""COPY (SELECT
            CASE WHEN range % 100003 = 11 THEN range - 1 ELSE range END AS id, {ints}, {floats},
            CASE WHEN range % 1009 = 5 THEN 'zz' ELSE ['a', 'b', 'c', 'd'][(range % 4) + 1] END AS s1,
            CASE WHEN range % 1013 = 7 THEN 'toolongvalue' ELSE 'v' || (range % 100000) END AS s2,
            CASE WHEN range % 10 = 0 THEN NULL ELSE 'note ' || (range % 777) END AS s3,
            'k' || (range % 5000) AS s4,
            TIMESTAMP '2024-01-01' + to_seconds(range % 2592000) AS t1,
            CASE WHEN range % 20 = 0 THEN NULL ELSE TIMESTAMP '2024-02-01' + to_seconds(range % 86400) END AS t2,
            range % 3 = 0 AS b1
            FROM range({int(rows)})) TO '{path}' (FORMAT parquet)""")
    finally:
        con.close()


# --------------------------------------------------------------------------- the cases (each in a child process)
def _case_bare(path: Path, work: Path) -> dict[str, Any]:
    import duckdb

    from pipewarden.tools.pushdown import compile_rules

    con = duckdb.connect(config={"memory_limit": "1GB", "temp_directory": str(work / "spill")})
    try:
        con.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet('{path}')")
        types = {str(r[0]): str(r[1]) for r in con.execute("DESCRIBE src").fetchall()}
        rules = compile_rules(contract(), types)
        joins = ""
        for r in rules:
            if r.dup_table:
                keys = ", ".join(r.columns)
                con.execute(f"CREATE TEMP TABLE {r.dup_table} AS SELECT {keys}, TRUE AS __pw_hit FROM src "
                            f"WHERE {' AND '.join(f'{k} IS NOT NULL' for k in r.columns)} GROUP BY ALL "
                            "HAVING count(*) > 1")
                joins += f" LEFT JOIN {r.dup_table} USING ({keys})"
        counts = con.execute("SELECT count(*), " + ", ".join(f"count(*) FILTER (WHERE {r.fails})" for r in rules)
                             + f", count(*) FILTER (WHERE {' OR '.join(r.fails for r in rules)}) FROM src{joins}"
                             ).fetchall()[0]
    finally:
        con.close()
    return {"rows": counts[0], "rejected": counts[-1]}


def _case_pushdown_check(path: Path, work: Path) -> dict[str, Any]:
    from pipewarden.tools.pushdown import open_batch, run_pushdown

    with open_batch(path) as batch:
        report = run_pushdown(batch, contract())
    return {"rows": report.result.rows, "rejected": report.result.failed_rows}


def _case_pushdown_validate(path: Path, work: Path) -> dict[str, Any]:
    import duckdb
    import pandas as pd

    from pipewarden.tools.pushdown import accepted_select, open_batch, run_pushdown

    con = duckdb.connect(str(work / "warehouse.duckdb"))
    quarantined = 0

    def sink(chunk: pd.DataFrame) -> None:
        nonlocal quarantined
        con.register("_chunk", chunk)
        con.execute("CREATE TABLE IF NOT EXISTS quarantine AS SELECT * FROM _chunk LIMIT 0")
        con.execute("INSERT INTO quarantine SELECT * FROM _chunk")
        con.unregister("_chunk")
        quarantined += len(chunk)

    try:
        with open_batch(path, con=con) as batch:
            report = run_pushdown(batch, contract(), on_quarantine=sink)
            con.execute(f"CREATE TABLE raw_bench AS {accepted_select(batch, contract())}")
        accepted = con.execute("SELECT count(*) FROM raw_bench").fetchall()[0][0]
    finally:
        con.close()
    return {"rows": report.result.rows, "rejected": report.result.failed_rows, "quarantined": quarantined,
            "accepted": accepted}


def _case_gx(path: Path, work: Path) -> dict[str, Any]:
    limit = GX_LIMIT_GB * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        import duckdb
        import pandas as pd

        from pipewarden.tools.checks import rows_as_json, run_checks
        from pipewarden.tools.mapping import conform_to_contract

        df = pd.read_parquet(path)
        report = run_checks(df, contract(), engine="gx")
        rejected = report.rejected.to_numpy()
        quarantine = pd.DataFrame({"row_number": rejected.nonzero()[0],
                                   "reason": report.row_reasons.to_numpy()[rejected],
                                   "row_json": rows_as_json(df.loc[rejected])})
        accepted = conform_to_contract(df.loc[~rejected], contract())
        con = duckdb.connect(str(work / "warehouse.duckdb"))  # as validate's in-memory path writes them
        try:
            con.register("_q", quarantine)
            con.execute("CREATE TABLE quarantine AS SELECT * FROM _q")
            con.register("_a", accepted)
            con.execute("CREATE TABLE raw_bench AS SELECT * FROM _a")
        finally:
            con.close()
        return {"rows": len(df), "rejected": report.result.failed_rows, "quarantined": len(quarantine),
                "accepted": len(accepted)}
    except MemoryError:
        return {"over_limit": f"ran out of its {GX_LIMIT_GB} GB address-space limit"}


def child(case: str, path: str, work: str) -> None:
    """Run one case and print its figures as JSON (the child side of `run_case`)."""
    fn = {"bare": _case_bare, "pushdown_check": _case_pushdown_check,
          "pushdown_validate": _case_pushdown_validate, "gx": _case_gx}[case]
    import duckdb  # noqa: F401 - imports are not the work timed (they count in the peak RSS all the same)
    import pandas  # noqa: F401

    import pipewarden.tools.checks  # noqa: F401
    import pipewarden.tools.pushdown  # noqa: F401

    if case == "gx":
        import great_expectations  # noqa: F401
    t0 = time.perf_counter()
    out = fn(Path(path), Path(work))
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    sys.stdout.write(json.dumps(out) + "\n")


def run_case(case: str, path: Path, work: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, case, str(path), str(work)], capture_output=True, text=True,
                          check=False, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        return {"failed": f"exit {proc.returncode}: {' / '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_big_batches(say: Any, sizes: tuple[int, ...] = SIZES, cases: tuple[str, ...] = CASES) -> dict[str, Any]:
    """Every case on every size; rows/s, peak RSS, and the pushdown check over the bare scan."""
    out: dict[str, Any] = {"sizes": {}, "columns": 20, "throughput_target": THROUGHPUT_TARGET,
                           "memory_target_mb": MEMORY_TARGET_MB}
    with tempfile.TemporaryDirectory(prefix="pipewarden-big-batch-") as tmp:
        for rows in sizes:
            work = Path(tmp) / str(rows)
            work.mkdir()
            path = work / "batch.parquet"
            t0 = time.perf_counter()
            generate(path, rows)
            figures: dict[str, Any] = {"generate_s": round(time.perf_counter() - t0, 2),
                                       "file_mb": round(path.stat().st_size / 1024**2, 1)}
            for case in cases:
                for leftover in ("warehouse.duckdb", "warehouse.duckdb.wal"):
                    (work / leftover).unlink(missing_ok=True)
                r = run_case(case, path, work)
                if "wall_s" in r and r.get("rows"):
                    r["rows_per_s"] = round(r["rows"] / r["wall_s"])
                figures[case] = r
                say(f"  {rows:,} rows, {case}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
            bare, check = figures.get("bare", {}), figures.get("pushdown_check", {})
            if bare.get("wall_s") and check.get("wall_s"):
                figures["pushdown_check_over_bare"] = round(check["wall_s"] / bare["wall_s"], 2)
            out["sizes"][str(rows)] = figures
    return out


if __name__ == "__main__":
    child(*sys.argv[1:4])
