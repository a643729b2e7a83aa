"""`pipewarden deploy --dry-run` and the deployments it would serve (Prefect 3 RunnerDeployments)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from tests.cli.conftest import CliResult


def test_deploy_dry_run_prints_both_deployments_and_exits(pw_subprocess: Callable[..., CliResult]) -> None:
    # A real child process with a timeout: if --dry-run served, this would block until killed.
    res = pw_subprocess("deploy", "--dry-run", timeout=60)
    assert res.code == 0, res.err
    assert "deployment pipewarden-scheduled-batch/nightly: cron '0 6 * * *'" in res.out_text
    assert "deployment pipewarden-supervise/every-60s: every 60s" in res.out_text
    assert "Traceback" not in res.err


def test_deploy_dry_run_takes_the_schedule_options(pw: Callable[..., CliResult]) -> None:
    res = pw("deploy", "--dry-run", "--cron", "30 2 * * 1", "--supervise-every", "15")
    assert res.code == 0, res.err
    assert "cron '30 2 * * 1'" in res.out_text
    assert "every 15s" in res.out_text


def test_build_deployments_schedules_and_flow_names() -> None:
    from pipewarden.flows.deploy import build_deployments
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from prefect.deployments.runner import RunnerDeployment

    pipeline, supervise = build_deployments(cron="*/10 * * * *", supervise_every=30)

    assert (pipeline.flow_name, pipeline.name) == ("pipewarden-scheduled-batch", "nightly")
    assert isinstance(pipeline.deployment, RunnerDeployment)
    assert pipeline.deployment.flow_name == "pipewarden-scheduled-batch"
    assert pipeline.deployment.name == "nightly"
    assert pipeline.deployment.parameters == {"month": 1}
    [cron] = pipeline.deployment.schedules
    assert isinstance(cron.schedule, CronSchedule)
    assert cron.schedule.cron == "*/10 * * * *"
    assert cron.active is True

    assert (supervise.flow_name, supervise.name) == ("pipewarden-supervise", "every-30s")
    assert isinstance(supervise.deployment, RunnerDeployment)
    assert supervise.deployment.flow_name == "pipewarden-supervise"
    [interval] = supervise.deployment.schedules
    assert isinstance(interval.schedule, IntervalSchedule)
    assert interval.schedule.interval == timedelta(seconds=30)
    assert interval.active is True

    for spec in (pipeline, supervise):
        assert "pipewarden" in spec.deployment.tags
        assert spec.deployment.entrypoint.split(":")[0].endswith("flows/deploy.py")
