"""The cost agent opens one sandbox connection per step for an event: gather reads the history and builds the
regressed SQL on the same connection, plan proves the candidates on another (its timed builds and the rows compared
need their temp tables on one connection). Opening the locked read-only warehouse took 0.1 to 0.5 s under load."""

from __future__ import annotations

import pytest

from pipewarden.agents.supervisor import supervise_once
from tests.agents.test_cost_agent import AIRPORTS, STG_ROWS, _count_builds, _injected, _proposal_for


def test_an_event_opens_one_sandbox_connection_in_gather_and_one_in_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.agents import cost as agent
    from pipewarden.policies.cost import load_cost_policy

    injected, event = _injected("repeated_scan")
    opened: list[int] = []
    real = agent._connect

    def counting():  # type: ignore[no-untyped-def]
        opened.append(1)
        return real()

    monkeypatch.setattr(agent, "_connect", counting)
    builds = _count_builds(monkeypatch)
    report = supervise_once()
    assert [(h.agent, h.status) for h in report.handled] == [("cost", "pending")]
    assert len(opened) == 2
    assert builds[injected.sql] == load_cost_policy().prove.timed_runs  # gather's build still counts as the first
    m = _proposal_for(event.id).dry_run.metrics
    assert (m["rows_scanned_before"], m["rows_scanned_after"]) == (2 * STG_ROWS + AIRPORTS, STG_ROWS + AIRPORTS)
