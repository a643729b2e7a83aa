"""`pipewarden eval record PROPOSAL_ID`: a decided proposal becomes a scenario of the user's project, which
`pipewarden eval --scenario ID` runs (the real pipeline and agent on the recorded batch) and scores; its errors name
the id and say what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipewarden.cli import app
from pipewarden.errors import UserError
from pipewarden.evals.record import record
from pipewarden.evals.scenarios import ChangeMatch, load_recorded
from pipewarden.evals.scorers import ScoreInput, outcome
from pipewarden.events import ColumnSpec, SchemaDrift
from pipewarden.inbox import service
from pipewarden.models import CheckResult, ColumnMapping, DryRun, Proposal, ProposalStatus, Verdict
from pipewarden.store import StateStore


def drifted(tmp_path: Path, sample: pd.DataFrame) -> Path:
    path = tmp_path / "landing" / "flights-0042.parquet"
    path.parent.mkdir(parents=True)
    sample.rename(columns={"dep_delay": "departureDelay"}).to_parquet(path, index=False)
    return path


def proposal_for(store: StateStore, batch: Path | str, renames: dict[str, str] | None = None) -> Proposal:
    """The event a flow raised for the batch and the proposal the schema-drift agent made for it."""
    ev = SchemaDrift(dataset="flights", load_id="flights-0042", batch_path=str(batch), contract_version="flights@v1",
                     added=[ColumnSpec(name="departureDelay", type="float")],
                     dropped=[ColumnSpec(name="dep_delay", type="float")])
    store.append_event(ev)
    p = Proposal(event_id=ev.id, agent="schema-drift", dataset="flights", title="flights: map departureDelay",
                 diagnosis="renamed", thread_id=f"event-{ev.id}",
                 change=ColumnMapping(dataset="flights", renames=renames or {"departureDelay": "dep_delay"}),
                 dry_run=DryRun(before=CheckResult(passed=False, rows=2000), after=CheckResult(passed=True, rows=2000)))
    return store.create_proposal(p, actor="agent:schema-drift")


def test_record_refuses_an_unknown_an_undecided_and_a_batchless_proposal(tmp_path: Path, pw_project: Path) -> None:
    store = StateStore()
    with pytest.raises(UserError, match="no proposal 'beefcafe' to record") as unknown:
        record("beefcafe", pw_project, store=store)
    assert "inbox list --all" in (unknown.value.hint or "")
    gone = proposal_for(store, tmp_path / "nowhere.parquet")
    with pytest.raises(UserError, match=f"proposal {gone.short_id} is pending: nobody decided it") as undecided:
        record(gone.short_id, pw_project, store=store)
    assert f"pipewarden inbox approve {gone.short_id}" in (undecided.value.hint or "")
    service.decide(gone.id, Verdict.approve, "alice", resume=False, store=store)
    with pytest.raises(UserError, match=f"proposal {gone.short_id}'s batch .*nowhere.parquet is not there") as missing:
        record(str(gone.id), pw_project, store=store)
    assert f"pipewarden eval record {gone.short_id}" in (missing.value.hint or "")
    assert not (pw_project / "evals").exists()  # nothing half-written


def test_a_rejection_is_recorded_as_a_change_that_must_not_come_back(
    tmp_path: Path, pw_project: Path, february_sample: pd.DataFrame
) -> None:
    store = StateStore()
    p = proposal_for(store, drifted(tmp_path, february_sample), renames={"departureDelay": "arr_delay"})
    service.decide(p.id, Verdict.reject, "alice", "departureDelay is the departure delay, not arr_delay",
                   resume=False, store=store)
    done = record(p.short_id, pw_project, store=store)
    s = done.scenario
    assert s.id == f"rec-{p.short_id}" and s.expect.outcome == "not_change"
    assert s.expect.change == ChangeMatch(kind="column_mapping", fields={
        "dataset": "flights", "renames": {"departureDelay": "arr_delay"}})
    assert s.recorded is not None and (s.recorded.verdict, s.recorded.actor) == ("reject", "alice")
    assert done.batch.is_file() and done.batch.parent == pw_project / "evals" / "batches"
    # recording it again replaces its entry; the loaded scenario is bound to the project and its batch
    record(p.short_id, pw_project, store=store)
    doc = yaml.safe_load(done.file.read_text())
    assert [e["id"] for e in doc["scenarios"]] == [s.id] and doc["scenarios"][0]["batch"] == f"batches/{s.id}.parquet"
    [loaded] = load_recorded(pw_project)
    assert loaded.batch == str(done.batch.resolve()) and loaded.project == str(pw_project.resolve())
    # the scorer: the rejected mapping again fails; another change passes
    again = p.model_copy(update={"status": ProposalStatus.pending})
    other = p.model_copy(update={"change": ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"})})
    judge = lambda props: outcome(ScoreInput(scenario=loaded, batch=None, proposals=props, handled=[],  # noqa: E731
                                             store=store, home=tmp_path))
    assert not judge([again]).passed and "anything but the rejected" in judge([again]).detail
    assert judge([other]).passed


@pytest.mark.slow  # the real pipeline, Prefect and the agent on the recorded batch (about a minute alone)
def test_eval_record_then_eval_scenario_runs_the_recorded_batch_and_scores_it(
    tmp_path: Path, pw_project: Path, february_sample: pd.DataFrame, prefect_harness: None
) -> None:
    store = StateStore()
    p = proposal_for(store, drifted(tmp_path, february_sample))
    service.decide(p.id, Verdict.approve, "alice", "departureDelay is dep_delay renamed", resume=False, store=store)
    runner = CliRunner()
    rec = runner.invoke(app, ["eval", "record", p.short_id, "--json"])
    assert rec.exit_code == 0, rec.output
    recorded = json.loads(rec.output)
    sid = recorded["scenario"]["id"]
    assert recorded["scenario"]["expect"] == {"outcome": "change", "change": {
        "kind": "column_mapping", "fields": {"dataset": "flights", "renames": {"departureDelay": "dep_delay"}}}}

    out = tmp_path / "report"
    run = runner.invoke(app, ["eval", "--scenario", sid, "--llm", "offline", "--json", "--out", str(out)])
    report = json.loads(run.stdout if hasattr(run, "stdout") else run.output)
    [r] = report["results"]
    assert r["id"] == sid and r["recorded"] is True and report["recorded"] == 1
    assert r["error"] is None, r["error"]
    assert r["fired"] == ["schema-drift"]
    scores = {s["name"]: s for s in r["scores"]}
    assert scores["outcome"]["passed"], scores["outcome"]["detail"]
    assert scores["safe"]["passed"] and r["passed"]
    assert f"{sid} (recorded)" in (out / "report.md").read_text()
    assert run.exit_code == 0
