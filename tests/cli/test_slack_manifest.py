"""`pipewarden slack manifest`: the scopes of the Web API methods the Slack code calls, interactivity at the
inbox's /slack/events, a bot user; YAML by default, JSON with --json."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path

import yaml

from pipewarden.inbox.slack_manifest import METHOD_SCOPES
from tests.conftest import CliResult

SLACK_CODE = Path(__file__).resolve().parents[2] / "inbox" / "slack.py"
Pw = Callable[..., CliResult]


def _methods_called(path: Path) -> set[str]:
    """Web API methods called through a slack_sdk WebClient in `path`: `client.chat_postMessage(...)` is
    chat.postMessage (slack_sdk names each method with its dot as an underscore)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            family, _, method = node.func.attr.partition("_")
            if family in {"chat", "views", "users", "conversations", "reactions", "files", "auth", "apps", "team"} \
                    and method:
                found.add(f"{family}.{method}")
    return found


def test_every_method_the_slack_code_calls_has_its_scopes_listed() -> None:
    called = _methods_called(SLACK_CODE)
    assert {"chat.postMessage", "chat.update", "views.open"} <= called  # the scan sees the calls it should
    assert called == set(METHOD_SCOPES)


def test_manifest_yaml_with_scopes_interactivity_and_bot_user(pw: Pw) -> None:
    r = pw("slack", "manifest", "--url", "https://pw.example.com/inbox/", "--bot-name", "warden")
    assert r.code == 0, r.err
    m = yaml.safe_load(r.out)
    assert m["oauth_config"]["scopes"]["bot"] == ["chat:write"]
    assert m["settings"]["interactivity"] == {"is_enabled": True,
                                              "request_url": "https://pw.example.com/inbox/slack/events"}
    assert m["features"]["bot_user"]["display_name"] == "warden"
    assert m["_metadata"]["major_version"] == 1
    assert r.err == ""  # https: no warning


def test_manifest_json_defaults_to_the_public_url_and_warns_about_http(pw: Pw, monkeypatch) -> None:
    from pipewarden.settings import get_settings

    monkeypatch.setenv("PIPEWARDEN_PUBLIC_URL", "http://127.0.0.1:9999")
    get_settings.cache_clear()
    r = pw("slack", "manifest", "--json")
    assert r.code == 0
    m = json.loads(r.out)
    assert m["settings"]["interactivity"]["request_url"] == "http://127.0.0.1:9999/slack/events"
    assert "Slack accepts only https request URLs" in r.err_text


def test_a_url_that_is_not_an_address_is_refused(pw: Pw) -> None:
    r = pw("slack", "manifest", "--url", "pw.example.com")
    assert r.code == 2 and "is not an http(s) address" in r.err_text and r.out == ""
