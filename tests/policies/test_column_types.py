"""`policies.column_types` owns the contract type vocabulary: every mapping covers every type, the contract model
accepts exactly the vocabulary, and each mapping says what really happens (DuckDB accepts the type names; a column
cast to its contract type lands in DuckDB as `LANDED_DUCKDB_TYPES` says; a probe value held in `PANDAS_DTYPES`
meets its type)."""

from __future__ import annotations

from typing import get_args

import duckdb
import pandas as pd
import pytest
from pydantic import ValidationError

from pipewarden.policies import contract as contract_module
from pipewarden.policies.column_types import (
    COLUMN_TYPES,
    DUCKDB_TYPES,
    LANDED_DUCKDB_TYPES,
    NUMERIC,
    PANDAS_DTYPES,
    PROBE_VALUES,
    ColumnType,
    compatible,
    observed_type,
)
from pipewarden.policies.contract import ColumnContract

RAW = {"integer": ["1", "2", None], "float": ["1.5", "2", None], "string": [1.0, "b", None],
       "timestamp": ["2024-01-02T03:04:05Z", "2024-01-03", None], "boolean": ["yes", "f", None]}


def test_every_mapping_covers_exactly_the_vocabulary() -> None:
    assert COLUMN_TYPES == ("integer", "float", "string", "timestamp", "boolean")
    assert set(get_args(ColumnType)) == set(COLUMN_TYPES) and NUMERIC <= set(COLUMN_TYPES)
    for mapping in (DUCKDB_TYPES, LANDED_DUCKDB_TYPES, PANDAS_DTYPES, PROBE_VALUES, RAW):
        assert set(mapping) == set(COLUMN_TYPES)


def test_the_contract_model_takes_the_vocabulary_and_nothing_else() -> None:
    assert contract_module.ColumnType is ColumnType
    for t in COLUMN_TYPES:
        assert ColumnContract(name="c", type=t).type == t
    with pytest.raises(ValidationError):
        ColumnContract(name="c", type="decimal")  # type: ignore[arg-type]


@pytest.mark.parametrize("ctype", COLUMN_TYPES)
def test_duckdb_knows_each_type_and_a_probe_value_casts_to_it(ctype: str) -> None:
    con = duckdb.connect()
    try:
        got = con.execute(f"SELECT typeof(CAST(? AS {DUCKDB_TYPES[ctype]}))", [PROBE_VALUES[ctype]]).fetchone()
        assert got == (DUCKDB_TYPES[ctype],)
    finally:
        con.close()


@pytest.mark.parametrize("ctype", COLUMN_TYPES)
def test_a_column_cast_to_its_type_lands_as_the_landed_duckdb_type(ctype: str) -> None:
    from pipewarden.tools.mapping import cast_column

    cast, failed = cast_column(pd.Series(RAW[ctype], dtype="object"), ctype)
    assert not failed.any() and observed_type(cast) == ctype
    con = duckdb.connect()
    try:
        con.register("frame", pd.DataFrame({"c": cast}))
        con.execute("SET TimeZone = 'UTC'")
        assert con.execute("SELECT typeof(c) FROM frame LIMIT 1").fetchone() == (LANDED_DUCKDB_TYPES[ctype],)
    finally:
        con.close()


@pytest.mark.parametrize("ctype", COLUMN_TYPES)
def test_a_probe_value_in_the_pandas_dtype_meets_its_type(ctype: str) -> None:
    value = pd.Timestamp(PROBE_VALUES[ctype], tz="UTC") if ctype == "timestamp" else PROBE_VALUES[ctype]
    column = pd.Series([value, None], dtype=PANDAS_DTYPES[ctype])
    assert column.isna().tolist() == [False, True] and compatible(ctype, observed_type(column))


def test_compatibility_is_the_casts_validate_does_without_asking() -> None:
    assert compatible("float", "integer") and compatible("timestamp", "string")
    assert not compatible("integer", "float") and not compatible("string", "timestamp")
    assert all(compatible(t, t) for t in COLUMN_TYPES)
