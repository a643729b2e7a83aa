"""The contract's column types, in one place: the vocabulary, and what each type is in pandas and in DuckDB.

A contract names each column with one of `COLUMN_TYPES` (`integer`, `float`, `string`, `timestamp`, `boolean`).
Everything that turns a type into something else (a cast, a DuckDB column, a pandas dtype) or a pandas column into
a type reads it here, so adding a type is one edit here plus whatever a test of the mappings names as missing. There
is no great-expectations mapping: types are not an expectation, `policies.contract.schema_diff` checks them (with
`observed_type` and `compatible`) before any row rule runs.

Public names: `ColumnType`, `COLUMN_TYPES`, `NUMERIC`, `DUCKDB_TYPES`, `LANDED_DUCKDB_TYPES`, `PANDAS_DTYPES`,
`PROBE_VALUES`, `observed_type`, `compatible`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

ColumnType = Literal["integer", "float", "string", "timestamp", "boolean"]
COLUMN_TYPES: tuple[ColumnType, ...] = get_args(ColumnType)
"""The vocabulary, in the order messages list it."""
NUMERIC: frozenset[str] = frozenset({"integer", "float"})
"""The types with a numeric range (`min`, `max`)."""

DUCKDB_TYPES: Mapping[str, str] = {
    "integer": "BIGINT", "float": "DOUBLE", "string": "VARCHAR", "timestamp": "TIMESTAMP", "boolean": "BOOLEAN",
}
"""The DuckDB type a SQL model sees for a raw column of each type: the raw tables' schemas in lineage
(`tools.lineage.raw_schemas`) and the typed NULL that stands in for a dropped column (`tools.sql_patch`)."""
LANDED_DUCKDB_TYPES: Mapping[str, str] = {**DUCKDB_TYPES, "timestamp": "TIMESTAMP WITH TIME ZONE"}
"""The DuckDB type a column lands as in the warehouse once cast to its contract type (`tools.mapping.cast_column`
makes timestamps UTC-aware): what the pushdown path casts accepted rows to."""
PANDAS_DTYPES: Mapping[str, str] = {
    "integer": "Int64", "float": "float64", "string": "object", "timestamp": "datetime64[us, UTC]", "boolean": "boolean",
}
"""A pandas dtype that holds each type with its nulls (nullable integers and booleans, UTC-aware timestamps)."""
PROBE_VALUES: Mapping[str, Any] = {
    "integer": 1, "float": 1.0, "string": "X", "timestamp": "2013-01-01 00:00:00", "boolean": True,
}
"""One non-null value of each type, for proofs that fill a column with something other than NULL."""


def observed_type(values: Any) -> str:
    """The contract type of a pandas Series, from its dtype (object columns are `string`)."""
    import pandas as pd

    dt = values.dtype
    if pd.api.types.is_bool_dtype(dt):
        return "boolean"
    if pd.api.types.is_integer_dtype(dt):
        return "integer"
    if pd.api.types.is_float_dtype(dt):
        # a float column whose values are all whole numbers is an integer column with nulls
        non_null = values.dropna()
        if len(non_null) and bool(((non_null % 1) == 0).all()):
            return "integer"
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dt):
        return "timestamp"
    return "string"


def compatible(expected: str, observed: str) -> bool:
    """Whether an observed type satisfies a contract type without a cast."""
    if expected == observed:
        return True
    if expected == "float" and observed == "integer":
        return True
    if expected == "timestamp" and observed == "string":
        return True  # ISO strings are parsed at validate time; bad ones fail the row check
    return False
