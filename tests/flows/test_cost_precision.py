"""The cost detector is precise on any project's SQL models: cost is compared per input row and against the
model's own plan, so a busier batch (twice the rows, the same plans) raises nothing, and one injected regression in
one model of several raises exactly one event, naming that model. On DuckDB and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipewarden.flows.build import build_models
from pipewarden.flows.cost_judge import CostBuild, judge_build
from pipewarden.flows.detectors import detect_cost_regressions
from pipewarden.policies.cost import load_cost_policy
from pipewarden.settings import get_settings
from pipewarden.tools.cost import ScanStat
from pipewarden.tools.warehouse import connect

MODELS = {
    "base": "SELECT id, k, v FROM raw_events WHERE v > 0",
    "by_k": "SELECT e.k, d.label, COUNT(*) AS n, SUM(e.v) AS total FROM base AS e JOIN raw_dims AS d ON d.k = e.k "
            "GROUP BY e.k, d.label",
    "top": "SELECT k, total FROM by_k WHERE n >= 2",
}
# by_k regressed: the same rows, but base is aggregated twice and joined back (a repeated scan)
REGRESSED_BY_K = (
    "WITH a AS (SELECT k, COUNT(*) AS n FROM base GROUP BY k), t AS (SELECT k, SUM(v) AS total FROM base GROUP BY k) "
    "SELECT a.k, d.label, a.n, t.total FROM a JOIN t ON t.k = a.k JOIN raw_dims AS d ON d.k = a.k"
)
TABLES = ("raw_events", "raw_dims", *MODELS, "model_runs", "model_sql")
ROWS = 8000


def _events(first_id: int, n: int) -> pd.DataFrame:
    ids = range(first_id, first_id + n)
    return pd.DataFrame({"id": list(ids), "k": [i % 50 for i in ids], "v": [float(i % 7) - 1.0 for i in ids]})


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def project(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, pw_home: Path,
            tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if request.param == "duckdb":
        url = f"duckdb:///{pw_home / 'warehouse.duckdb'}"
    else:
        url = request.getfixturevalue("postgres_url")
        with connect(url) as wh:
            for t in TABLES:
                wh.execute(f"DROP TABLE IF EXISTS {wh.quote(t)}")
    monkeypatch.setenv("PIPEWARDEN_WAREHOUSE_URL", url)
    get_settings.cache_clear()
    models = tmp_path / "cost_models"
    models.mkdir()
    for name, sql in MODELS.items():
        (models / f"{name}.sql").write_text(sql + "\n")
    with connect(url) as wh:
        wh.write_frame("raw_dims", pd.DataFrame({"k": list(range(50)), "label": [f"k{i}" for i in range(50)]}))
        wh.write_frame("raw_events", _events(0, ROWS))
    yield url, models
    get_settings.cache_clear()


def _build(url: str, models: Path, load_id: str) -> None:
    report = build_models(models, warehouse=url, load_id=load_id, use_active_versions=False)
    assert report.ok, [m.error for m in report.failed]


def test_a_busier_batch_is_no_regression_and_one_regression_is_one_event(project: tuple[str, Path]) -> None:
    url, models = project
    for i in range(3):
        _build(url, models, f"month-1-run-{i}")
    with connect(url) as wh:  # the next month doubles the rows: every model scans about twice as much
        wh.write_frame("raw_events", _events(ROWS, ROWS))
    _build(url, models, "month-2")
    assert detect_cost_regressions("month-2") == []

    with connect(url) as wh:  # a busier month again, and by_k regresses in the same build
        wh.write_frame("raw_events", _events(2 * ROWS, ROWS))
    (models / "by_k.sql").write_text(REGRESSED_BY_K + "\n")
    _build(url, models, "month-3")
    events = detect_cost_regressions("month-3")
    assert [(e.model, e.metric) for e in events] == [("by_k", "rows_scanned")]
    assert events[0].ratio == pytest.approx(2.0, rel=0.1)  # base read twice per input row
    with connect(url) as wh:  # the input rows the event divides by were counted at build time
        scans = json.loads(wh.execute("SELECT scans FROM model_runs WHERE model = 'by_k' AND load_id = 'month-3'")[0][0])
        counts = {t: wh.execute(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("base", "raw_dims")}
    assert {s["table"]: s["table_rows"] for s in scans} == counts and counts["raw_dims"] == 50
    assert sum(1 for s in scans if s["table"] == "base") == 2


def _build_row(rows: int, *, loops: int = 0, scans_per_table: int = 1, elapsed: float = 10.0) -> CostBuild:
    scans = [ScanStat(table="facts", rows_scanned=rows, bytes_scanned=rows * 8, table_rows=rows)
             for _ in range(scans_per_table)]
    return CostBuild(load_id=f"l{rows}-{loops}", elapsed_ms=elapsed, rows_scanned=rows * scans_per_table,
                     bytes_scanned=rows * 8 * scans_per_table, scans=scans,
                     operators=["PROJECTION", *(["NESTED_LOOP_JOIN"] * loops), "TABLE_SCAN"])


def test_time_fires_only_beside_a_change_of_the_plan() -> None:
    policy = load_cost_policy()
    history = [_build_row(20000) for _ in range(3)]
    # ten times slower under the same plan: the machine was busy, not a regression
    assert judge_build(_build_row(20000, elapsed=500.0), history, policy) is None
    # ten times slower with a new nested-loop join: a regression, named by time, the plan says why
    found = judge_build(_build_row(20000, loops=1, elapsed=500.0), history, policy)
    assert found is not None and found.metric == "elapsed_ms" and found.ratio == pytest.approx(50.0)
    assert found.plan_changes and "nested-loop" in found.plan_changes[0]
    # twice the input, twice the scans, twice the time: per input row nothing changed
    assert judge_build(_build_row(40000, elapsed=20.0), history, policy) is None


def test_plan_changes_name_what_changed_in_the_shape() -> None:
    from pipewarden.tools.cost import CostProfile, plan_changes

    def plan(*scans: tuple[str, list[str]]) -> CostProfile:
        return CostProfile(operators=["HASH_JOIN"], scans=[ScanStat(table=t, filters=f) for t, f in scans])

    before = [plan(("facts", ["v>0"]), ("dims", []))] * 2
    assert plan_changes(before, plan(("facts", ["v>0"]), ("dims", []))) == []
    assert plan_changes(before, plan(("facts", ["v>0"]), ("dims", []), ("extra", []))) == [
        "reads extra, which it did not read before"]
    assert plan_changes(before, plan(("facts", ["v>0"]), ("facts", ["v>0"]), ("dims", []))) == [
        "scans facts 2 times (before: 1)"]
    assert plan_changes(before, plan(("facts", []), ("dims", []))) == ["the scan of facts lost its pushed-down filters"]
    assert plan_changes([CostProfile()], plan(("facts", []))) == []  # an old build without a recorded plan


def test_a_join_that_loses_its_key_equality_is_a_plan_change() -> None:
    from pipewarden.tools.cost import CostProfile, JoinStat, plan_changes

    def plan(condition: str) -> CostProfile:
        return CostProfile(operators=["HASH_JOIN"], joins=[JoinStat(operator="HASH_JOIN", condition=condition)])

    keyed = plan("origin = origin; time_hour = time_hour")
    assert plan_changes([keyed], plan("(w.origin = s.origin); (w.time_hour = s.time_hour)")) == []
    changed = plan_changes([keyed], plan("origin = origin; (abs((epoch(time_hour) - epoch(time_hour))) < 1.0)"))
    assert changed == ["a join compares by (abs((epoch(time_hour) - epoch(time_hour))) < 1.0), not a plain equality "
                       "of columns"]
