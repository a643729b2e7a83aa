"""The guard reads its accepted rows back through Arrow as DuckDB's own `.df()` would give them: same dtypes, same
values, for every contract type with and without nulls."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from pipewarden.flows.guard import duckdb_frame

ROWS = """(1::BIGINT, 1.5::DOUBLE, 'a', TIMESTAMPTZ '2024-01-01 05:00:00+00', true, 9007199254740993::BIGINT, 7::INTEGER),
          (2::BIGINT, 2.5::DOUBLE, 'b', TIMESTAMPTZ '2024-01-02 05:00:00+00', false, 3::BIGINT, 8::INTEGER)"""
NULLS = "(NULL, NULL, NULL, NULL, NULL, NULL, NULL)"


@pytest.mark.parametrize("with_nulls", [False, True], ids=["no-nulls", "nulls"])
def test_the_arrow_read_back_equals_duckdbs_own_frame(with_nulls: bool) -> None:
    con = duckdb.connect()
    rows = ROWS + (", " + NULLS if with_nulls else "")
    con.execute(f"CREATE TABLE raw_t AS SELECT *, 'L1' AS _load_id FROM (VALUES {rows}) v(i, f, s, ts, b, big, small)")
    expected = con.execute("SELECT * FROM raw_t WHERE _load_id = ?", ["L1"]).df()
    got = duckdb_frame(con, "SELECT * FROM raw_t WHERE _load_id = ?", ["L1"])
    pd.testing.assert_frame_equal(got, expected)
    assert (str(got["i"].dtype) == "Int64") is with_nulls  # a null makes the integer column nullable, as .df() does
    assert got["big"].iloc[0] == 9007199254740993  # no trip through float
