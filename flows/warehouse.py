"""The DuckDB warehouse: one file under PIPEWARDEN_HOME, opened briefly per stage.

DuckDB lets one process write a file at a time, so no connection is held open between stages: the web
inbox and a CLI command in another terminal can take turns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from pipewarden.settings import get_settings


@contextmanager
def connect(read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    settings = get_settings()
    settings.ensure_home()
    con = duckdb.connect(str(settings.warehouse_path), read_only=read_only)
    try:
        yield con
    finally:
        con.close()
