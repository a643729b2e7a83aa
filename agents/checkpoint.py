"""The LangGraph checkpointer: SqliteSaver in PIPEWARDEN_HOME (PostgresSaver when the state DB is Postgres).

Checkpoints make each agent thread survive restarts: a graph waiting in `interrupt()` is resumed from a new
process with `Command(resume=...)`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipewarden.settings import get_settings


@contextmanager
def open_checkpointer() -> Iterator[Any]:
    settings = get_settings()
    url = settings.state_url
    if url.startswith("postgresql"):
        from langgraph.checkpoint.postgres import PostgresSaver

        pg_url = url.replace("postgresql+psycopg://", "postgresql://")
        with PostgresSaver.from_conn_string(pg_url) as saver:
            saver.setup()
            yield saver
        return
    from langgraph.checkpoint.sqlite import SqliteSaver

    settings.ensure_home()
    conn = sqlite3.connect(str(settings.checkpoints_path), check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        yield SqliteSaver(conn)
    finally:
        conn.close()
