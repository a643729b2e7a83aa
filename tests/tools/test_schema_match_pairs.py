"""The schema matcher beyond flights: fixed-seed pairs from bundled tables (vega_datasets, statsmodels), split the
four ways of Valentine, renamed and perturbed (`pipewarden.evals.match_pairs`). Floors are set just under what
`benchmarks/schema_match_eval.py` measured on these seeds; the full report is in the README."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("vega_datasets")
pytest.importorskip("statsmodels")

from pipewarden.evals.match_pairs import REPORT_TABLES, SPLITS, MatchPair, ece, pairs, recall_at_gt  # noqa: E402
from pipewarden.tools.schema_match import CALIBRATION, match_columns  # noqa: E402

SEEDS = range(2)
RECALL_FLOOR = {"joinable": 0.95, "unionable": 0.95, "view_unioned": 0.93, "semantically_joinable": 0.90}
"""Measured on these seeds without an embedder: joinable 0.977, unionable 0.969, view_unioned 0.958,
semantically_joinable 0.932."""


@pytest.fixture(scope="module")
def report_pairs() -> list[MatchPair]:
    return pairs(REPORT_TABLES, SEEDS, max_rows=1000)


@pytest.mark.parametrize("split", SPLITS)
def test_recall_at_ground_truth_size_per_split(report_pairs: list[MatchPair], split: str) -> None:
    chosen = [p for p in report_pairs if p.split == split]
    recalls = [recall_at_gt(match_columns(p.reference, p.new), p.truth) for p in chosen]
    assert len(chosen) == len(REPORT_TABLES) * len(SEEDS)
    assert sum(recalls) / len(recalls) >= RECALL_FLOOR[split], (split, recalls)


def test_probabilities_are_calibrated_on_held_out_tables(report_pairs: list[MatchPair]) -> None:
    points = []
    for p in report_pairs:
        for m in match_columns(p.reference, p.new).matches:
            points += [(c.probability, (m.column, c.column) in p.truth) for c in m.candidates]
    assert ece(points) < 0.05


def test_a_column_nothing_corresponds_to_gets_an_explicit_no_match() -> None:
    ref = pd.DataFrame({"price": [10.5, 12.0, 9.9, 11.1] * 50, "city": ["Oslo", "Rome", "Lima", "Pune"] * 50})
    new = pd.DataFrame({"unitPrice": [10.4, 12.1, 9.8, 11.0] * 50, "loaded_at": pd.date_range("2026-01-01", periods=200,
                                                                                          freq="h")})
    report = match_columns(ref, new)
    none = report.match_for("loaded_at")
    assert none.correspondence == "no_match" and none.match is None
    assert none.no_match_probability > 0.8 and none.probability == none.no_match_probability
    cost = report.match_for("unitPrice")
    assert cost.correspondence == "one_to_one" and cost.match == "price" and cost.no_match_probability < 0.5


def test_a_merged_column_gets_a_one_to_many_answer_with_ranked_candidates() -> None:
    first = ["Ann", "Bob", "Cem", "Dee", "Eli", "Fay", "Gus", "Hal"] * 25
    last = ["Smith", "Jones", "Khan", "Ortiz", "Novak", "Li", "Berg", "Moss"][::-1] * 25
    ref = pd.DataFrame({"first_name": first, "last_name": last, "age": list(range(20, 220))})
    new = pd.DataFrame({"fullName": [f"{a} {b}" for a, b in zip(first[3:] + first[:3], last, strict=True)],
                        "AGE_YRS": list(range(21, 221))})
    report = match_columns(ref, new)
    full = report.match_for("fullName")
    assert full.correspondence == "one_to_many"
    assert set(full.sources) == {"first_name", "last_name"}
    assert report.one_to_many == {"fullName": full.sources}
    listed = [c.column for c in full.candidates]
    assert {"first_name", "last_name"} <= set(listed)
    assert [c.probability for c in full.candidates] == sorted((c.probability for c in full.candidates), reverse=True)


def test_exact_names_have_one_candidate_and_the_json_keeps_its_fields() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    m = match_columns(df, df).match_for("a")
    assert [c.column for c in m.candidates] == ["a"] and m.probability > 0.9
    dumped = m.model_dump()
    assert {"column", "match", "score", "best_candidate", "reason", "cast"} <= set(dumped)


def test_calibration_covers_both_component_sets() -> None:
    assert set(CALIBRATION) == {"names+values", "names+embedding+values"}
