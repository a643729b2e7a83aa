"""Lineage of SQL models, checked against golden files.

tests/fixtures/lineage/ holds three small fixture models (a star with EXCLUDE, a CTE with COUNT(*), a window and
a UNION with a scalar subquery) and two golden files: `fixture_models.json` for them and `flows_models.json` for
the pipeline's real models in flows/models. After an intended change to a model, regenerate the golden files:

    PIPEWARDEN_REGEN_GOLDEN=1 .venv/bin/pytest tests/tools/test_lineage.py

and review the diff like any other change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pipewarden.errors import UnknownNameError
from pipewarden.tools.lineage import (
    ModelSqlError,
    SqlModel,
    affected_models,
    column_lineage,
    column_references,
    downstream_of,
    load_models,
    model_columns,
    model_dependencies,
    raw_schemas,
    topological_order,
    upstream_of,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "lineage"
FLOWS_MODELS = REPO_ROOT / "examples" / "flights" / "models"
FLIGHTS_CONTRACTS = REPO_ROOT / "examples" / "flights" / "contracts"
RAW_SCHEMAS = raw_schemas(FLIGHTS_CONTRACTS)  # the fixture models read the flights example's raw tables
REGEN = os.environ.get("PIPEWARDEN_REGEN_GOLDEN") == "1"


def _snapshot(models_dir: Path, schema: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Everything lineage says about a folder of models, as plain JSON: deps, order, columns and their sources."""
    models = load_models(models_dir)
    deps = model_dependencies(models=models)
    columns = model_columns(models=models, schema=schema)
    sources: dict[str, dict[str, list[str]]] = {m: {c: [] for c in cols} for m, cols in columns.items()}
    for e in column_lineage(models=models, schema=schema):
        sources[e.model][e.column].append(f"{e.upstream_table}.{e.upstream_column}")
    return {
        "order": topological_order(deps),
        "dependencies": {m: sorted(ups) for m, ups in sorted(deps.items())},
        "lineage": {m: {c: sorted(s) for c, s in cols.items()} for m, cols in sorted(sources.items())},
    }


def _check_golden(name: str, actual: dict[str, Any]) -> None:
    path = FIXTURES / name
    if REGEN:
        path.write_text(json.dumps(actual, indent=2) + "\n", encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with PIPEWARDEN_REGEN_GOLDEN=1 to create it"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert actual == expected, f"lineage differs from {path}; if intended, regenerate with PIPEWARDEN_REGEN_GOLDEN=1"


def test_fixture_models_match_golden() -> None:
    _check_golden("fixture_models.json", _snapshot(FIXTURES, schema=RAW_SCHEMAS))


def test_flows_models_match_golden() -> None:
    _check_golden("flows_models.json", _snapshot(FLOWS_MODELS))


def test_models_dir_defaults_to_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.settings import get_settings

    assert {e.key for e in column_lineage()} == {e.key for e in column_lineage(FLOWS_MODELS)}
    monkeypatch.setenv("PIPEWARDEN_MODELS_DIR", str(FIXTURES))
    get_settings.cache_clear()
    assert set(load_models()) == {"fx_flights", "fx_hourly", "fx_ranked"}


def test_star_expands_against_the_schema_and_excludes() -> None:
    cols = model_columns(FIXTURES, schema=RAW_SCHEMAS)["fx_flights"]
    assert cols == [c for c in RAW_SCHEMAS["raw_flights"] if c != "_load_id"] + ["late"]


def test_transitive_downstream_through_models() -> None:
    edges = column_lineage(FIXTURES, schema=RAW_SCHEMAS)
    got = downstream_of("raw_flights", "arr_delay", edges=edges)
    assert got == [
        ("fx_flights", "arr_delay"), ("fx_flights", "late"),
        ("fx_hourly", "avg_delay"), ("fx_hourly", "late_share"),
        ("fx_ranked", "value"), ("fx_ranked", "value_rank"),
    ]
    assert downstream_of("raw_weather", "temp", edges=edges) == [("fx_ranked", "value")]
    assert downstream_of("raw_flights", "_load_id", edges=edges) == []
    assert upstream_of("fx_ranked", "value", edges=edges) == [("raw_flights", "arr_delay"), ("raw_weather", "temp")]


def test_downstream_of_the_real_models() -> None:
    got = downstream_of("raw_flights", "dep_delay", FLOWS_MODELS)
    assert got == [("carrier_daily", "avg_dep_delay"), ("route_daily", "avg_dep_delay"), ("stg_flights", "dep_delay")]
    assert ("flights_weather", "is_delayed") in downstream_of("raw_flights", "arr_delay", FLOWS_MODELS)


def test_unknown_table_suggests_a_name() -> None:
    with pytest.raises(UnknownNameError, match="raw_flights"):
        downstream_of("raw_flight", "arr_delay", FLOWS_MODELS)


def test_filter_and_join_columns_count_as_references() -> None:
    # raw_airports.faa is only a join key: no output column comes from it, but renaming it breaks route_daily
    assert downstream_of("raw_airports", "faa", FLOWS_MODELS) == []
    assert ("raw_airports", "faa") in column_references(FLOWS_MODELS)["route_daily"]
    assert affected_models("raw_airports", "faa", FLOWS_MODELS) == ["route_daily", "features_flights"]
    # time_hour is read by stg_flights, so every model built on it is affected, in build order
    assert affected_models("raw_flights", "time_hour", FLOWS_MODELS) == [
        "stg_flights", "carrier_daily", "flights_weather", "route_daily", "features_flights"]
    assert affected_models("raw_weather", "visib", FLOWS_MODELS) == ["flights_weather", "features_flights"]


def test_topological_order_and_cycles() -> None:
    assert topological_order({"c": {"b"}, "b": {"a", "raw_x"}, "a": {"raw_x"}}) == ["a", "b", "c"]
    with pytest.raises(ModelSqlError, match="cycle: a, b"):
        topological_order({"a": {"b"}, "b": {"a"}})


def test_bad_model_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "two.sql").write_text("SELECT 1 AS a; SELECT 2 AS b")
    with pytest.raises(ModelSqlError, match=r"'two'.*exactly one SELECT, found Select, Select"):
        model_dependencies(tmp_path)
    (tmp_path / "two.sql").unlink()
    (tmp_path / "broken.sql").write_text("SELECT a. FROM (")
    with pytest.raises(ModelSqlError, match=r"broken\.sql.*does not parse"):
        column_lineage(tmp_path)
    with pytest.raises(ModelSqlError, match="does not exist"):
        load_models(tmp_path / "nowhere")


def test_overrides_replace_a_model_and_change_its_lineage() -> None:
    patched = "SELECT s.origin, s.flight_date, COUNT(*) AS flights FROM stg_flights AS s GROUP BY ALL"
    models = load_models(FLOWS_MODELS, overrides={"route_daily": patched})
    del models["features_flights"]  # it reads route_daily columns this patch drops (dest, the delay totals)
    assert models["route_daily"] == SqlModel(name="route_daily", path=str(FLOWS_MODELS / "route_daily.sql"), sql=patched)
    edges = column_lineage(models=models)
    assert {(e.column, e.upstream_column) for e in edges if e.model == "route_daily"} == {
        ("origin", "origin"), ("flight_date", "flight_date")}


def test_raw_schemas_come_from_contracts_only(tmp_path: Path) -> None:
    (tmp_path / "airlines.yaml").write_text(
        "dataset: airlines\nowner: ref-team\ncolumns:\n"
        "  - {name: carrier, type: string}\n  - {name: name, type: string}\n  - {name: alliance, type: string}\n"
    )
    schemas = raw_schemas(tmp_path)
    assert schemas == {"raw_airlines": {"carrier": "VARCHAR", "name": "VARCHAR", "alliance": "VARCHAR",
                                        "_load_id": "VARCHAR"}}  # no contract, no schema: nothing built in
    flights = raw_schemas()["raw_flights"]  # the real flights contract
    assert list(flights)[:3] == ["year", "month", "day"] and flights["arr_delay"] == "DOUBLE"


def test_a_raw_table_without_a_contract_says_to_write_one(tmp_path: Path) -> None:
    (tmp_path / "ratings.sql").write_text("SELECT r.stars FROM raw_ratings AS r")
    with pytest.raises(UnknownNameError, match=r"pipewarden contract init trips --from FILE"):
        downstream_of("raw_trips", "stars", tmp_path)
