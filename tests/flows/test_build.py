"""`build_models`: a project's SQL models built in dependency order on DuckDB and on PostgreSQL, transpiled from the
models' dialect, with their cost recorded in `model_runs`; cycles and failing models reported with their files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipewarden.errors import ConfigError, UnknownNameError
from pipewarden.flows.build import build_models
from pipewarden.flows.transform import ModelRunError
from pipewarden.settings import get_settings
from pipewarden.tools.lineage import ModelSqlError
from pipewarden.tools.warehouse import WarehouseUnavailable, connect

# File names chosen so alphabetical order is the wrong build order: a_top reads m_mid, which reads z_base.
MODELS = {
    # strftime is DuckDB's spelling; PostgreSQL has no strftime (it is TO_CHAR there), so a build on PostgreSQL
    # only succeeds when sqlglot transpiled it.
    "z_base": "SELECT id, amount, strftime(ts, '%Y-%m') AS month FROM raw_events WHERE amount > 0",
    "m_mid": "SELECT month, SUM(amount) AS total, COUNT(*) AS n FROM z_base GROUP BY month",
    "a_top": "SELECT month, total FROM m_mid WHERE n >= 2",
}
ORDER = ["z_base", "m_mid", "a_top"]
TABLES = ("raw_events", *ORDER, "model_runs", "model_sql", "p_loop", "q_loop", "broken", "after_broken")
EVENTS = pd.DataFrame({
    "id": [1, 2, 3, 4, 5],
    "amount": [10.0, 5.0, -1.0, 7.0, 3.0],
    "ts": pd.to_datetime(["2024-01-03", "2024-01-20", "2024-01-21", "2024-02-02", "2024-03-09"]),
})


def make_project(root: Path, models: dict[str, str], dialect: str = "duckdb") -> Path:
    """A tiny project: a pipewarden.toml naming the models' dialect, and one file per model."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipewarden.toml").write_text(f'name = "tiny"\n\n[models]\npath = "models"\ndialect = "{dialect}"\n')
    (root / "models").mkdir(exist_ok=True)
    for name, sql in models.items():
        (root / "models" / f"{name}.sql").write_text(sql + "\n")
    return root


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> Iterator[str]:
    """The warehouse, once as a DuckDB file in the test's home and once as a PostgreSQL database (emptied of this
    file's tables first; skipped with the reason when no server is reachable)."""
    if request.param == "duckdb":
        url = f"duckdb:///{pw_home / 'warehouse.duckdb'}"
    else:
        url = request.getfixturevalue("postgres_url")
        with connect(url) as wh:
            for t in TABLES:
                wh.execute(f"DROP TABLE IF EXISTS {wh.quote(t)}")
    monkeypatch.setenv("PIPEWARDEN_WAREHOUSE_URL", url)
    get_settings.cache_clear()
    yield url


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse_url: str) -> Path:
    """The three-model project, current, with raw_events written to the warehouse."""
    root = make_project(tmp_path / "tiny", MODELS)
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(root))
    get_settings.cache_clear()
    with connect() as wh:
        assert wh.write_frame("raw_events", EVENTS, replace=True) == len(EVENTS)
    return root


def test_models_build_in_dependency_order_not_file_order(tiny: Path, warehouse_url: str) -> None:
    report = build_models()
    assert [m.model for m in report.models] == ORDER
    assert sorted(p.name for p in (tiny / "models").glob("*.sql"))[0] == "a_top.sql"  # alphabetical would be wrong
    assert report.ok and all(m.status == "ok" for m in report.models)
    assert report.dialect == ("duckdb" if warehouse_url.startswith("duckdb") else "postgres")
    assert [m.rows_out for m in report.models] == [4, 3, 1]
    assert report.models[1].upstream == ["z_base"] and report.models[2].upstream == ["m_mid"]
    with connect(read_only=True) as wh:
        top = wh.read_frame("SELECT month, total FROM a_top")
    assert top.to_dict("records") == [{"month": "2024-01", "total": 15.0}]


def test_a_duckdb_function_is_transpiled_for_postgres(tiny: Path, warehouse_url: str) -> None:
    """The models are written in DuckDB's dialect; on PostgreSQL, strftime runs as TO_CHAR."""
    report = build_models(only=["z_base"])
    assert [(m.model, m.status) for m in report.models] == [("z_base", "ok")]
    with connect(read_only=True) as wh:
        months = wh.read_frame("SELECT id, month FROM z_base ORDER BY id")
    assert months.to_dict("records") == [
        {"id": 1, "month": "2024-01"}, {"id": 2, "month": "2024-01"}, {"id": 4, "month": "2024-02"},
        {"id": 5, "month": "2024-03"},
    ]


def test_every_build_records_each_models_cost(tiny: Path, warehouse_url: str) -> None:
    first, second = build_models(), build_models()
    with connect(read_only=True) as wh:
        rows = wh.execute("SELECT run_id, model, status, rows_out, elapsed_ms, rows_scanned, bytes_scanned, sql_hash "
                          "FROM model_runs ORDER BY started_at")
        kept = wh.execute("SELECT model, sql FROM model_sql ORDER BY model")
    assert len(rows) == 6
    for report in (first, second):
        mine = [r for r in rows if r[0] == report.run_id]
        assert [r[1] for r in mine] == ORDER
        assert all(r[2] == "ok" and r[4] > 0 for r in mine)
        assert [r[3] for r in mine] == [4, 3, 1]
        # rows scanned come from the engine: DuckDB's profiler, PostgreSQL's EXPLAIN ANALYZE
        assert [r[5] for r in mine] == [5, 4, 3]
        assert all(r[6] is not None and r[6] > 0 for r in mine)
    assert [k[0] for k in kept] == sorted(ORDER)
    assert dict(kept)["z_base"].strip() == MODELS["z_base"]


def test_a_failing_model_skips_its_dependants_and_names_its_file(tiny: Path, warehouse_url: str) -> None:
    (tiny / "models" / "m_mid.sql").write_text("SELECT month, SUM(no_such_column) AS total FROM z_base GROUP BY 1\n")
    report = build_models()
    status = {m.model: m for m in report.models}
    assert not report.ok
    assert status["z_base"].status == "ok"
    assert status["m_mid"].status == "failed"
    assert status["m_mid"].path == str(tiny / "models" / "m_mid.sql")
    assert "no_such_column" in (status["m_mid"].error or "")
    assert status["a_top"].status == "skipped" and "m_mid" in (status["a_top"].error or "")
    with connect(read_only=True) as wh:
        recorded = wh.execute("SELECT model, status, error FROM model_runs WHERE run_id = ? ORDER BY started_at",
                              [report.run_id])
        assert wh.has_table("z_base") and not wh.has_table("a_top")
    assert [(r[0], r[1]) for r in recorded] == [("z_base", "ok"), ("m_mid", "failed")]
    assert "no_such_column" in recorded[1][2]
    with pytest.raises(ModelRunError, match=r"m_mid.*m_mid\.sql.*no_such_column") as err:
        report.raise_for_failure()
    assert "a_top" in (err.value.hint or "")


def test_a_cycle_is_an_error_naming_the_models_and_builds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  pw_home: Path) -> None:
    root = make_project(tmp_path / "loop", {"p_loop": "SELECT x FROM q_loop", "q_loop": "SELECT x FROM p_loop",
                                            "z_base": "SELECT 1 AS x"})
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(root))
    get_settings.cache_clear()
    with pytest.raises(ModelSqlError, match=r"cycle: p_loop, q_loop"):
        build_models()
    assert not (pw_home / "warehouse.duckdb").exists()


def test_models_in_another_dialect_are_transpiled_to_the_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   pw_home: Path) -> None:
    """A project whose models are written for PostgreSQL (TO_CHAR, ::casts) builds on DuckDB, in lineage order."""
    root = make_project(tmp_path / "pg", {
        "b_month": "SELECT TO_CHAR(d, 'YYYY-MM') AS month FROM a_days",
        "a_days": "SELECT '2024-05-17'::date AS d",
    }, dialect="postgres")
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(root))
    get_settings.cache_clear()
    report = build_models()
    assert [(m.model, m.status) for m in report.models] == [("a_days", "ok"), ("b_month", "ok")]
    assert report.models_dialect == "postgres" and report.dialect == "duckdb"
    with connect(read_only=True) as wh:
        assert wh.execute("SELECT month FROM b_month") == [("2024-05",)]


def test_select_builds_only_the_named_models_and_refuses_unknown_ones(tiny: Path, warehouse_url: str) -> None:
    build_models(only=["z_base"])
    report = build_models(only=["a_top", "m_mid"])
    assert [m.model for m in report.models] == ["m_mid", "a_top"]
    with pytest.raises(UnknownNameError, match="m_midd") as err:
        build_models(only=["m_midd"])
    assert "'m_mid'" in (err.value.hint or "")


def test_write_frame_replaces_the_rows_of_one_load(warehouse_url: str) -> None:
    frame = pd.DataFrame({"_load_id": ["a", "a", "b"], "v": [1, 2, 3]})
    with connect() as wh:
        wh.write_frame("raw_events", frame, replace=True)
        wh.write_frame("raw_events", pd.DataFrame({"_load_id": ["a"], "v": [9]}), delete_where={"_load_id": "a"})
        assert sorted(wh.execute("SELECT _load_id, v FROM raw_events")) == [("a", 9), ("b", 3)]


def test_build_task_is_a_prefect_task_that_fails_on_a_failed_model(tiny: Path) -> None:
    from prefect import Task

    from pipewarden.flows.build import build_task

    assert isinstance(build_task, Task)
    assert [m.model for m in build_task.fn().models] == ORDER
    (tiny / "models" / "z_base.sql").write_text("SELECT nope FROM raw_events\n")
    with pytest.raises(ModelRunError, match="z_base"):
        build_task.fn()


def test_an_unreachable_server_is_a_config_error_without_the_password() -> None:
    url = "postgresql+psycopg://bob:s3cret@127.0.0.1:1/warehouse"
    with pytest.raises(ConfigError) as err, connect(url):
        pass
    text = str(err.value)
    assert "s3cret" not in text and "postgresql+psycopg://bob:***@127.0.0.1:1/warehouse" in text
    assert "PIPEWARDEN_WAREHOUSE_URL" in (err.value.hint or "")


def test_a_locked_duckdb_warehouse_is_a_config_error_saying_what_to_do(pw_home: Path) -> None:
    path = pw_home / "locked.duckdb"
    pw_home.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(  # another process holds the file for writing until we close its stdin
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(WarehouseUnavailable, match="locked by another process") as err, \
                connect(f"duckdb:///{path}"):
            pass
        assert f"duckdb:///{path}" in err.value.message
        assert "wait for" in (err.value.hint or "")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
