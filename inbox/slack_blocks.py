"""Block Kit for Slack: the proposal message (posted, threaded, updated in place) and the reject-reason modal.

Pure functions from kernel models to Slack's JSON, built with `slack_sdk.models` so Slack's size limits are
checked here rather than by a failed API call. Everything that comes from data or an LLM (titles, diagnoses,
SQL, reasons) is escaped for mrkdwn (`&`, `<`, `>`), so it cannot form a link or a mention, and clipped to fit.

Public names: `ProposalMessage`, `proposal_message`, `reject_modal`, `read_reject_modal`, `escape`,
`change_summary`, `dry_run_summary`, `evidence_url`, and the ids Slack echoes back: `APPROVE_ACTION`,
`REJECT_ACTION`, `REJECT_CALLBACK`, `REASON_BLOCK`, `REASON_INPUT`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from pipewarden.errors import UserError
from pipewarden.inbox import change_kinds
from pipewarden.models import (
    AUTO_VIAS,
    AUTONOMY_ACTOR,
    OPEN_STATUSES,
    ChangeText,
    Decision,
    Proposal,
    ProposalStatus,
    Risk,
    Verdict,
)

APPROVE_ACTION = "approve"
REJECT_ACTION = "reject"
ACTIONS_BLOCK = "decide"
REJECT_CALLBACK = "reject_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"
MIN_REASON = 3

SECTION_MAX = 3000  # Slack's limits: a section's text, a field, a header, a modal's private metadata
FIELD_MAX = 2000
HEADER_MAX = 150
TEXT_MAX = 3000

RISK_ICON = {Risk.low: ":large_green_circle:", Risk.medium: ":large_yellow_circle:", Risk.high: ":red_circle:"}
STATUS_ICON = {
    ProposalStatus.pending: ":hourglass_flowing_sand:",
    ProposalStatus.needs_human: ":raising_hand:",
    ProposalStatus.approved: ":white_check_mark:",
    ProposalStatus.rejected: ":x:",
    ProposalStatus.applying: ":gear:",
    ProposalStatus.applied: ":package:",
    ProposalStatus.verified: ":heavy_check_mark:",
    ProposalStatus.rolled_back: ":leftwards_arrow_with_hook:",
    ProposalStatus.expired: ":hourglass:",
}
STATUS_WORDS = {
    ProposalStatus.pending: "waiting for a decision",
    ProposalStatus.needs_human: "needs a human: no valid change",
    ProposalStatus.approved: "approved; waiting for the worker to apply it",
    ProposalStatus.rejected: "rejected",
    ProposalStatus.applying: "applying",
    ProposalStatus.applied: "applied; re-running and verifying",
    ProposalStatus.verified: "applied and verified",
    ProposalStatus.rolled_back: "rolled back",
    ProposalStatus.expired: "expired undecided",
}


class ProposalMessage(BaseModel):
    """What `chat.postMessage` / `chat.update` send: the notification text and the blocks."""

    text: str = Field(description="Fallback text: notifications, screen readers, clients without blocks.")
    blocks: list[dict[str, Any]]


# --------------------------------------------------------------------------- text helpers
def escape(text: object) -> str:
    """Escape text for Slack mrkdwn: `&`, `<` and `>` (so data can never form a link, a mention or `<!channel>`)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _code(text: object) -> str:
    """Inline code for a name from data: escaped, and without backticks that would end the span."""
    return "`" + escape(str(text).replace("`", "'")) + "`"


def evidence_url(public_url: str, proposal_id: object) -> str:
    """The proposal's page in the web inbox: `{public_url}/proposals/{id}`."""
    return f"{public_url.rstrip('/')}/proposals/{proposal_id}"


def _when(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- the change and its evidence
def mrkdwn(text: ChangeText) -> str:
    """A change's own description (`change.text()`) as Slack mrkdwn: names from data as escaped code spans, the
    warning emphasized, the note after a colon, a block (a SQL text) as a clipped code block on its own lines."""
    body = "".join(_code(clip(s.text, 300)) if s.code else escape(s.text) for s in text.body)
    out = f"*{escape(text.title)}*{body}"
    if text.warning:
        out += f" — :warning: *{escape(text.warning)}*"
    if text.note:
        out += f": {escape(clip(text.note, 500))}"
    if text.block:
        out += "\n```" + escape(clip(text.block, 600)).replace("```", "'''") + "```"
    return out


def change_summary(change: Any) -> str:
    """The change in a few mrkdwn lines (a change set: its line, then one line per member, in the order they apply)."""
    head = mrkdwn(change.text())
    members = change_kinds.members(change)
    return clip("\n".join([head, *(f"• {mrkdwn(c.text())}" for c in members)]), SECTION_MAX - 20)


def _checks(label: str, result: Any) -> str:
    icon = ":white_check_mark: passed" if result.passed else ":x: failed"
    line = f"{label}: {icon} — {result.rows:,} rows"
    if result.failed_rows:
        line += f", {result.failed_rows:,} failed"
    problems = list(result.schema_errors) + list(result.failed_checks)
    if problems:
        shown = "; ".join(escape(clip(p, 200)) for p in problems[:3])
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        line += f"\n      {shown}{more}"
    return line


def dry_run_summary(dry_run: Any) -> str:
    """The dry run on the failing batch: checks before → after, the figures and notes that prove the change."""
    if dry_run is None:
        return "_No dry run: there is no change to try._"
    lines = [_checks("Before", dry_run.before), _checks("After", dry_run.after)]
    if dry_run.heals:
        lines.append("The change heals the failing batch.")
    for key, value in list(dry_run.metrics.items())[:6]:
        lines.append(f"{escape(key)}: {value:,.4g}")
    lines += [f"• {escape(clip(n, 300))}" for n in dry_run.notes[:3]]
    return clip("\n".join(lines), SECTION_MAX - 20)


def _decision_line(d: Decision) -> str:
    verb = ":white_check_mark: Approved" if d.verdict == Verdict.approve else ":x: Rejected"
    if d.verdict == Verdict.approve and d.via in AUTO_VIAS:
        verb = ":robot_face: Auto-approved" + (" (earned autonomy)" if d.actor == AUTONOMY_ACTOR else "")
    reason = f": “{escape(clip(d.reason, 500))}”" if d.reason else ""
    return f"{verb} by *{escape(d.actor)}* via {escape(d.via)}, {_when(d.decided_at)}{reason}"


# --------------------------------------------------------------------------- the message
def proposal_message(
    proposal: Proposal,
    *,
    decisions: list[Decision],
    needs: str,
    evidence: str,
    fault_key: str = "",
    repeat: bool = False,
) -> ProposalMessage:
    """The message for a proposal as it stands now: posted when it is created, and re-sent by `chat.update`
    after every decision and status change. Approve/Reject buttons appear only while the proposal is open
    (Reject alone when it carries no valid change); once decided, the message says who decided, the outcome
    and the status instead.

    `needs` is who must still approve ("needs 1 more approval from: steward"); `repeat` marks a reply in the
    thread of an earlier proposal for the same fault.
    """
    p = proposal
    pid = str(p.id)
    status = p.status
    head = f"{'Again: ' if repeat else ''}{p.title}"
    fields = [
        MarkdownTextObject(text=f"*Agent*\n{escape(p.agent)}"),
        MarkdownTextObject(text=f"*Dataset*\n{_code(p.dataset)}"),
        MarkdownTextObject(text=f"*Risk*\n{RISK_ICON.get(p.risk, '')} {escape(p.risk.value)}"),
        MarkdownTextObject(text=f"*Status*\n{STATUS_ICON.get(status, '')} {STATUS_WORDS.get(status, status.value)}"),
        MarkdownTextObject(text=clip(f"*Who must approve*\n{escape(needs) or 'nobody more'}", FIELD_MAX)),
        MarkdownTextObject(text=f"*Proposal*\n<{evidence}|{p.short_id}>"),
    ]
    blocks: list[Block] = [
        HeaderBlock(block_id="title", text=clip(head, HEADER_MAX)),
        SectionBlock(block_id="facts", fields=fields),
        SectionBlock(block_id="diagnosis", text=MarkdownTextObject(
            text=clip(f"*Diagnosis*\n{escape(p.diagnosis)}", SECTION_MAX))),
        SectionBlock(block_id="change", text=MarkdownTextObject(text=f"*Change*\n{change_summary(p.change)}")),
        SectionBlock(block_id="dry_run", text=MarkdownTextObject(
            text=f"*Dry run on the failing batch*\n{dry_run_summary(p.dry_run)}")),
    ]
    if decisions:
        lines = "\n".join(_decision_line(d) for d in decisions[-5:])
        blocks.append(SectionBlock(block_id="decisions", text=MarkdownTextObject(text=clip(lines, SECTION_MAX))))
    if status not in OPEN_STATUSES:
        outcome = f"{STATUS_ICON.get(status, '')} *{STATUS_WORDS.get(status, status.value).capitalize()}*"
        if p.status_reason:
            outcome += f": {escape(clip(p.status_reason, 1000))}"
        blocks.append(SectionBlock(block_id="outcome", text=MarkdownTextObject(text=clip(outcome, SECTION_MAX))))
    else:
        buttons: list[ButtonElement] = []
        if status == ProposalStatus.pending:
            confirm = None
            if p.risk == Risk.high:
                confirm = ConfirmObject(title="Approve a high-risk change?", confirm="Approve", deny="Not yet",
                                        text=f"{escape(clip(p.title, 200))}: this is a high-risk change.")
            buttons.append(ButtonElement(text="Approve", action_id=APPROVE_ACTION, value=pid, style="primary",
                                         confirm=confirm))
        buttons.append(ButtonElement(text="Reject", action_id=REJECT_ACTION, value=pid, style="danger"))
        blocks.append(ActionsBlock(block_id=ACTIONS_BLOCK, elements=buttons))
    context = f"<{evidence}|Evidence, diff and audit trail in the inbox>"
    if fault_key:
        context += f" · fault {_code(fault_key)}"
    blocks.append(ContextBlock(block_id="evidence", elements=[MarkdownTextObject(text=clip(context, FIELD_MAX))]))
    word = STATUS_WORDS.get(status, status.value)
    text = f"{'Again: ' if repeat else ''}Proposal {p.short_id} ({word}): {p.title} — {p.dataset}, {p.risk.value} risk"
    return ProposalMessage(text=clip(escape(text), TEXT_MAX), blocks=[b.to_dict() for b in blocks])


# --------------------------------------------------------------------------- the reject modal
def reject_modal(proposal: Proposal, *, channel: str) -> dict[str, Any]:
    """The modal a Reject click opens: it asks for the reason. `private_metadata` carries the proposal id and
    the channel (for a refusal message after the submission)."""
    meta = json.dumps({"proposal_id": str(proposal.id), "channel": channel})
    view = View(
        type="modal", callback_id=REJECT_CALLBACK, title="Reject proposal", submit="Reject", close="Cancel",
        private_metadata=meta,
        blocks=[
            SectionBlock(text=MarkdownTextObject(
                text=clip(f"*{escape(proposal.title)}*\n{_code(proposal.dataset)} · proposal {proposal.short_id}",
                          SECTION_MAX))),
            InputBlock(
                block_id=REASON_BLOCK, label="Why reject it?",
                hint="The next agent reads this reason, so say what is wrong or what to do instead.",
                element=PlainTextInputElement(action_id=REASON_INPUT, multiline=True, min_length=MIN_REASON,
                                              max_length=2000, placeholder="e.g. departureDelay is in minutes; "
                                              "map it with a cast, not a rename"),
            ),
        ],
    )
    return view.to_dict()


class RejectSubmission(BaseModel):
    """What a submitted reject modal says."""

    proposal_id: str
    channel: str = ""
    reason: str


def read_reject_modal(view: dict[str, Any]) -> RejectSubmission:
    """Read the proposal id, channel and reason from a submitted reject modal; UserError when malformed."""
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
        value = view["state"]["values"][REASON_BLOCK][REASON_INPUT].get("value") or ""
        return RejectSubmission(proposal_id=str(meta["proposal_id"]), channel=str(meta.get("channel", "")),
                                reason=str(value).strip())
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"malformed reject modal submission: missing {exc}",
                        hint="reopen the proposal in Slack and click Reject again") from exc
