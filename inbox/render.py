"""Terminal and JSON renderings of the queue, for `pipewarden inbox list|show` and `pipewarden audit verify`.

Every string that comes from data (titles, diagnoses, column names, LLM text) goes into a `rich.text.Text`,
never into markup, so a title like "[red]x" or "[link=...]" is printed as it is written.
The JSON helpers return plain dicts (JSON-ready: ids, times and enums as strings) for `--json`.

The web pages' view helpers live here too (they render the same things as HTML through the templates):
`age_words` ("3 days"), `unified_diff` / `DiffLine`, `change_fields` (any change kind as field/value pairs),
`current_sql`, `sql_patch_view`, `mapping_view`, `contract_diff` (only the fields that change, defaults left
out) and `citations_by_relevance`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pipewarden.audit import AuditEntry, AuditReport
from pipewarden.events import Event
from pipewarden.inbox.service import DecisionOutcome
from pipewarden.models import (
    AUTONOMY_ACTOR,
    Citation,
    ColumnMapping,
    Decision,
    DryRun,
    Proposal,
    ProposalStatus,
    SqlModelPatch,
)
from pipewarden.settings import get_settings

STATUS_STYLE: dict[ProposalStatus, str] = {
    ProposalStatus.pending: "bold yellow",
    ProposalStatus.needs_human: "bold magenta",
    ProposalStatus.approved: "cyan",
    ProposalStatus.applying: "cyan",
    ProposalStatus.applied: "cyan",
    ProposalStatus.verified: "bold green",
    ProposalStatus.rejected: "red",
    ProposalStatus.rolled_back: "bold red",
    ProposalStatus.expired: "dim",
}
RISK_STYLE: dict[str, str] = {"low": "green", "medium": "yellow", "high": "bold red"}
SAMPLE_ROWS = 5


# --------------------------------------------------------------------------- small helpers
def age(at: datetime, now: datetime | None = None) -> str:
    """A compact age such as "42s", "5m", "3h" or "2d" (naive times are taken as UTC)."""
    now = now or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    seconds = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def age_words(at: datetime, now: datetime | None = None) -> str:
    """An age in words for a person: "just now", "1 minute", "5 hours", "3 days", "2 months", "1 year"."""
    now = now or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    seconds = max(0, int((now - at).total_seconds()))
    if seconds < 60:
        return "just now"
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600),
                       ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    raise AssertionError("unreachable")


def ago(at: datetime, now: datetime | None = None) -> str:
    """`age_words` as a phrase after a time: "just now", "5 minutes ago" (never "just now ago")."""
    words = age_words(at, now)
    return words if words == "just now" else f"{words} ago"


def status_text(status: ProposalStatus) -> Text:
    return Text(status.value, style=STATUS_STYLE.get(status, ""))


def auto_label(p: Proposal) -> str:
    """How an auto-approved proposal was approved, for every listing: "auto-approved: earned autonomy" or
    "auto-approved: policy" ("" when people decided it)."""
    if not p.auto_approved_by:
        return ""
    return "auto-approved: " + ("earned autonomy" if p.auto_approved_by == AUTONOMY_ACTOR else p.auto_approved_by)


def _kv(rows: Iterable[tuple[str, RenderableType | str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value if not isinstance(value, str) else Text(value))
    return table


def _cell(value: Any) -> Text:
    if value is None:
        return Text("null", style="dim")
    return Text(str(value))


# --------------------------------------------------------------------------- the queue
def proposals_table(proposals: Sequence[Proposal], *, now: datetime | None = None) -> Table:
    """One row per proposal: short id, status, risk, agent, dataset, title and age."""
    table = Table(title=f"proposals ({len(proposals)})", title_justify="left", expand=False)
    for name in ("id", "status", "risk", "agent", "dataset", "title", "age"):
        table.add_column(name, no_wrap=name in ("id", "status", "age"))
    for p in proposals:
        table.add_row(
            Text(p.short_id, style="bold"),
            status_text(p.status) + (Text(f" ({auto_label(p)})", style="magenta") if p.auto_approved_by else ""),
            Text(p.risk.value, style=RISK_STYLE.get(p.risk.value, "")),
            Text(p.agent),
            Text(p.dataset),
            Text(p.title),
            Text(age(p.created_at, now)),
        )
    if not proposals:
        table.caption = "the queue is empty"
    return table


# --------------------------------------------------------------------------- one proposal
def change_renderable(change: Any) -> RenderableType:
    """The typed change, readably, as its kind renders it (`inbox.change_kinds`): a rename table and casts, a SQL
    text, a change set's members, any other kind as its fields, or why there is no change."""
    from pipewarden.inbox import change_kinds  # it is built on this module's view helpers

    return change_kinds.renderable(change)


def dry_run_renderable(dry_run: DryRun | None) -> RenderableType:
    """Checks before and after the change on the failing batch, and a few rows after it."""
    if dry_run is None:
        return Text("no dry run", style="dim")
    table = Table(title="dry run on the failing batch", title_justify="left")
    for name in ("", "passed", "rows", "failed rows", "failed checks", "schema errors"):
        table.add_column(name)
    for label, r in (("before", dry_run.before), ("after", dry_run.after)):
        table.add_row(
            label,
            Text("yes", style="green") if r.passed else Text("no", style="red"),
            str(r.rows),
            str(r.failed_rows),
            Text("\n".join(r.failed_checks) or "-"),
            Text("\n".join(r.schema_errors) or "-"),
        )
    verdict = Text("the change heals the batch", style="green") if dry_run.heals else Text(
        "the change does not heal the batch", style="bold red"
    )
    parts: list[RenderableType] = [table, verdict]
    if dry_run.sample:
        sample = Table(title=f"sample after the change ({min(len(dry_run.sample), SAMPLE_ROWS)} rows)",
                       title_justify="left")
        columns = sample_columns(dry_run.sample)
        for col in columns:
            sample.add_column(Text(col))
        for row in dry_run.sample[:SAMPLE_ROWS]:
            sample.add_row(*(_cell(row.get(c)) for c in columns))
        parts.append(sample)
    return Group(*parts)


def sample_columns(sample: Sequence[dict[str, Any]]) -> list[str]:
    """The union of the sample rows' keys, in first-seen order."""
    seen: dict[str, None] = {}
    for row in sample:
        for key in row:
            seen.setdefault(str(key), None)
    return list(seen)


def citations_table(citations: Sequence[Citation]) -> Table:
    table = Table(title=f"citations ({len(citations)})", title_justify="left")
    for name in ("source", "kind", "owner", "updated", "excerpt"):
        table.add_column(name)
    for c in citations:
        table.add_row(
            Text(c.source), Text(c.kind), Text(c.owner or "-"),
            Text(c.updated_at.isoformat(timespec="seconds") if c.updated_at else "-"),
            Text(c.excerpt[:120]),
        )
    return table


def audit_table(audit: Sequence[AuditEntry]) -> Table:
    table = Table(title=f"audit trail ({len(audit)})", title_justify="left")
    for name in ("seq", "at", "action", "actor", "detail"):
        table.add_column(name)
    for e in audit:
        table.add_row(
            str(e.seq), e.at.isoformat(timespec="seconds"), Text(e.action), Text(e.actor),
            Text(json.dumps(e.detail, sort_keys=True, default=str)),
        )
    return table


def proposal_detail(
    p: Proposal, decisions: Sequence[Decision], audit: Sequence[AuditEntry], *, event: Event | None = None
) -> RenderableType:
    """Everything about one proposal: summary, diagnosis, change, evidence, citations, decisions, audit trail."""
    summary = _kv([
        ("id", str(p.id)),
        ("status", status_text(p.status) + (Text(f" ({p.status_reason})") if p.status_reason else Text(""))),
        ("agent", f"{p.agent} (planner: {p.planner})"),
        ("dataset", p.dataset),
        ("risk", Text(p.risk.value, style=RISK_STYLE.get(p.risk.value, ""))),
        ("required roles", ", ".join(p.required_roles) or "-"),
        ("event", f"{event.kind} at {event.occurred.isoformat(timespec='seconds')}" if event else str(p.event_id)),
        ("created", f"{p.created_at.isoformat(timespec='seconds')} ({ago(p.created_at)})"),
    ])
    parts: list[RenderableType] = [
        Panel(summary, title=Text(p.title), title_align="left"),
        Panel(Text(p.diagnosis), title="diagnosis", title_align="left"),
        Panel(change_renderable(p.change), title=f"change: {p.change.kind}", title_align="left"),
    ]
    if p.tried:
        parts.append(Panel(Text("\n".join(f"- {t}" for t in p.tried)), title="tried", title_align="left"))
    parts.append(dry_run_renderable(p.dry_run))
    if p.citations:
        parts.append(citations_table(p.citations))
    if decisions:
        dt = Table(title="decisions", title_justify="left")
        for name in ("verdict", "actor", "via", "at", "reason"):
            dt.add_column(name)
        for d in decisions:
            dt.add_row(Text(d.verdict.value, style="green" if d.verdict.value == "approve" else "red"),
                       Text(d.actor), d.via, d.decided_at.isoformat(timespec="seconds"), Text(d.reason or "-"))
        parts.append(dt)
    parts.append(audit_table(audit))
    return Group(*parts)


def audit_report(report: AuditReport) -> RenderableType:
    """The result of `pipewarden audit verify`: a green line (and any notes), or every problem found."""
    if report.ok:
        line = Text(f"audit log verified: {report.entries} entries, the hash chain is intact", style="green")
        if report.anchored_seq is not None:
            line.append(f"; its signed anchor (entry {report.anchored_seq}) and every proposal's trail agree",
                        style="green")
        for note in report.notes:
            line.append(f"\nnote: {note}", style="dim")
        return line
    body = Text()
    where = f": broken at entry {report.first_broken_seq}" if report.first_broken_seq is not None else ""
    body.append(f"the audit log does not verify{where}\n", style="bold red")
    for problem in report.problems or [report.problem or "unknown problem"]:
        body.append(f"- {problem}\n")
    body.append(f"({report.entries} entries checked)", style="dim")
    return Panel(body, title="audit verify", title_align="left", border_style="red")


def outcome_renderable(outcome: DecisionOutcome) -> RenderableType:
    """One or two lines for `inbox approve|reject`: who decided, and where the proposal ended."""
    d, p = outcome.decision, outcome.proposal
    line = Text()
    line.append("approved" if d.verdict.value == "approve" else "rejected", style="bold")
    line.append(f" proposal {p.short_id} as ")
    line.append(d.actor)
    line.append("; it is now ")
    line.append_text(status_text(p.status))
    if outcome.resume == "failed":
        line.append(f"\nresuming the agent failed: {outcome.resume_error}", style="red")
        line.append("\nthe decision is stored; resuming can be retried later (the supervisor does it)", style="dim")
    return line


# --------------------------------------------------------------------------- JSON for --json and the API
def proposal_json(p: Proposal) -> dict[str, Any]:
    """A proposal's summary row: what `inbox list --json` prints per proposal."""
    return {
        "id": str(p.id),
        "short_id": p.short_id,
        "status": p.status.value,
        "risk": p.risk.value,
        "agent": p.agent,
        "dataset": p.dataset,
        "title": p.title,
        "change": p.change.kind,
        "auto_approved_by": p.auto_approved_by,
        "created_at": p.created_at.isoformat(),
        "updated_at": p.updated_at.isoformat(),
    }


def proposals_json(proposals: Sequence[Proposal]) -> dict[str, Any]:
    """The queue: `{"count": n, "proposals": [summary, ...]}`."""
    return {"count": len(proposals), "proposals": [proposal_json(p) for p in proposals]}


def proposal_detail_json(
    p: Proposal, decisions: Sequence[Decision], audit: Sequence[AuditEntry], *, event: Event | None = None
) -> dict[str, Any]:
    """The whole proposal (as stored), its event, decisions and audit trail."""
    return {
        "proposal": p.model_dump(mode="json"),
        "event": event.model_dump(mode="json") if event is not None else None,
        "decisions": [d.model_dump(mode="json") for d in decisions],
        "audit": [e.model_dump(mode="json") for e in audit],
    }


def audit_report_json(report: AuditReport) -> dict[str, Any]:
    return report.model_dump(mode="json")


def outcome_json(outcome: DecisionOutcome) -> dict[str, Any]:
    return {
        "decision": outcome.decision.model_dump(mode="json"),
        "proposal": proposal_json(outcome.proposal),
        "resume": outcome.resume,
        "resume_error": outcome.resume_error,
    }


# --------------------------------------------------------------------------- for the web pages
DiffKind = Literal["meta", "hunk", "add", "del", "ctx"]


class DiffLine(BaseModel):
    """One line of a unified diff, with its kind for styling."""

    kind: DiffKind
    text: str


def unified_diff(old: str, new: str, old_label: str, new_label: str, context: int = 3) -> list[DiffLine]:
    """`old` -> `new` as a unified diff, line by line (empty when they are equal)."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), old_label, new_label, n=context, lineterm="")
    out: list[DiffLine] = []
    for line in lines:
        if line.startswith(("---", "+++")):
            kind: DiffKind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append(DiffLine(kind=kind, text=line))
    return out


def _value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, sort_keys=True, default=str)
    return str(value)


def change_fields(change: Any) -> list[tuple[str, str]]:
    """Any change as (field, readable value) pairs, `kind` left out: the generic rendering of a change kind."""
    data = change.model_dump(mode="json") if isinstance(change, BaseModel) else dict(change)
    return [(name, _value_text(value)) for name, value in data.items() if name != "kind"]


def current_sql(model: str, store: Any) -> tuple[str | None, str]:
    """The SQL model `model` runs now and where that comes from: its active version, else its file."""
    active = store.active_version(f"sql:{model}")
    if active is not None and isinstance(active.content.get("sql"), str):
        return active.content["sql"], f"active version {active.number}"
    path = get_settings().models_dir / f"{model}.sql"
    if path.is_file():
        return path.read_text(encoding="utf-8"), f"file {path.parent.name}/{path.name}"
    return None, ""


def sql_patch_view(change: SqlModelPatch, store: Any) -> dict[str, Any]:
    """A SQL patch as the page shows it: the unified diff of the model's current SQL against the patch."""
    old, origin = current_sql(change.model, store)
    if old is None:
        old, origin = change.base_sql, "the SQL the agent patched"
    stale = bool(change.base_sql.strip()) and change.base_sql.strip() != (old or "").strip()
    return {"diff": unified_diff(old or "", change.sql, f"{change.model}.sql ({origin or 'new model'})",
                                 f"{change.model}.sql (proposed)"),
            "origin": origin, "stale": stale}


def mapping_view(change: ColumnMapping, store: Any, proposal_id: Any = None) -> dict[str, Any]:
    """A column mapping as the page shows it: renames old -> new, casts, the active version (is it this
    proposal's, or the one it would replace) and the contract's columns (the choices when editing)."""
    from typing import get_args

    from pipewarden.policies.contract import ColumnType, load_contract

    try:
        contract = load_contract(change.dataset)
        columns = [(c.name, c.type) for c in contract.columns]
    except Exception:  # the page still shows the mapping when the contract cannot be read
        columns = []
    types = dict(columns)
    renames = [{"incoming": src, "target": dst, "contract_type": types.get(dst, "?")}
               for src, dst in change.renames.items()]
    active = store.active_version(change.target)
    mine = active is not None and proposal_id is not None and str(active.proposal_id) == str(proposal_id)
    return {"renames": renames, "casts": list(change.casts.items()), "contract_columns": columns,
            "types": list(get_args(ColumnType)), "active": active, "active_is_this": mine}


def normalized_contract(data: Any) -> dict[str, Any]:
    """A contract (a mapping as read from YAML or proposed by an agent) as plain JSON with every default left out
    and every number in its field's type (`min: 1` and `min: 1.0` are the same), so two contracts that mean the
    same thing compare equal. A mapping that is not a valid contract is returned as it is."""
    from pydantic import ValidationError

    from pipewarden.policies.contract import Contract

    if not isinstance(data, dict):
        return {}
    try:
        return Contract.model_validate(data).model_dump(mode="json", exclude_defaults=True, exclude={"path"})
    except ValidationError:
        return dict(data)


def changed_contract_fields(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parts of two normalized contracts that differ: top-level fields whose values differ, and of `columns`
    only the columns (by name) that were added, dropped or changed, each with only its changed fields and its
    name. Anything equal on both sides is left out, so a diff of the two shows just the change."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key in dict.fromkeys([*old, *new]):
        if key == "columns":
            continue
        if old.get(key) != new.get(key):
            if key in old:
                before[key] = old[key]
            if key in new:
                after[key] = new[key]
    old_cols = {c.get("name"): c for c in old.get("columns") or [] if isinstance(c, dict)}
    new_cols = {c.get("name"): c for c in new.get("columns") or [] if isinstance(c, dict)}
    col_before: list[dict[str, Any]] = []
    col_after: list[dict[str, Any]] = []
    for name in dict.fromkeys([*old_cols, *new_cols]):
        a, b = old_cols.get(name), new_cols.get(name)
        if a == b:
            continue
        if a is None or b is None:
            (col_after if a is None else col_before).append(b if a is None else a)  # type: ignore[arg-type]
            continue
        keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
        col_before.append({"name": name, **{k: a[k] for k in keys if k in a}})
        col_after.append({"name": name, **{k: b[k] for k in keys if k in b}})
    if col_before:
        before["columns"] = col_before
    if col_after:
        after["columns"] = col_after
    return before, after


def contract_diff(change: Any) -> list[DiffLine]:
    """A contract change as a review diff: the dataset's current contract against the proposed one, both
    normalized (`normalized_contract`) and cut down to the fields that change (`changed_contract_fields`)."""
    import yaml

    from pipewarden.policies.contract import contracts_dir

    path = contracts_dir() / f"{change.dataset}.yaml"
    try:
        current = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        current = {}
    before, after = changed_contract_fields(normalized_contract(current), normalized_contract(change.contract))

    def dump(part: dict[str, Any]) -> str:
        return yaml.safe_dump(part, sort_keys=False) if part else ""

    return unified_diff(dump(before), dump(after), f"{path.name} (current)", f"{path.name} (proposed)")


def citations_by_relevance(citations: Sequence[Citation], dataset: str) -> list[Citation]:
    """Citations most relevant first: those about the proposal's dataset (or about no dataset in particular)
    before those about another dataset, then by retrieval score, highest first."""
    return sorted(citations, key=lambda c: (c.dataset not in (None, dataset), -c.score))


RERUN_FACTS: tuple[tuple[str, str], ...] = (
    ("rerun_status", "re-run"), ("load_id", "load"), ("rows_in", "rows in"), ("rows_quarantined", "rows quarantined"),
    ("halted_at", "halted at"), ("rerun", "re-run"),
)


def prefect_ui_url(environ: Any) -> str | None:
    """Prefect's UI address from `PREFECT_UI_URL`, else from `PREFECT_API_URL` (its `/api` suffix dropped)."""
    ui = str(environ.get("PREFECT_UI_URL") or "").rstrip("/")
    if ui:
        return ui
    api = str(environ.get("PREFECT_API_URL") or "").rstrip("/")
    return api.removesuffix("/api") if api else None


def rerun_view(audit: Sequence[AuditEntry], ui_url: str | None) -> dict[str, Any] | None:
    """The last verification of an applied proposal, from its audit trail: verified or rolled back, when, why,
    what the re-run saw (status, load, rows in, rows quarantined) and a link to its Prefect flow run when the
    verifier recorded one (`flow_run_id`) and Prefect's UI address is known. None before any verification."""
    last = next((e for e in reversed(audit) if e.action in ("verified", "rolled_back")), None)
    if last is None:
        return None
    detail = last.detail or {}
    facts = [(label, str(detail[key])) for key, label in RERUN_FACTS if detail.get(key) not in (None, "")]
    run_id = detail.get("flow_run_id")
    return {"outcome": last.action, "at": last.at, "reason": detail.get("reason") or "", "facts": facts,
            "flow_run_id": run_id,
            "flow_run_url": f"{ui_url}/runs/flow-run/{run_id}" if run_id and ui_url else None}


def proposed_line(change: Any) -> str:
    """What a change does, in one plain line for the decision bar: its own description (`change.text()`), and a
    change set's members after it."""
    from pipewarden.inbox import change_kinds  # it is built on this module's view helpers

    line = change.text().plain()
    if members := change_kinds.members(change):
        line += " \u2014 " + "; ".join(c.text().plain() for c in members)
    return line


def contract_edit_columns(change: Any) -> list[dict[str, Any]]:
    """The columns whose bounds a person can adjust in a contract change: the ones the change touches (else every
    column with a bound), each as {name, min, max, max_length} from the proposed contract."""
    import yaml

    from pipewarden.policies.contract import contracts_dir

    try:
        current = yaml.safe_load((contracts_dir() / f"{change.dataset}.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        current = {}
    _, after = changed_contract_fields(normalized_contract(current), normalized_contract(change.contract))
    touched = {c.get("name") for c in after.get("columns", [])}
    columns = [c for c in change.contract.get("columns") or [] if isinstance(c, dict)]
    chosen = [c for c in columns if c.get("name") in touched] or [
        c for c in columns if any(c.get(b) is not None for b in ("min", "max", "max_length"))]
    return [{"name": c.get("name"), "min": c.get("min"), "max": c.get("max"), "max_length": c.get("max_length")}
            for c in chosen]
