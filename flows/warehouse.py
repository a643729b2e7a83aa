"""The DuckDB warehouse for the stages that run on DuckDB: one file, opened briefly per stage.

DuckDB lets one process write a file at a time, so no connection is held open between stages: the web
inbox and a CLI command in another terminal can take turns. Opening goes through `tools.warehouse.connect`
(the one warehouse module, DuckDB or PostgreSQL), so a locked file is the same clear ConfigError everywhere;
a warehouse on a server has no DuckDB connection and says so. New code that must run on any warehouse uses
`pipewarden.tools.warehouse.connect` and its `Warehouse` directly.

Public names: `connect`, `duckdb_frame`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import pandas as pd

from pipewarden.settings import get_settings
from pipewarden.tools.warehouse import connect as connect_warehouse


@contextmanager
def connect(read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection to the warehouse file (`settings.warehouse_path`), closed after the block."""
    settings = get_settings()
    settings.warehouse_path  # a warehouse on a server raises its ConfigError here  # noqa: B018
    settings.ensure_home()
    with connect_warehouse(settings.warehouse, read_only=read_only) as wh:
        yield wh.duckdb


def duckdb_frame(con: Any, sql: str, params: list[Any]) -> pd.DataFrame:
    """A DuckDB query's rows as the frame DuckDB's own `.df()` gives (the dtypes `Warehouse.read_frame` returns),
    through Arrow: several times faster on the guard's read-back of a big batch. `.df()` makes an integer or
    boolean column that holds a null a nullable `Int64`/`boolean`, where Arrow would give floats or objects; that
    is the one difference, undone here column by column (`tests/flows/test_guard_readback.py` holds the two
    equal for every contract type, with and without nulls)."""
    import numpy as np
    import pyarrow as pa

    table = con.sql(sql, params=params).to_arrow_table()
    df = table.to_pandas()
    for name, column in zip(table.column_names, table.columns, strict=True):
        t = column.type
        if column.null_count and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
            nullable = pd.BooleanDtype() if pa.types.is_boolean(t) else pd.api.types.pandas_dtype(
                np.dtype(t.to_pandas_dtype()).name.replace("uint", "UInt").replace("int", "Int"))
            df[name] = column.to_pandas(types_mapper={t: nullable}.get)
    return df
