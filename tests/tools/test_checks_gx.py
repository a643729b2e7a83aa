"""The GX engine judges only what a column's dtype does not answer already, with the same answers."""

from __future__ import annotations

import pandas as pd

from pipewarden.policies.contract import ColumnContract, Contract
from pipewarden.policies.expectations import check_specs
from pipewarden.tools.checks import gx_specs, run_checks

CONTRACT = Contract(dataset="t", owner="o", max_failure_rate=1.0, columns=[
    ColumnContract(name="n", type="integer", nullable=False, min=0, max=9),
    ColumnContract(name="m", type="integer", nullable=False),
    ColumnContract(name="b", type="boolean", nullable=False),
    ColumnContract(name="s", type="string", nullable=False),
])


def _specs() -> tuple:  # type: ignore[type-arg]
    return tuple(s for s in check_specs(CONTRACT) if s.row_level)


def test_not_null_on_a_numpy_integer_or_bool_column_is_answered_by_its_dtype() -> None:
    frame = pd.DataFrame({"n": [1, 2], "m": pd.array([1, None], dtype="Int64"), "b": [True, False], "s": ["x", None]})
    judged = {s.label for s in gx_specs(frame, _specs())}
    assert judged == {"n: between 0 and 9", "m: not null", "s: not null"}  # n and b cannot hold a null


def test_a_nullable_integer_column_still_rejects_its_nulls_on_gx() -> None:
    frame = pd.DataFrame({"n": [1, 20, 3], "m": pd.array([1, None, 3], dtype="Int64"), "b": [True, False, True],
                          "s": ["x", "y", None]})
    gx, pandas = run_checks(frame, CONTRACT, engine="gx"), run_checks(frame, CONTRACT, engine="pandas")
    assert gx.row_reasons.tolist() == ["", "n: between 0 and 9 (got 20); m: not null", "s: not null"]
    assert gx.result == pandas.result and gx.row_reasons.equals(pandas.row_reasons)
