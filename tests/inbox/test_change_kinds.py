"""The inbox's table of change kinds (`inbox.change_kinds`): every kind of the Change union is declared once, the
kinds it lets a person edit are the kernel's EDITABLE_KINDS, and the terminal, the page and the edit form dispatch
through it (a change set's members each by their own kind, with their `m<index>.` fields)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Literal, get_args

import pytest
from jinja2 import Environment, FileSystemLoader
from pydantic import BaseModel
from rich.console import Console
from starlette.datastructures import FormData

from pipewarden.errors import UserError
from pipewarden.ids import new_id
from pipewarden.inbox import change_kinds
from pipewarden.models import (
    EDITABLE_KINDS,
    ChangeSet,
    CheckResult,
    ColumnMapping,
    DryRun,
    Proposal,
    Quarantine,
    Reingest,
    SqlModelPatch,
)
from pipewarden.models import Change as ChangeUnion


def union_kinds() -> set[str]:
    """The `kind` of every model in the kernel's Change union, read from the union itself."""
    (members, *_) = get_args(ChangeUnion)
    return {model.model_fields["kind"].default for model in get_args(members)}


def terminal(renderable: object) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


class FutureChange(BaseModel):
    """A kind the inbox's table has not heard of."""

    kind: Literal["future_kind"] = "future_kind"
    dataset: str = "flights"
    knob: int = 7

    @property
    def target(self) -> str:
        return "future:flights"


def test_every_kind_of_the_change_union_is_declared_once() -> None:
    assert set(change_kinds.KINDS) == union_kinds()
    assert all(key == entry.kind for key, entry in change_kinds.KINDS.items())


def test_the_editable_kinds_are_the_kernels() -> None:
    editable = {kind for kind, entry in change_kinds.KINDS.items() if entry.parse_form is not None}
    assert editable == set(EDITABLE_KINDS)


TEMPLATES = Path(change_kinds.__file__).parent / "templates"


@pytest.mark.parametrize("entry", [*change_kinds.KINDS.values(), change_kinds.GENERIC],
                         ids=[*change_kinds.KINDS, "GENERIC"])
def test_every_macro_an_entry_names_is_in_the_macros_template(entry: change_kinds.ChangeKind) -> None:
    macros = Environment(loader=FileSystemLoader(TEMPLATES)).get_template("change_kinds.html").module
    view = getattr(macros, entry.view_macro, None)
    assert view is not None, f"{entry.kind or 'GENERIC'} names view macro {entry.view_macro!r}, not in the template"
    assert view.arguments == ("v",)
    if entry.edit_macro is not None:
        edit = getattr(macros, entry.edit_macro, None)
        assert edit is not None, f"{entry.kind} names edit macro {entry.edit_macro!r}, not in the template"
        assert edit.arguments == ("v", "pfx")
    # an editable single kind writes its own fields, under a label; a composite is edited member by member
    assert (entry.edit_macro is not None) == (entry.parse_form is not None and not entry.composite)
    assert bool(entry.edit_label) == (entry.edit_macro is not None)


def test_the_proposal_page_compares_no_change_kind() -> None:
    """proposal.html calls the macros the table names; the one `kind` it may still compare is an event's."""
    text = (TEMPLATES / "proposal.html").read_text(encoding="utf-8")
    compared = re.findall(r"([\w.]+)\.kind\s*(?:==|!=|\bin\b|\bnot in\b|\bis\b)", text)
    assert set(compared) <= {"event"}, compared
    assert "kinds[v.view_macro](v)" in text and "kinds[v.edit_macro](v" in text
    assert [k for k in change_kinds.KINDS if f'"{k}"' in text or f"'{k}'" in text] == []  # no kind named at all


def test_a_change_sets_page_views_are_its_own_and_its_members() -> None:
    members = [Quarantine(dataset="flights", predicate="arr_delay IS NULL", reason="cancelled"),
               Reingest(dataset="flights", load_id="l-1", source="s3://x", reason="r")]
    whole, leaves = change_kinds.page_views(ChangeSet(changes=members), store=None, proposal_id=None)
    assert whole["composite"] and whole["view_macro"] == "view_change_set" and whole["edit_macro"] is None
    assert [v["c"] for v in leaves] == members and not any(v["composite"] for v in leaves)
    assert [v["edit_macro"] for v in leaves] == ["edit_quarantine", None]
    single, (leaf,) = change_kinds.page_views(members[0], store=None, proposal_id=None)
    assert leaf is single and not single["composite"] and single["edit_label"] == "the predicate"


def test_a_change_sets_members_are_parsed_by_their_own_kinds_from_their_prefixed_fields() -> None:
    current = ChangeSet(changes=[
        ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={"flight": "integer"}),
        Reingest(dataset="flights", load_id="l-1", source="s3://raw/flights.csv", reason="r"),
        SqlModelPatch(model="stg_flights", sql="SELECT 1", base_sql="SELECT 2"),
    ], summary="together")
    form = FormData([("m0.rename_from", "departureDelay"), ("m0.rename_to", "dep_delay_min"),
                     ("m2.sql", "SELECT 3\r\nFROM flights"), ("sql", "SELECT 'not a member field'")])
    edited = change_kinds.parse_form(current, form)
    mapping, reingest, patch = edited.changes
    assert mapping.renames == {"departureDelay": "dep_delay_min"} and mapping.casts == {}  # no m0.cast_* fields
    assert reingest == current.changes[1]  # not editable: kept as it was
    assert patch.sql == "SELECT 3\nFROM flights" and patch.base_sql == "SELECT 2"
    assert edited.summary == "together"


def test_a_members_bad_field_is_refused_with_its_kinds_message() -> None:
    current = ChangeSet(changes=[SqlModelPatch(model="stg_flights", sql="SELECT 1")])
    with pytest.raises(UserError, match="the SQL is empty"):
        change_kinds.parse_form(current, FormData([("sql", "SELECT 9"), ("m0.sql", "  ")]))


UNEDITABLE = [Reingest(dataset="flights", load_id="l-1", source="s3://x", reason="r"), FutureChange()]


@pytest.mark.parametrize("change", UNEDITABLE, ids=["reingest", "unknown kind"])
def test_a_kind_that_cannot_be_edited_is_refused_naming_the_kind(change: Reingest | FutureChange) -> None:
    with pytest.raises(UserError, match=f"a {change.kind} change cannot be edited in the inbox") as err:
        change_kinds.parse_form(change, FormData([("sql", "SELECT 1")]))
    assert "reject it with a reason" in (err.value.hint or "")
    assert not change_kinds.editable(change)


def test_a_kind_missing_from_the_table_is_shown_by_its_fields() -> None:
    change = FutureChange()
    assert change_kinds.kind_of(change) is change_kinds.GENERIC
    text = terminal(change_kinds.renderable(change))
    assert "dataset" in text and "knob" in text and "7" in text and "future_kind" not in text
    view = change_kinds.page_view(change, store=None, proposal_id=None)
    assert view == {"c": change, "kind": "future_kind", "target": "future:flights",
                    "fields": [("dataset", "flights"), ("knob", "7")], "view_macro": "view_fields",
                    "edit_macro": None, "edit_label": "", "composite": False, "carries_change": True}
    assert change_kinds.members(change) == [] and change_kinds.leaves(change) == [change]


def test_the_terminal_shows_a_change_set_member_by_member_each_by_its_kind() -> None:
    change = ChangeSet(changes=[ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}),
                                Quarantine(dataset="flights", predicate="arr_delay IS NULL", reason="cancelled")])
    text = terminal(change_kinds.renderable(change))
    assert "1. column_mapping (mapping:flights)" in text and "departureDelay" in text and "->" in text
    assert "2. quarantine (quarantine:flights)" in text and "arr_delay IS NULL" in text
    assert change_kinds.leaves(change) == change.changes


def test_an_edited_quarantine_takes_its_row_counts_from_the_new_dry_run() -> None:
    q = Quarantine(dataset="flights", predicate="dep_delay > 1500", reason="r", rows=0, batch_rows=0)
    after = change_kinds.kind_of(q).from_redry
    assert after is not None
    dry = DryRun(before=CheckResult(passed=False, rows=12), after=CheckResult(passed=True, rows=9),
                 metrics={"rows_taken_out": 3.0, "rows": 12.0})
    assert (after(q, dry).rows, after(q, dry).batch_rows) == (3, 12)
    unmeasured = dry.model_copy(update={"metrics": {}})
    assert after(q, unmeasured) == q


def test_an_edited_mapping_retitles_only_a_title_the_agent_wrote() -> None:
    m = ColumnMapping(dataset="flights", renames={"a": "b"}, casts={"b": "integer"})
    retitle = change_kinds.kind_of(m).retitle
    assert retitle is not None
    agent_wrote = Proposal(event_id=new_id(), agent="schema_drift", dataset="flights", title="flights: map x -> y",
                           diagnosis="d", change=m, thread_id="t")
    assert retitle(m, agent_wrote) == "flights: map a -> b, cast b to integer"
    assert retitle(m, agent_wrote.model_copy(update={"title": "a person's title"})) is None
