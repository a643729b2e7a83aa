from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from pipewarden.cli import app
from pipewarden.models import Verdict
from pipewarden.store import StateStore
from tests.pipewarden.factories import pending_proposal

runner = CliRunner()


def test_help_does_not_load_heavy_libraries() -> None:
    code = ("import sys, pipewarden.cli\n"
            "heavy = {'prefect', 'great_expectations', 'mlflow', 'torch', 'sentence_transformers', 'langgraph'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_command_answers_help() -> None:
    for cmd in (["--help"], ["run", "--help"], ["check", "--help"], ["supervise", "--help"], ["serve", "--help"],
                ["deploy", "--help"], ["demo", "--help"], ["inbox", "approve", "--help"], ["audit", "verify", "--help"],
                ["schema", "match", "--help"], ["knowledge", "search", "--help"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 0, (cmd, res.output)
        assert "Usage" in res.output


def test_unknown_proposal_is_a_clear_error_not_a_traceback() -> None:
    res = subprocess.run([sys.executable, "-m", "pipewarden", "inbox", "show", "abcd1234"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "unknown proposal 'abcd1234'" in res.stderr
    assert "Traceback" not in res.stderr


def test_audit_verify_json_reports_a_sound_chain() -> None:
    store = StateStore()
    p = pending_proposal(store)
    store.decide(p.id, Verdict.approve, "alice")
    res = runner.invoke(app, ["audit", "verify", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"ok": True, "entries": 2, "first_broken_seq": None, "problem": None,
                                      "problems": [], "anchored_seq": 2, "notes": []}
