"""Who decides from the command line, proven (`inbox.identity.cli_identity`): a personal token or the OS login
mapped in approvers.yaml; `--as` / PIPEWARDEN_USER only select among the proven identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipewarden.errors import ConfigError, Forbidden, UserError
from pipewarden.inbox.identity import cli_identity
from pipewarden.policies.approvers import Approver, Approvers
from pipewarden.store import StateStore


@pytest.fixture
def people() -> Approvers:
    return Approvers([
        Approver(name="alice", roles=["owner"], datasets=["flights"], os_user="alice-login"),
        Approver(name="bob", roles=["steward"], datasets=["*"]),
    ])


def test_the_os_login_proves_the_person_it_is_mapped_to(store: StateStore, people: Approvers) -> None:
    who = cli_identity(store, people, env={}, login="alice-login")
    assert (who.name, who.proof, who.detail) == ("alice", "os_user", "alice-login")
    assert cli_identity(store, people, claimed="alice", env={}, login="alice-login").name == "alice"


@pytest.mark.parametrize("how", ["--as", "PIPEWARDEN_USER"])
def test_a_name_the_caller_has_not_proven_is_refused(store: StateStore, people: Approvers, how: str) -> None:
    kwargs = {"claimed": "bob", "env": {}} if how == "--as" else {"env": {"PIPEWARDEN_USER": "bob"}}
    with pytest.raises(Forbidden, match="you cannot decide as 'bob': you proved alice") as info:
        cli_identity(store, people, login="alice-login", **kwargs)  # type: ignore[arg-type]
    assert "their own token" in (info.value.hint or "")


def test_nothing_proven_is_a_clear_error_even_with_a_name(store: StateStore, people: Approvers) -> None:
    with pytest.raises(UserError, match="cannot tell who is deciding") as info:
        cli_identity(store, people, env={"PIPEWARDEN_USER": "alice"}, login="someone-else")
    assert "a name alone, 'alice', proves nothing" in info.value.message
    assert "PIPEWARDEN_TOKEN" in (info.value.hint or "") and "os_user: someone-else" in (info.value.hint or "")


def test_a_token_proves_its_owner_and_a_bad_one_is_refused(store: StateStore, people: Approvers) -> None:
    token = store.issue_token("bob")
    both = {"env": {"PIPEWARDEN_TOKEN": token}, "login": "alice-login"}
    assert cli_identity(store, people, **both).name == "bob"  # a token first: it was given on purpose
    assert cli_identity(store, people, claimed="alice", **both).proof == "os_user"  # --as selects among the two
    store.revoke_tokens("bob")
    with pytest.raises(UserError, match=r"token in \$PIPEWARDEN_TOKEN is unknown or has been revoked"):
        cli_identity(store, people, **both)


def test_a_token_file_must_be_private(store: StateStore, people: Approvers, tmp_path: Path) -> None:
    path = tmp_path / "tok"
    path.write_text(store.issue_token("bob"))
    path.chmod(0o640)
    with pytest.raises(UserError, match="can be read by others"):
        cli_identity(store, people, token_file=path, env={}, login="x")
    path.chmod(0o600)
    assert cli_identity(store, people, token_file=path, env={}, login="x").detail == f"--token-file {path}"


def test_one_login_may_not_prove_two_people() -> None:
    with pytest.raises(ConfigError, match="os_user 'shared' is given to both 'alice' and 'bob'"):
        Approvers([Approver(name="alice", roles=["owner"], os_user="shared"),
                   Approver(name="bob", roles=["steward"], os_user="shared")])


def test_reading_needs_a_role_on_the_dataset_and_a_reporter_reads_nothing() -> None:
    owner = Approver(name="alice", roles=["owner"], datasets=["flights", "air*"])
    reporter = Approver(name="dbt-ci", roles=["reporter"], datasets=["*"])
    assert owner.may_read("flights") and owner.may_read("airports") and not owner.may_read("planes")
    assert not reporter.may_read("flights")


def test_refusals_say_how_to_prove_who_you_are_not_to_pick_a_name(store: StateStore, people: Approvers) -> None:
    from pipewarden.models import Verdict
    from pipewarden.policies.approval import check_can_decide
    from tests.inbox.conftest import make_proposal

    p = make_proposal(store)
    with pytest.raises(Forbidden) as system:
        store.decide(p.id, Verdict.approve, "supervisor")
    with pytest.raises(Forbidden) as policy_system:
        check_can_decide("supervisor", p, Verdict.approve, people)
    with pytest.raises(Forbidden) as stranger:
        check_can_decide("mallory", p, Verdict.approve, people)
    for refused in (system.value, policy_system.value, stranger.value):
        said = f"{refused.message} {refused.hint}"
        assert "YOUR_NAME" not in said and "--as NAME" not in said
        assert "PIPEWARDEN_TOKEN" in said and "--token-file" in said and "os_user" in said
