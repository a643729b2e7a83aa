"""What Prefect shows of pipewarden (`flows/prefect_story.py`, `flows/supervise.py`): a guarded run named after its
load with an artifact pointing at its event, then its proposal; the proposal's life as Prefect events related to
that run; supervise as a flow with a task run per agent run; a re-run linked to the run it repairs.

Flow runs and artifacts are read back from the session's Prefect test server; Prefect events are captured by the
injected `send` (the test server does not keep events), with the exact arguments `prefect.events.emit_event` gets.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from pipewarden.errors import BatchHalted
from pipewarden.models import ColumnMapping, ColumnTransform, Proposal, ProposalStatus, Verdict
from pipewarden.store import StateStore
from tests.fakes.runtimes import swap
from tests.flows.orders_project import approve, epoch_shape, make_orders_project, orders


@pytest.fixture(autouse=True)
def orders_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> Path:
    return make_orders_project(tmp_path / "shop", monkeypatch)


class Recorder:
    """Stands in for `prefect.events.emit_event`: keeps the keyword arguments; `fail_on` raises once for a name."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_on = fail_on

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        if kwargs["event"] == self.fail_on:
            self.fail_on = None
            raise OSError("prefect unreachable")
        self.sent.append(kwargs)
        return kwargs

    @property
    def names(self) -> list[str]:
        return [e["event"] for e in self.sent]


def _mapping(event_id: str) -> ColumnMapping:
    fp = StateStore().get_event(event_id).schema_fingerprint
    return ColumnMapping(dataset="orders", transforms=[ColumnTransform(column="ordered_at", kind="epoch")],
                         source_fingerprint=fp)


def _drift_event() -> str:
    (event,) = [e for e in StateStore().list_events() if e["kind"] == "schema_drift"]
    return str(event["id"])


def _flow_run(run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(str(run_id)))


def _artifacts(run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(str(run_id))])))


# --------------------------------------------------------------------------- the guarded run
def test_a_halted_run_is_named_after_its_load_and_points_at_its_event_then_at_its_proposal(
        prefect_harness: None, tmp_path: Path) -> None:
    from prefect import flow

    from pipewarden.flows.prefect_story import LifecycleMirror, proposal_url
    from pipewarden.prefect import guard

    @flow(name="orders-pipeline")
    def orders_pipeline(drifted: bool) -> int:
        df = orders(25)
        return len(guard(epoch_shape(df) if drifted else df, dataset="orders"))

    clean = orders_pipeline(drifted=False, return_state=True)
    halted = orders_pipeline(drifted=True, return_state=True)
    assert clean.is_completed() and halted.is_failed()
    event_id = _drift_event()
    load_id = StateStore().get_event(event_id).load_id
    run_id = halted.state_details.flow_run_id
    assert _flow_run(run_id).name == f"orders: load {load_id.removeprefix('orders-')}"
    assert _flow_run(clean.state_details.flow_run_id).name.startswith("orders: load ")
    (artifact,) = [a for a in _artifacts(run_id) if a.type == "markdown"]  # (Prefect keeps the state's own too)
    assert artifact.type == "markdown" and "halted" in artifact.data
    assert f"`schema_drift` `{event_id}`" in artifact.data and "pipewarden inbox list --dataset orders" in artifact.data

    # The supervisor drafts the proposal later: the mirror gives the halted run a link to it, once.
    p = StateStore().create_proposal(Proposal(event_id=event_id, agent="schema-drift", dataset="orders", title="fix",
                                              diagnosis="drift", change=_mapping(event_id),
                                              thread_id=f"event-{event_id}"))
    mirror = LifecycleMirror(send=Recorder(), cursor_path=tmp_path / "cursor")
    mirror.pump()
    mirror.pump()
    links = [a for a in _artifacts(run_id) if a.key == f"pipewarden-proposal-{p.short_id}"]
    assert len(links) == 1 and proposal_url(p.id) in links[0].data


def test_name_run_false_keeps_the_flows_own_run_name(prefect_harness: None) -> None:
    from prefect import flow

    from pipewarden.prefect import guard

    @flow(name="orders-named", flow_run_name="my-own-name")
    def orders_named() -> int:
        return len(guard(orders(10), dataset="orders", name_run=False))

    state = orders_named(return_state=True)
    assert state.is_completed() and _flow_run(state.state_details.flow_run_id).name == "my-own-name"


# --------------------------------------------------------------------------- the proposal's life as events
def _guarded_halt(run: dict[str, Any]) -> str:
    from pipewarden.flows.guard import guard_batch

    with pytest.raises(BatchHalted):
        guard_batch(epoch_shape(orders(30)), "orders", run=run)
    return _drift_event()


RUN = {"flow_run_id": "11111111-1111-1111-1111-111111111111", "flow_name": "orders-pipeline", "parameters": {},
       "deployment_id": "22222222-2222-2222-2222-222222222222", "deployment_name": "nightly"}


def test_each_transition_is_one_prefect_event_on_the_dataset_related_to_the_run_that_saw_it(tmp_path: Path) -> None:
    from pipewarden.flows.prefect_story import LifecycleMirror
    from pipewarden.tools.apply import mark_verified, rollback_change

    event_id = _guarded_halt(RUN)
    send = Recorder()
    mirror = LifecycleMirror(send=send, cursor_path=tmp_path / "cursor", link_runs=False)
    p = approve(event_id, _mapping(event_id))  # proposed, approved, applying, applied
    rollback_change(p.id, "the re-run halted again")  # rolled back, re-opened
    StateStore().decide(p.id, Verdict.approve, "alice")
    mirror.pump()
    assert send.names == ["pipewarden.proposal.proposed", "pipewarden.proposal.approved",
                          "pipewarden.proposal.applied", "pipewarden.proposal.rolled-back",
                          "pipewarden.proposal.reopened", "pipewarden.proposal.approved"]
    first = send.sent[0]
    assert first["resource"]["prefect.resource.id"] == "pipewarden.dataset.orders"
    assert first["resource"]["pipewarden.proposal.id"] == str(p.id)
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in first["related"]}
    assert related == {"proposal": f"pipewarden.proposal.{p.id}",
                       "flow-run": f"prefect.flow-run.{RUN['flow_run_id']}",
                       "deployment": f"prefect.deployment.{RUN['deployment_id']}"}
    assert send.sent[1]["payload"]["actor"] == "alice" and send.sent[3]["payload"]["reason"] == "the re-run halted again"

    mirror.pump()  # nothing new: the cursor moved past every entry
    assert len(send.sent) == 6
    from pipewarden.tools.apply import apply_change

    apply_change(p.id)
    mark_verified(p.id, {"rerun_status": "completed"})
    mirror.pump()
    assert send.names[6:] == ["pipewarden.proposal.applied", "pipewarden.proposal.verified"]
    assert len({e["id"] for e in send.sent}) == len(send.sent)  # one id per audit entry


def test_a_failed_send_is_sent_again_next_time_under_the_same_id(tmp_path: Path) -> None:
    from pipewarden.flows.prefect_story import LifecycleMirror

    event_id = _guarded_halt({})
    p = approve(event_id, _mapping(event_id))
    send = Recorder(fail_on="pipewarden.proposal.approved")
    mirror = LifecycleMirror(send=send, cursor_path=tmp_path / "cursor", link_runs=False)
    mirror.pump()
    assert send.names == ["pipewarden.proposal.proposed"]
    mirror.pump()
    assert send.names == ["pipewarden.proposal.proposed", "pipewarden.proposal.approved",
                          "pipewarden.proposal.applied"]
    assert all(r["prefect.resource.role"] == "proposal" for r in send.sent[0]["related"])  # not guarded in a run
    # A lost cursor re-sends under the same ids, which Prefect's server keeps once.
    again = Recorder()
    LifecycleMirror(send=again, cursor_path=tmp_path / "other", link_runs=False).pump()
    assert [e["id"] for e in again.sent] == [e["id"] for e in send.sent]
    # A cursor counted in another state DB (the home moved to PostgreSQL, say) does not skip this one's entries.
    (tmp_path / "moved").write_text('{"seq": 999999, "state": "another-db"}', encoding="utf-8")
    moved = Recorder()
    LifecycleMirror(send=moved, cursor_path=tmp_path / "moved", link_runs=False).pump()
    assert len(moved.sent) == 3
    assert StateStore().get_proposal(p.id).status == ProposalStatus.applied


# --------------------------------------------------------------------------- supervise as a flow
def fake_supervisor(*, step: Any = None) -> Any:
    """A Supervisor port for the flow test: one agent run that works, one that raises, one lease another holds."""
    from pipewarden.agents.supervisor import Resumed, SuperviseReport
    from pipewarden.leases import LeaseHeld

    report = SuperviseReport()

    def boom() -> Any:
        raise RuntimeError("the agent broke")

    def held() -> Any:
        raise LeaseHeld("proposal cccccccc", "another-worker")

    report.resumed.append(step("resume proposal aaaaaaaa", lambda: Resumed(proposal_id="a" * 8, status="verified")))
    for name, work in (("schema_drift bbbbbbbb -> schema_drift", boom), ("resume proposal cccccccc", held)):
        try:
            step(name, work)
        except RuntimeError as exc:
            report.resumed.append(Resumed(proposal_id="b" * 8, status="failed", error=str(exc)))
        except LeaseHeld:
            pass
    return report


def test_supervise_runs_as_a_flow_with_a_task_run_per_agent_run(prefect_harness: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from pipewarden.flows.supervise import supervise_flow

    swap(monkeypatch, supervisor=fake_supervisor)
    state = supervise_flow(sync_index=False, return_state=True)
    assert state.is_completed()  # one agent's failure never fails the pass
    report = state.result()
    assert [r["status"] for r in report["resumed"]] == ["verified", "failed"], report
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    by_name = {r.name: r.state.type.value for r in runs}
    assert by_name == {"resume proposal aaaaaaaa": "COMPLETED", "schema_drift bbbbbbbb -> schema_drift": "FAILED",
                       "resume proposal cccccccc": "COMPLETED"}


def test_an_idle_supervise_loop_has_no_work_to_make_a_flow_run_of() -> None:
    from pipewarden.flows.supervise_work import has_work

    assert not has_work()
    event_id = _guarded_halt({})
    assert has_work()  # the drift event waits in the outbox
    store = StateStore()
    (claim,) = store.claim("w1")
    assert has_work()  # claimed: a dead worker's claim is taken over by the next pass
    store.finish_event(claim.event.id, "proposed")
    assert not has_work()
    p = store.create_proposal(Proposal(event_id=event_id, agent="schema-drift", dataset="orders", title="fix",
                                       diagnosis="drift", change=_mapping(event_id), thread_id=f"event-{event_id}"))
    assert not has_work()  # pending: waits for a person, not for the worker
    store.decide(p.id, Verdict.approve, "alice")
    assert has_work()  # the decision asks for a resume


# --------------------------------------------------------------------------- re-runs
def test_a_recheck_rerun_is_a_flow_run_named_after_its_proposal_and_linked_to_the_run_it_repairs(
        prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from pipewarden.flows.pipeline import run_batch

    event_id = _guarded_halt({"flow_run_id": RUN["flow_run_id"], "flow_name": "orders-pipeline", "parameters": {}})
    load_id = StateStore().get_event(event_id).load_id
    p = approve(event_id, _mapping(event_id))
    assert run_batch("orders", "", load_id=load_id, rerun=True).status == "completed"
    tag = f"pipewarden-repairs:{p.short_id}:{RUN['flow_run_id']}"
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
    assert run.name == f"re-check for proposal {p.short_id}: orders: load {load_id.removeprefix('orders-')}"
    assert "pipewarden-rerun" in run.tags
    (link,) = [a for a in _artifacts(run.id) if a.key == f"pipewarden-repair-{p.short_id}"]
    assert RUN["flow_run_id"] in link.data and f"/proposals/{p.id}" in link.data


def test_a_rerun_through_the_deployment_is_tagged_and_linked_to_the_run_it_repairs(
        prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_deployment` is faked (a worker would run the team's flow); the flow run it returns is a real one."""
    from types import SimpleNamespace

    import prefect.deployments
    from prefect import flow

    from pipewarden.flows.guard import recheck_batch
    from pipewarden.flows.pipeline import run_batch

    @flow(name="orders-rerun-stand-in")
    def stand_in() -> None:
        return None

    new_run = stand_in(return_state=True).state_details.flow_run_id
    event_id = _guarded_halt(RUN)
    load_id = StateStore().get_event(event_id).load_id
    p = approve(event_id, _mapping(event_id))
    calls: list[dict[str, Any]] = []

    def fake_run_deployment(*, name: str, parameters: dict[str, Any], timeout: float, tags: list[str]) -> Any:
        calls.append({"name": name, "tags": tags})
        recheck_batch("orders", load_id)
        return SimpleNamespace(id=new_run, state=SimpleNamespace(is_completed=lambda: True, name="Completed"))

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    assert run_batch("orders", "", load_id=load_id, rerun=True).status == "completed"
    assert calls == [{"name": RUN["deployment_id"],
                      "tags": ["pipewarden-rerun", f"pipewarden-repairs:{p.short_id}:{RUN['flow_run_id']}"]}]
    (link,) = [a for a in _artifacts(new_run) if a.key == f"pipewarden-repair-{p.short_id}"]
    assert RUN["flow_run_id"] in link.data and f"/proposals/{p.id}" in link.data


# --------------------------------------------------------------------------- the whole story
@pytest.mark.slow
def test_the_whole_story_shows_in_prefect(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A halted run, the real schema-drift agent in a supervise flow run, an approval, the resume's re-check: every
    step is where an on-call engineer looks in Prefect."""
    import prefect.events
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags

    from pipewarden.flows.supervise import supervise_flow
    from pipewarden.prefect import guard
    from pipewarden.settings import get_settings

    send = Recorder()
    monkeypatch.setattr(prefect.events, "emit_event", send)
    monkeypatch.setenv("PIPEWARDEN_EMIT_PREFECT_EVENTS", "true")
    get_settings.cache_clear()

    @flow(name="orders-pipeline")
    def orders_pipeline() -> int:
        return len(guard(epoch_shape(orders(30)), dataset="orders"))

    halted = orders_pipeline(return_state=True)
    assert halted.is_failed()
    halted_run = halted.state_details.flow_run_id

    def task_runs(state: Any) -> dict[str, str]:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        return {r.name: r.state.type.value for r in runs}

    first = supervise_flow(sync_index=False, return_state=True)
    assert first.is_completed()
    event_id = _drift_event()
    p = StateStore().proposal_for_event(event_id)
    assert p is not None and p.status == ProposalStatus.pending
    assert task_runs(first) == {f"schema_drift {event_id[:8]} -> {p.agent}": "COMPLETED"}
    assert [a for a in _artifacts(halted_run) if a.key == f"pipewarden-proposal-{p.short_id}"]
    assert "pipewarden.proposal.proposed" in send.names

    StateStore().decide(p.id, Verdict.approve, "olivia")
    second = supervise_flow(sync_index=False, return_state=True)
    assert second.is_completed() and StateStore().get_proposal(p.id).status == ProposalStatus.verified
    resumed = task_runs(second)  # the re-check's subflow run shows beside it (as Prefect's own task run)
    assert {k: v for k, v in resumed.items() if not k.startswith("pipewarden-pipeline")} == {
        f"resume proposal {p.short_id}": "COMPLETED"}
    lifecycle = [n for n in send.names if n.startswith("pipewarden.proposal.")]
    assert lifecycle == ["pipewarden.proposal.proposed", "pipewarden.proposal.approved",
                         "pipewarden.proposal.applied", "pipewarden.proposal.verified"]
    assert all(any(r["prefect.resource.id"] == f"prefect.flow-run.{halted_run}" for r in e["related"])
               for e in send.sent if e["event"] in lifecycle)
    with get_client(sync_client=True) as client:
        (recheck,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"pipewarden-repairs:{p.short_id}:{halted_run}"])))
    assert recheck.name.startswith(f"re-check for proposal {p.short_id}: orders: load ")
    assert recheck.state.type.value == "COMPLETED"
