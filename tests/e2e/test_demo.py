"""The main job, end to end, as a user runs it: `pipewarden demo --approve-all --no-serve --json` on the flights
example's own flow (`[demo]` in its project file), and the pieces of the served demo that need no browser.

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
           "PIPEWARDEN_EMIT_PREFECT_EVENTS": "true",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # a busy CI machine starts it slowly
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

    # the re-run scored February: the delay model decayed, the retrain agent proposed a challenger, and
    # --approve-all approved it as the two people its rule needs (the ML owner and the owner); the alias moved
    (retrain,) = [p for p in summary["proposals"] if p["agent"] == "retrain"]
    assert retrain["change"]["kind"] == "model_promotion" and retrain["status"] == "verified"
    assert retrain["verification"]["points_at"] == retrain["change"]["to_version"]
    assert {e["kind"] for e in summary["events"]} == {"schema_drift", "model_drift"}
    assert all(e["status"] != "pending" for e in summary["events"])  # every event the story emitted was handled

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


def test_the_relay_prints_what_the_supervisor_did_and_how_to_approve_what_waits() -> None:
    from pipewarden.flows.demo import _relay

    reports = [
        {"handled": [], "resumed": []},  # nothing happened: nothing printed
        {"handled": [{"event_id": "e" * 36, "kind": "model_drift", "agent": "retrain", "proposal_id": "p" * 36,
                      "status": "pending", "seconds": 1.5}], "resumed": []},
    ]
    text = json.dumps(reports[0], indent=2) + "\n" + json.dumps(reports[1], indent=2) + "\n"

    class Proc:  # what _relay reads of the supervise process: its stdout, line by line
        stdout = iter(text.splitlines(keepends=True))

    said: list[str] = []
    _relay(Proc(), said.append, lambda pid: [f"approve {pid[:8]} as erin", f"approve {pid[:8]} as alice"])
    assert said == ["[supervisor] model_drift event eeeeeeee -> retrain: proposal pppppppp pending (1.5s)",
                    "approve pppppppp as erin", "approve pppppppp as alice"]


def test_the_printed_approve_command_names_the_project_the_home_and_a_token(tmp_path: Path) -> None:
    from pipewarden.flows.demo import approve_command

    cmd = approve_command("14f7", tmp_path / "project", tmp_path / "home", "tok-123")
    assert cmd.startswith(f"PIPEWARDEN_PROJECT={tmp_path / 'project'} PIPEWARDEN_HOME={tmp_path / 'home'} "
                          "PIPEWARDEN_TOKEN=tok-123 /")
    assert cmd.endswith("/pipewarden inbox approve 14f7")
