"""Identity from policies/approvers.yaml: lookups, and errors that name the file, the entry and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipewarden.errors import ConfigError
from pipewarden.policies.approvers import Approvers
from pipewarden.settings import get_settings


def test_the_shipped_file_has_owners_a_steward_an_ml_owner_and_an_engineer() -> None:
    approvers = Approvers.load()
    roles = {a.name: a.roles for a in approvers.all()}
    assert roles["alice"] == ["owner"] and roles["bob"] == ["steward"]
    assert roles["erin"] == ["ml_owner"] and roles["dave"] == ["engineer"]
    alice = approvers.by_slack("U0FLIGHTS")
    assert alice is not None and alice.name == "alice" and alice.covers("flights") and not alice.covers("planes")
    assert approvers.get("bob").roles_for("weather") == ["steward"]  # type: ignore[union-attr]
    assert approvers.get("nobody") is None and approvers.by_slack("U0NOBODY") is None


def test_the_file_comes_from_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "people.yaml"
    path.write_text("approvers:\n  - {name: zoe, roles: [owner], datasets: [weather], slack_user_id: U1}\n")
    monkeypatch.setenv("PIPEWARDEN_APPROVERS_FILE", str(path))
    get_settings.cache_clear()
    approvers = Approvers.load()
    assert [a.name for a in approvers.all()] == ["zoe"] and approvers.path == path


@pytest.mark.parametrize(("text", "message"), [
    ("approvers:\n  - {name: zoe, roles: [owner], team: x}\n", "approver #1 ('zoe'), field 'team'"),
    ("approvers:\n  - {name: zoe}\n", "approver #1 ('zoe'), field 'roles'"),
    ("approvers:\n  - {name: system, roles: [owner]}\n", "system identity"),
    ("approvers:\n  - {name: zoe, roles: [owner]}\n  - {name: zoe, roles: [steward]}\n", "'zoe' is listed twice"),
    ("approvers:\n  - {name: a, roles: [owner], slack_user_id: U1}\n  - {name: b, roles: [owner], slack_user_id: U1}\n",
     "slack_user_id 'U1' is given to both 'a' and 'b'"),
    ("people: []\n", "expected a mapping with an 'approvers' list"),
    ("approvers: [\n", "not valid YAML"),
])
def test_a_bad_file_is_a_clear_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "approvers.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Approvers.load(path)
    assert str(path) in err.value.message and message in err.value.message


def test_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as err:
        Approvers.load(tmp_path / "nope.yaml")
    assert "PIPEWARDEN_APPROVERS_FILE" in (err.value.hint or "")
