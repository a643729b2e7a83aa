"""The state DB's SQLite settings: WAL for concurrent readers, and every commit fsynced (synchronous=FULL) so a
power loss after a decision was acknowledged loses nothing."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pipewarden import db


def test_every_sqlite_connection_is_wal_with_synchronous_full(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar_one() == 2  # 2 = FULL (1 = NORMAL)
    finally:
        engine.dispose()
