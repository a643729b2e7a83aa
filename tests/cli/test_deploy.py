"""`pipewarden deploy --dry-run` and the supervise deployment it would serve (a Prefect 3 RunnerDeployment with a
deployment trigger on pipewarden's fault events). Registering it with a real Prefect server and firing the trigger
is tests/e2e/test_prefect_server.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.cli.conftest import CliResult, subprocess_env

FAULT_EVENTS = ["pipewarden.check.failed", "pipewarden.cost.regression", "pipewarden.model.drift",
                "pipewarden.quality.anomaly", "pipewarden.run.failed", "pipewarden.schema.drift"]


def test_deploy_dry_run_prints_the_trigger_and_interval_and_exits(
    pw_subprocess: Callable[..., CliResult], pw_home: Path,
) -> None:
    # A real child process with a timeout: if --dry-run served, this would block until killed.
    res = pw_subprocess("deploy", "--dry-run", timeout=60, env=subprocess_env(pw_home, PREFECT_API_URL=""))
    assert res.code == 0, res.err
    assert "deployment pipewarden-supervise/on-events" in res.out_text
    assert f"triggered by: {', '.join(FAULT_EVENTS)}" in res.out_text
    assert "on resources: prefect.resource.id=pipewarden.dataset.*" in res.out_text
    assert "interval: every 300s" in res.out_text
    assert "Prefect API: local default (PREFECT_API_URL is not set)" in res.out_text
    assert "Traceback" not in res.err


def test_deploy_dry_run_json_takes_name_and_no_interval(pw: Callable[..., CliResult]) -> None:
    res = pw("deploy", "--dry-run", "--json", "--name", "night-watch", "--every", "0")
    assert res.code == 0, res.err
    plan = json.loads(res.out)
    assert plan["deployment"] == "pipewarden-supervise/night-watch"
    assert plan["served"] is False
    assert plan["every_s"] is None
    assert plan["concurrency_limit"] == 1
    [trigger] = plan["triggers"]
    assert trigger["events"] == FAULT_EVENTS
    assert trigger["match"] == {"prefect.resource.id": "pipewarden.dataset.*"}


def test_deploy_dry_run_names_the_prefect_api_it_would_use(pw: Callable[..., CliResult]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        res = pw("deploy", "--dry-run", "--json", "--every", "45")
    assert res.code == 0, res.err
    plan = json.loads(res.out)
    assert plan["api_url"] == "http://127.0.0.1:4200/api"
    assert plan["every_s"] == 45


def test_deploy_refuses_a_negative_interval_and_a_bad_name(pw: Callable[..., CliResult]) -> None:
    res = pw("deploy", "--dry-run", "--every", "-5")
    assert res.code == 2
    assert "--every -5 is negative" in res.err_text
    assert "0 for no interval" in res.err_text

    res = pw("deploy", "--dry-run", "--name", "nightly/supervise")
    assert res.code == 2
    assert "--name 'nightly/supervise' is not a usable deployment name" in res.err_text
    assert "Traceback" not in res.err


def test_the_supervise_deployment_carries_the_event_trigger_and_the_interval() -> None:
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentEventTrigger
    from prefect.events.schemas.events import ResourceSpecification

    from pipewarden.events import EVENT_NAMES
    from pipewarden.flows.deploy import build_supervise_deployment

    deployment = build_supervise_deployment(name="watch", every=30)

    assert isinstance(deployment, RunnerDeployment)
    assert (deployment.flow_name, deployment.name) == ("pipewarden-supervise", "watch")
    # A module entrypoint: a served run imports the flow wherever pipewarden is installed, whatever the cwd.
    assert deployment.entrypoint == "pipewarden.flows.supervise.supervise_flow"
    assert "pipewarden" in deployment.tags
    assert deployment.concurrency_limit == 1

    [trigger] = deployment.triggers
    assert isinstance(trigger, DeploymentEventTrigger)
    # Exactly the fault events flows/emit.py mirrors, one run per event, on any dataset.
    assert trigger.expect == set(EVENT_NAMES.values()) == set(FAULT_EVENTS)
    assert trigger.match == ResourceSpecification({"prefect.resource.id": "pipewarden.dataset.*"})
    assert trigger.posture == "Reactive"
    assert trigger.threshold == 1
    assert trigger.enabled is True

    [interval] = deployment.schedules
    assert isinstance(interval.schedule, IntervalSchedule)
    assert interval.schedule.interval == timedelta(seconds=30)
    assert interval.active is True


def test_every_zero_leaves_the_trigger_alone() -> None:
    from pipewarden.flows.deploy import build_supervise_deployment

    deployment = build_supervise_deployment(every=0)

    assert deployment.name == "on-events"
    assert not deployment.schedules
    assert [t.expect for t in deployment.triggers] == [set(FAULT_EVENTS)]


def test_the_trigger_matches_the_events_flows_emit_sends() -> None:
    """The server's own matcher (what its triggers service runs) on the event `mirror_to_prefect` sends: a fault
    event on a dataset fires it; another pipewarden event name, or a fault name on another resource, does not."""
    from prefect.server.events.schemas.automations import EventTrigger as ServerEventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    from pipewarden.events import CheckFailed, FailedCheck
    from pipewarden.flows.deploy import build_supervise_deployment
    from pipewarden.flows.emit import prefect_resource

    [trigger] = build_supervise_deployment().triggers
    on_server = ServerEventTrigger.model_validate(
        trigger.model_dump(include={"expect", "after", "match", "match_related", "for_each", "posture", "threshold",
                                    "within"}))
    fault = CheckFailed(dataset="flights", batch_path="b.csv", failed=[FailedCheck(check="not_null", failed_rows=3)],
                        failure_rate=0.2, threshold=0.05)

    def received(name: str, resource: dict[str, str]) -> ReceivedEvent:
        return ReceivedEvent(event=name, resource=resource, payload={}, occurred=fault.occurred, id=fault.id)

    assert on_server.covers(received(fault.name, prefect_resource(fault)))
    assert not on_server.covers(received("pipewarden.heartbeat", prefect_resource(fault)))
    assert not on_server.covers(received(fault.name, {"prefect.resource.id": "prefect.flow-run.1"}))
