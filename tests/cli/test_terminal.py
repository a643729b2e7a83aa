"""Unknown statuses, datasets, people and roles are errors naming the value, the valid ones and a did-you-mean
(exit 2), never an empty answer that looks like success."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import CliResult

Pw = Callable[..., CliResult]


def test_an_unknown_status_is_an_error_with_a_did_you_mean(pw: Pw) -> None:
    r = pw("inbox", "list", "--status", "pendng")
    assert r.code == 2 and r.out == ""
    assert "unknown proposal status 'pendng'" in r.err_text and "did you mean 'pending'?" in r.err_text
    assert "needs_human" in r.err_text  # the valid ones are listed


def test_an_unknown_dataset_is_an_error_not_an_empty_queue(pw: Pw) -> None:
    r = pw("inbox", "list", "--dataset", "flihgts")
    assert r.code == 2 and "unknown dataset 'flihgts'" in r.err_text and "did you mean 'flights'?" in r.err_text
    assert pw("inbox", "list", "--dataset", "flights").code == 0


def test_knowledge_search_as_a_misspelt_reader_lists_people_and_roles(pw: Pw) -> None:
    r = pw("knowledge", "search", "delay", "--as", "analsyt")
    assert r.code == 2 and r.out == ""
    assert "unknown person or role 'analsyt'" in r.err_text and "did you mean 'analyst'?" in r.err_text
    assert "alice" in r.err_text and "steward" in r.err_text
    r = pw("knowledge", "search", "delay", "--as", "alcie")
    assert r.code == 2 and "did you mean 'alice'?" in r.err_text


def test_deciding_as_a_misspelt_person_names_the_approvers(pw: Pw) -> None:
    from pipewarden.store import StateStore
    from tests.inbox.conftest import make_proposal

    p = make_proposal(StateStore())
    r = pw("inbox", "approve", p.short_id, "--as", "alcie")
    assert r.code == 2 and "unknown approver" in r.err_text and "did you mean 'alice'?" in r.err_text
    assert StateStore().decisions_for(p.id) == []
