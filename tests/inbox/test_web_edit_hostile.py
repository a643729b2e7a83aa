"""A person editing a cost proposal's SQL in the web inbox cannot read a server file or a setting through the
dry-run (issue 11): the guard refuses it with a 422 naming the table or function, and even SQL the guard let
through runs on a locked connection that cannot open files, so the page never shows a file's contents."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from pipewarden.store import StateStore
from tests.inbox.test_web_edit import client, edit, fast_checks, sql_proposal, warehouse  # noqa: F401  # fixtures
from tests.inbox.web_client import snapshot

SECRET = "hunter2-do-not-show"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "server-secret.json"
    path.write_text(f'{{"password": "{SECRET}"}}\n')
    return path


@pytest.mark.parametrize(("sql", "names"), [
    ("SELECT * FROM '{f}'", "'{f}'"),
    ("SELECT * FROM read_json_objects('{f}')", "read_json_objects()"),
    ("SELECT * FROM read_ndjson_objects('{f}')", "read_ndjson_objects()"),
    ("SELECT * FROM parquet_metadata('{f}')", "parquet_metadata()"),
    ("SELECT * FROM pg_catalog.pg_settings", "pg_catalog.pg_settings"),
    ("SELECT current_setting('home_directory') AS origin, 1 AS n", "current_setting()"),
])
def test_a_web_edit_that_reads_a_file_or_setting_is_refused(
    client: TestClient, store: StateStore, warehouse: Path, secret_file: Path,  # noqa: F811
    sql: str, names: str,
) -> None:
    p = sql_proposal(store)
    before = snapshot(store)
    resp = edit(client, p.id, sql=sql.format(f=secret_file))
    assert resp.status_code == 422
    assert "is refused" in resp.text and str(escape(names.format(f=secret_file))) in resp.text
    assert SECRET not in resp.text
    assert snapshot(store) == before


def test_sql_the_guard_let_through_still_cannot_read_a_file(
    client: TestClient, store: StateStore, warehouse: Path, secret_file: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth: with the guard switched off, the locked connection itself refuses the file."""
    import pipewarden.tools.redry as redry

    monkeypatch.setattr(redry, "_guard", lambda *a, **k: None)
    p = sql_proposal(store)
    resp = edit(client, p.id, sql=f"SELECT * FROM read_json_objects('{secret_file}')")
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=edited_fails")
    dr = store.get_proposal(p.id).dry_run
    assert dr is not None and not dr.after.passed and dr.sample == []
    assert "disabled by configuration" in dr.after.failed_checks[0]
    page = client.get(resp.headers["location"]).text
    assert SECRET not in page and SECRET not in str(dr.model_dump())
