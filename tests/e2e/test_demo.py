"""The main job, end to end, as a user runs it: `pipewarden demo --approve-all --no-serve --json`.

Real Prefect (its own local server), GX, DuckDB, MLflow, Qdrant local mode and MiniLM; no fakes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_non_interactive_demo_finds_the_drift_and_heals_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "PIPEWARDEN_HOME": str(home), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PIPEWARDEN_EMIT_PREFECT_EVENTS": "true"}
    res = subprocess.run([sys.executable, "-m", "pipewarden", "demo", "--approve-all", "--no-serve", "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)

    # the clean month ran through, the drifted one halted at validate with a schema-drift event
    clean, drifted = summary["runs"]
    assert clean["status"] == "completed" and clean["rows_quarantined"] > 0
    assert drifted["status"] == "halted" and drifted["halted_at"] == "validate"
    assert "schema_drift" in [e["kind"] for e in summary["events"]]

    # the agent's mapping sends the renamed column to the right contract column and casts the retyped one
    (drift_proposal,) = [p for p in summary["proposals"] if p["agent"] == "schema-drift"]
    assert drift_proposal["change"]["renames"] == {"departureDelay": "dep_delay"}
    assert drift_proposal["change"]["casts"] == {"flight": "integer"}
    assert drift_proposal["dry_run_heals"] is True
    assert drift_proposal["citations"], "the proposal cites the knowledge it used"
    assert any(c["kind"] == "contract" for c in drift_proposal["citations"])

    # approval applied it, the re-run passed, and it was verified
    assert drift_proposal["status"] == "verified"
    assert drift_proposal["verification"]["rerun_status"] == "completed"
    assert summary["approved"] >= 1 and summary["applied"] >= 1 and summary["verified"] >= 1
    assert summary["rolled_back"] == 0
    assert all(seconds >= 0 for seconds in summary["step_seconds"].values())

    # February's flights are in the warehouse under their contract names, with values
    demo_home = Path(summary["home"])
    con = duckdb.connect(str(demo_home / "warehouse.duckdb"), read_only=True)
    try:
        feb = con.execute("select count(*), count(dep_delay), min(flight) from raw_flights where month = 2").fetchone()
    finally:
        con.close()
    assert feb[0] > 20_000 and feb[1] > 0.9 * feb[0] and isinstance(feb[2], int)

    # the audit log verifies, also from the command line
    assert summary["audit_ok"] is True
    verify = subprocess.run([sys.executable, "-m", "pipewarden", "audit", "verify", "--json"],
                            capture_output=True, text=True, env={**env, "PIPEWARDEN_HOME": str(demo_home)}, timeout=120)
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
