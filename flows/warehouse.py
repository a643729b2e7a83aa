"""The DuckDB warehouse for the stages that run on DuckDB: one file, opened briefly per stage.

DuckDB lets one process write a file at a time, so no connection is held open between stages: the web
inbox and a CLI command in another terminal can take turns. Opening goes through `tools.warehouse.connect`
(the one warehouse module, DuckDB or PostgreSQL), so a locked file is the same clear ConfigError everywhere;
a warehouse on a server has no DuckDB connection and says so. New code that must run on any warehouse uses
`pipewarden.tools.warehouse.connect` and its `Warehouse` directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

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
