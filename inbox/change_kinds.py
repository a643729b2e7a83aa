"""Each change kind's inbox presentation, declared once.

`KINDS` maps every `kind` of `pipewarden.models.Change` to a `ChangeKind`: how the terminal shows it (`pipewarden
inbox show`), what the proposal page needs to show it beyond its fields, the macros of `templates/change_kinds.html`
that show it on the page and write its edit form's fields, how the edit form makes an edited change of it (None: it
cannot be edited in the inbox), its members (a change set), and what an edit takes from its new dry-run.
`render.change_renderable`, the proposal page and its edit form (proposal.html calls the macros an entry names),
`render.proposed_line` and Slack's `change_summary` dispatch through it; none keeps a ladder over kinds, in Python
or in a template. A kind missing from the table is shown through `GENERIC` (its fields as key-values) and cannot be
edited. What a change does, in words, is the model's own `change.text()`; which kinds a re-dry-run proves is
`tools.redry.PROVERS`.

Public names: `ChangeKind`, `KINDS`, `GENERIC`, `kind_of`, `renderable`, `page_view`, `page_views`, `parse_form`,
`editable`, `members`, `leaves`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pipewarden.errors import UserError
from pipewarden.inbox import render
from pipewarden.models import (
    ChangeSet,
    ColumnMapping,
    ContractChange,
    DryRun,
    NoChange,
    Proposal,
    Quarantine,
    SqlModelPatch,
)


def _fields_renderable(change: Any) -> RenderableType:
    """Any change as its fields (`render.change_fields`), one per row: the generic terminal view."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in render.change_fields(change):
        table.add_row(name, Text(value))
    return table


@dataclass(frozen=True, kw_only=True)
class ChangeKind:
    """How the inbox presents, and lets a person edit, one change kind."""

    kind: str
    """The `kind` discriminator of the change model this entry is for."""
    renderable: Callable[[Any], RenderableType] = _fields_renderable
    """The change in the terminal; data goes into `Text`, never into markup. Default: its fields as key-values."""
    page_view: Callable[[Any, Any, Any], dict[str, Any]] | None = None
    """(change, store, proposal_id) -> what proposal.html needs to show it beyond its kind, target and fields (a
    mapping's contract types, a SQL patch's diff against what runs now, a contract's diff). None: nothing more."""
    parse_form: Callable[[Any, Any], Any] | None = None
    """(current, form) -> the edited change from the edit form's fields (UserError when they do not describe one).
    None: the kind cannot be edited in the inbox. The editable kinds are `pipewarden.models.EDITABLE_KINDS`."""
    members: Callable[[Any], Sequence[Any]] | None = None
    """A composite kind's members, shown and edited one by one under it. None: a single change."""
    from_redry: Callable[[Any, DryRun], Any] | None = None
    """The edited change with what its new dry-run measured (a quarantine's row counts). None: kept as edited."""
    retitle: Callable[[Any, Proposal], str | None] | None = None
    """The proposal's title after an edit to this change (None from it, or no function: the title stays)."""
    view_macro: str = "view_fields"
    """The macro in `templates/change_kinds.html` that shows the change on its proposal page, given its page view.
    A composite kind's shows what it says of itself, above its members. Default: its fields as a definition list."""
    edit_macro: str | None = None
    """The macro in `templates/change_kinds.html` that writes the edit form's fields `parse_form` reads, given the
    page view and a field prefix. None: no fields of its own (not editable, or a composite, edited member by
    member)."""
    edit_label: str = ""
    """What the edit form changes, as its summary words it ("Edit the SQL"); with `edit_macro`."""
    carries_change: bool = True
    """False: the kind carries no change to approve (no_change); the page's decision bar says to fix the data by
    hand and reject the proposal with a reason."""

    @property
    def composite(self) -> bool:
        """Whether the kind is shown and edited as its members (`members`)."""
        return self.members is not None


# --------------------------------------------------------------------------- the terminal
def _mapping_renderable(change: ColumnMapping) -> RenderableType:
    renames = Table(title=f"column mapping for {change.dataset}", title_justify="left")
    renames.add_column("incoming column")
    renames.add_column("")
    renames.add_column("contract column")
    for incoming, contract_col in change.renames.items():
        renames.add_row(Text(incoming), "->", Text(contract_col))
    if not change.renames:
        renames.caption = "no renames"
    parts: list[RenderableType] = [renames]
    if change.casts:
        casts = Table(title="casts", title_justify="left")
        casts.add_column("contract column")
        casts.add_column("cast to")
        for col, typ in change.casts.items():
            casts.add_row(Text(col), Text(typ))
        parts.append(casts)
    return Group(*parts)


def _sql_renderable(change: SqlModelPatch) -> RenderableType:
    return Group(Text(f"SQL model {change.model}", style="bold"), Text(change.sql))


def _no_change_renderable(change: NoChange) -> RenderableType:
    return Text(f"no change proposed: {change.reason}", style="magenta")


def _set_renderable(change: ChangeSet) -> RenderableType:
    parts: list[RenderableType] = [Text(change.summary)] if change.summary else []
    for i, member in enumerate(change.changes, 1):
        parts.append(Text(f"{i}. {member.kind} ({member.target})", style="bold"))
        parts.append(renderable(member))
    return Group(*parts)


# --------------------------------------------------------------------------- the proposal page
def _mapping_page(change: ColumnMapping, store: Any, proposal_id: Any) -> dict[str, Any]:
    return {"mapping": render.mapping_view(change, store, proposal_id)}


def _sql_page(change: SqlModelPatch, store: Any, proposal_id: Any) -> dict[str, Any]:
    return {"sql": render.sql_patch_view(change, store)}


def _contract_page(change: ContractChange, store: Any, proposal_id: Any) -> dict[str, Any]:
    return {"diff": render.contract_diff(change), "edit_columns": render.contract_edit_columns(change)}


# --------------------------------------------------------------------------- the edit form
def _mapping_from_form(current: ColumnMapping, form: Any) -> ColumnMapping:
    sources = form.getlist("rename_from")
    targets = form.getlist("rename_to")
    if len(sources) != len(targets):
        raise UserError("the edit form is incomplete (rename_from and rename_to differ in length)",
                        hint="reload the page and edit again")
    renames: dict[str, str] = {}
    for src, dst in zip(sources, targets, strict=True):
        src, dst = str(src).strip(), str(dst).strip()
        if not src or not dst:
            continue  # an emptied row drops that rename
        if src in renames:
            raise UserError(f"incoming column {src!r} is mapped twice", hint="keep one rename per column")
        renames[src] = dst
    cols, types = form.getlist("cast_column"), form.getlist("cast_type")
    if len(cols) != len(types):
        raise UserError("the edit form is incomplete (cast_column and cast_type differ in length)",
                        hint="reload the page and edit again")
    casts = {str(c).strip(): str(t).strip() for c, t in zip(cols, types, strict=True)
             if str(c).strip() and str(t).strip()}
    return ColumnMapping(dataset=current.dataset, renames=renames, casts=casts,
                         source_fingerprint=current.source_fingerprint)


def _sql_from_form(current: SqlModelPatch, form: Any) -> SqlModelPatch:
    sql = str(form.get("sql") or "")
    if not sql.strip():
        raise UserError("the SQL is empty", hint="write the model's SELECT")
    return current.model_copy(update={"sql": sql.replace("\r\n", "\n")})


def _quarantine_from_form(current: Quarantine, form: Any) -> Quarantine:
    predicate = str(form.get("predicate") or "").strip()
    if not predicate:
        raise UserError("the quarantine predicate is empty", hint="write the rows to take out, e.g. arr_delay IS NULL")
    reason = str(form.get("reason_text") or "").strip() or current.reason
    return current.model_copy(update={"predicate": predicate, "reason": reason})


CONTRACT_BOUNDS: tuple[str, ...] = ("min", "max", "max_length")


def _number(value: Any, field: str, *, integer: bool = False) -> float | int | None:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise UserError(f"{field} must be {kind}, not {text!r}", hint="write one, or leave it empty for no bound") \
            from None


def _contract_from_form(current: ContractChange, form: Any) -> ContractChange:
    """The proposed contract with the thresholds from the edit form: `max_failure_rate`, and per column (`col_name`)
    its `col_min`, `col_max` and `col_max_length` (empty: no bound). A column the form names must be in it."""
    out = json.loads(json.dumps(current.contract))
    if "max_failure_rate" in form:
        rate = _number(form.get("max_failure_rate"), "max_failure_rate")
        if rate is None or not 0 <= rate <= 1:
            raise UserError("max_failure_rate must be a share between 0 and 1", hint="e.g. 0.05 for 5% of the rows")
        out["max_failure_rate"] = rate
    names = form.getlist("col_name")
    bounds = {b: form.getlist(f"col_{b}") for b in CONTRACT_BOUNDS}
    if any(len(v) != len(names) for v in bounds.values()):
        raise UserError("the edit form is incomplete (the column bounds differ in length)",
                        hint="reload the page and edit again")
    columns = {c.get("name"): c for c in out.get("columns") or []}
    for i, name in enumerate(names):
        column = columns.get(str(name))
        if column is None:
            raise UserError(f"column {name!r} is not in the proposed contract", hint="reload the page and edit again")
        for b in CONTRACT_BOUNDS:
            value = _number(bounds[b][i], f"{name}.{b}", integer=b == "max_length")
            if value is None:
                column.pop(b, None)
            else:
                column[b] = value
    return current.model_copy(update={"contract": out})


class _Prefixed:
    """The fields of a form whose names start with `prefix`, under their names without it (a change set's member)."""

    def __init__(self, form: Any, prefix: str) -> None:
        self.form, self.prefix = form, prefix

    def getlist(self, name: str) -> list[Any]:
        return list(self.form.getlist(self.prefix + name))

    def get(self, name: str, default: Any = None) -> Any:
        return self.form.get(self.prefix + name, default)

    def __contains__(self, name: object) -> bool:
        return f"{self.prefix}{name}" in self.form


def _set_from_form(current: ChangeSet, form: Any) -> ChangeSet:
    """Each editable member from its own fields, prefixed with its index (`m0.sql`, `m1.predicate`); the others
    as they are."""
    members = [parse_form(m, _Prefixed(form, f"m{i}.")) if editable(m) else m for i, m in enumerate(current.changes)]
    return current.model_copy(update={"changes": members})


# --------------------------------------------------------------------------- after the re-dry-run
def _quarantine_from_redry(change: Quarantine, dry: DryRun) -> Quarantine:
    if "rows_taken_out" not in dry.metrics:
        return change
    return change.model_copy(update={"rows": int(dry.metrics["rows_taken_out"]),
                                     "batch_rows": int(dry.metrics.get("rows", change.batch_rows))})


def _mapping_title(change: ColumnMapping, proposal: Proposal) -> str | None:
    """The title of a mapping proposal that still reads as the agent wrote it ("flights: map a -> b"), redone for
    the edited mapping; any other title stays."""
    if not proposal.title.startswith(f"{proposal.dataset}: map "):
        return None
    parts = [f"{src} -> {dst}" for src, dst in change.renames.items()]
    parts += [f"cast {col} to {typ}" for col, typ in change.casts.items()]
    return f"{change.dataset}: map " + (", ".join(parts) or "nothing")


# --------------------------------------------------------------------------- the table
GENERIC = ChangeKind(kind="")
"""A kind the table does not know: its fields as key-values, nothing more, not editable."""

KINDS: dict[str, ChangeKind] = {k.kind: k for k in (
    ChangeKind(kind="column_mapping", renderable=_mapping_renderable, page_view=_mapping_page,
               parse_form=_mapping_from_form, retitle=_mapping_title,
               view_macro="view_column_mapping", edit_macro="edit_column_mapping", edit_label="the mapping"),
    ChangeKind(kind="sql_model_patch", renderable=_sql_renderable, page_view=_sql_page, parse_form=_sql_from_form,
               view_macro="view_sql_model_patch", edit_macro="edit_sql_model_patch", edit_label="the SQL"),
    ChangeKind(kind="quarantine", parse_form=_quarantine_from_form, from_redry=_quarantine_from_redry,
               view_macro="view_quarantine", edit_macro="edit_quarantine", edit_label="the predicate"),
    ChangeKind(kind="contract_change", page_view=_contract_page, parse_form=_contract_from_form,
               view_macro="view_contract_change", edit_macro="edit_contract_change", edit_label="the thresholds"),
    ChangeKind(kind="change_set", renderable=_set_renderable, parse_form=_set_from_form,
               members=lambda change: change.changes, view_macro="view_change_set"),
    ChangeKind(kind="no_change", renderable=_no_change_renderable, view_macro="view_no_change",
               carries_change=False),
    # a promotion has its own sentence on the page; these are shown through their fields elsewhere, not editable
    ChangeKind(kind="model_promotion", view_macro="view_model_promotion"),
    ChangeKind(kind="reingest"),
    ChangeKind(kind="dedupe_rule"),
)}


# --------------------------------------------------------------------------- dispatch
def kind_of(change: Any) -> ChangeKind:
    """The table's entry for `change`'s kind (`GENERIC` for a kind it does not list)."""
    return KINDS.get(getattr(change, "kind", ""), GENERIC)


def renderable(change: Any) -> RenderableType:
    """The change in the terminal, as its kind renders it."""
    return kind_of(change).renderable(change)


def page_view(change: Any, store: Any, proposal_id: Any) -> dict[str, Any]:
    """What the proposal page needs to show one change: the change, its kind, target and fields, the macros its
    kind is shown and edited with (and the edit form's label), whether it is composite and whether it carries a
    change, and whatever more its kind's view adds."""
    entry = kind_of(change)
    view: dict[str, Any] = {"c": change, "kind": change.kind, "target": change.target,
                            "fields": render.change_fields(change), "view_macro": entry.view_macro,
                            "edit_macro": entry.edit_macro, "edit_label": entry.edit_label,
                            "composite": entry.composite, "carries_change": entry.carries_change}
    if entry.page_view is not None:
        view.update(entry.page_view(change, store, proposal_id))
    return view


def page_views(change: Any, store: Any, proposal_id: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The proposal page's views of `change`: its own, and those of the changes shown one by one (`leaves`: a
    composite's members, else the change itself, whose one view is then both)."""
    whole = page_view(change, store, proposal_id)
    parts = members(change)
    return whole, [page_view(m, store, proposal_id) for m in parts] if parts else [whole]


def parse_form(current: Any, form: Any) -> Any:
    """The edited change from the edit form's fields, parsed by `current`'s kind; UserError when the form does not
    describe one, or when the kind cannot be edited in the inbox."""
    parse = kind_of(current).parse_form
    if parse is None:
        raise UserError(f"a {current.kind} change cannot be edited in the inbox",
                        hint="reject it with a reason; the agent's next proposal will see why")
    return parse(current, form)


def editable(change: Any) -> bool:
    """Whether a person can edit this change in the inbox."""
    return kind_of(change).parse_form is not None


def members(change: Any) -> list[Any]:
    """A composite change's members in the order they apply (a change set's); [] for a single change."""
    of = kind_of(change).members
    return list(of(change)) if of is not None else []


def leaves(change: Any) -> list[Any]:
    """The changes the page shows one by one: a composite change's members, else the change itself."""
    return members(change) or [change]
