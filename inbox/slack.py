"""Slack: proposals posted to their dataset owner's channel, decided with buttons, and kept up to date in place.

Two halves:

- **We call Slack** (`notify`, the kernel's Notifier port in the default runtime, `pipewarden.wiring`). On
  `proposal_created` the proposal is posted with Block Kit (`inbox.slack_blocks`) to the channel of its dataset's
  owner (`channel_for`); a later proposal for the same fault (`policies.approval.fault_key`) goes as a reply in
  the first one's thread. On `proposal_decided` / `proposal_updated` the stored message is rewritten with
  `chat.update`: who decided, the outcome, the status, and no buttons once it is closed. On
  `occurrence_attached` (the same fault seen again while the proposal is open) a reply in its thread says how many
  batches and which loads it now covers. Without a bot token
  `notify` does nothing; a Slack API failure is logged and audited (`slack_failed`) and never raised, so it never
  breaks a decision or an agent's graph.
- **Slack calls us** (`mount_slack(app)`: `POST /slack/events` on the web inbox's FastAPI app, served by a
  slack-bolt `App`). Bolt verifies the signing secret and the timestamp (5 minutes); a request whose signature
  was already seen is refused as a replay (401; the state DB remembers signatures for twice the window, so
  every server process refuses it). Every interaction is acknowledged at once and the work runs after the acknowledgement in
  bolt's lazy listeners: an Approve click maps the Slack user to an approver (`Approvers.by_slack`) and decides
  through `inbox.service.decide`, which stores the decision with its durable request for the supervisor's worker
  to apply it (nothing is applied in the server's process) and notifies; a click from someone
  without the role gets an ephemeral refusal and changes nothing. A Reject click opens a modal for the reason;
  its submission rejects.

Public names: `notify`, `post_proposal`, `post_occurrence`, `update_message`, `channel_for`, `SlackChannels`, `mount_slack`,
`build_bolt_app`, `slack_configured`, `web_client`, `REPLAY_WINDOW_S`, `MAX_BODY_BYTES`.
Light to import: slack-bolt and FastAPI load inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import ConfigError, InvalidTransition, PipewardenError, UserError
from pipewarden.inbox import slack_blocks as blocks
from pipewarden.models import OPEN_STATUSES, Proposal, Verdict
from pipewarden.policies.approval import check_can_decide, fault_key, requirement
from pipewarden.policies.approvers import Approver, Approvers
from pipewarden.policies.defaults import policy_file, read_policy
from pipewarden.settings import Settings, get_settings
from pipewarden.store import Occurrence, StateStore

if TYPE_CHECKING:
    from fastapi import FastAPI
    from slack_bolt import App
    from slack_sdk import WebClient

log = logging.getLogger(__name__)

NotifyKind = Literal["proposal_created", "proposal_decided", "proposal_updated", "occurrence_attached"]
SLACK_ACTOR = "slack"
SLACK_FAILED = "slack_failed"
REPLAY_WINDOW_S = 5 * 60  # Slack's: a request older than this is refused by its timestamp
MAX_BODY_BYTES = 1 << 20  # Slack's interaction payloads are a few KB; refuse anything past 1 MiB
SLACK_TIMEOUT_S = 10
# Threads running the work after the acks (deciding, chat.update). They share the interpreter with the acks, which
# Slack waits for: bolt's default of 5 let a burst of clicks' work crowd the acks out (issue 10); the decisions
# themselves are one writer at a time in the state DB anyway. Work beyond them waits in the executor's queue.
AFTER_ACK_THREADS = 2


# --------------------------------------------------------------------------- configuration
def slack_configured(settings: Settings | None = None) -> bool:
    """Whether we can post to Slack (a bot token is set)."""
    return (settings or get_settings()).slack_bot_token is not None


def web_client(settings: Settings | None = None) -> WebClient:
    """The real `slack_sdk.WebClient`, at `PIPEWARDEN_SLACK_API_URL` (Slack's, or a local fake in tests)."""
    from slack_sdk import WebClient

    settings = settings or get_settings()
    if settings.slack_bot_token is None:
        raise ConfigError("Slack is not configured: no bot token",
                          hint="set PIPEWARDEN_SLACK_BOT_TOKEN (xoxb-...) to post proposals to Slack")
    base = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base, timeout=SLACK_TIMEOUT_S)


class SlackChannels(BaseModel):
    """`policies/slack.yaml`: where proposals go when the dataset's owner names no channel."""

    model_config = ConfigDict(extra="forbid")
    default_channel: str = Field(default="#pipewarden", min_length=1,
                                 description="For datasets whose owners name no channel.")
    channels: dict[str, str] = Field(default_factory=dict,
                                     description="dataset -> channel; overrides the owner's `slack_channel`.")

    @classmethod
    def load(cls, path: Path | None = None) -> SlackChannels:
        """Read `policies_dir/slack.yaml`; defaults when the file is absent, ConfigError naming it when invalid."""
        path = path or policy_file("slack.yaml")
        if not path.is_file():
            return cls()
        return read_policy(path, cls, hint="allowed fields: default_channel (a channel), channels (dataset: channel)")


def channel_for(dataset: str, approvers: Approvers | None = None, channels: SlackChannels | None = None) -> str:
    """The channel for a dataset's proposals: `policies/slack.yaml` `channels[dataset]`, else the channel of the
    dataset's first owner that names one (`slack_channel` in approvers.yaml), else the default channel."""
    channels = channels or SlackChannels.load()
    if dataset in channels.channels:
        return channels.channels[dataset]
    approvers = approvers or Approvers.load()
    for person in approvers.all():
        if "owner" in person.roles_for(dataset) and person.slack_channel:
            return person.slack_channel
    return channels.default_channel


# --------------------------------------------------------------------------- we call Slack
def _slack_errors() -> tuple[type[BaseException], ...]:
    from slack_sdk.errors import SlackClientError

    return (SlackClientError, OSError)  # an API answer with ok=false; a refused or timed-out connection


def _audit_failure(store: StateStore, proposal_id: str | None, what: str, exc: BaseException) -> None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    log.warning("Slack %s failed for proposal %s: %s", what, (proposal_id or "-")[:8], error)
    try:
        store.record(SLACK_FAILED, SLACK_ACTOR, {"call": what, "error": error}, proposal_id=proposal_id)
    except Exception:  # the state DB is down too: the log line above is what is left
        log.exception("could not audit a Slack failure for proposal %s", (proposal_id or "-")[:8])


def _message(store: StateStore, p: Proposal, *, key: str, repeat: bool,
             approvers: Approvers | None = None) -> blocks.ProposalMessage:
    decisions = store.decisions_for(p.id)
    if p.status in OPEN_STATUSES:
        need = requirement(p, decisions, approvers)
        needs = need.missing or "approved"
        if need.eligible_people and need.missing:
            needs += f" ({', '.join(need.eligible_people[:5])})"
    else:
        needs = "decided"
    url = blocks.evidence_url(get_settings().public_url, p.id)
    return blocks.proposal_message(p, decisions=decisions, needs=needs, evidence=url, fault_key=key, repeat=repeat)


def post_proposal(proposal_id: str, *, store: StateStore | None = None, client: WebClient | None = None) -> None:
    """Post a new proposal to its owner's channel, or into the thread of the first proposal for the same fault.

    Idempotent: a proposal already posted is not posted again. Raises the Slack client's errors (see `notify`).
    """
    store = store or StateStore()
    p = store.get_proposal(proposal_id)
    pid = str(p.id)
    if store.slack_message_for(pid) is not None:
        return
    key = fault_key(p)
    approvers = Approvers.current()
    thread = store.slack_thread_for(key)
    msg = _message(store, p, key=key, repeat=thread is not None, approvers=approvers)
    client = client or web_client()
    if thread is not None:
        channel, thread_ts = thread
        resp = client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=msg.text, blocks=msg.blocks,
                                       unfurl_links=False)
    else:
        thread_ts = None
        resp = client.chat_postMessage(channel=channel_for(p.dataset, approvers), text=msg.text, blocks=msg.blocks,
                                       unfurl_links=False)
    store.save_slack_message(pid, str(resp["channel"]), str(resp["ts"]), thread_ts, key)


def update_message(proposal_id: str, *, store: StateStore | None = None, client: WebClient | None = None) -> bool:
    """Rewrite a proposal's Slack message in place (`chat.update`) as it stands now. False if it was never posted."""
    store = store or StateStore()
    p = store.get_proposal(proposal_id)
    posted = store.slack_message_for(str(p.id))
    if posted is None:
        return False
    msg = _message(store, p, key=posted.fault_key, repeat=bool(posted.thread_ts))
    (client or web_client()).chat_update(channel=posted.channel, ts=posted.ts, text=msg.text, blocks=msg.blocks)
    return True


def occurrence_text(occurrences: list[Occurrence]) -> str:
    """The thread reply for a fault seen again: how many batches, which loads, and what approval does."""
    loads = ", ".join(o.load_id or "(no load id)" for o in occurrences[:10])
    more = f" and {len(occurrences) - 10} more" if len(occurrences) > 10 else ""
    return (f"Seen again: this fault ({occurrences[0].label}) is now in {len(occurrences)} batches: loads "
            f"{loads}{more}. Approving re-runs every one of them and verifies them all.")


def post_occurrence(proposal_id: str, *, store: StateStore | None = None, client: WebClient | None = None) -> bool:
    """Reply in the proposal's Slack thread that its fault was seen again (count and loads). False when the
    proposal was not posted yet (its agent still drafts it) or covers one load only. Raises the client's errors."""
    store = store or StateStore()
    posted = store.slack_message_for(str(proposal_id))
    occurrences = store.occurrences(proposal_id)
    if posted is None or len(occurrences) < 2:
        return False
    (client or web_client()).chat_postMessage(channel=posted.channel, thread_ts=posted.thread_ts or posted.ts,
                                              text=occurrence_text(occurrences), unfurl_links=False)
    return True


def notify(kind: NotifyKind, proposal_id: str) -> None:
    """The Notifier port. `proposal_created` posts; `proposal_decided` and `proposal_updated` update in place.

    A no-op without a bot token. A Slack API failure (an error answer, a refused or timed-out connection) is
    logged and audited as `slack_failed` and not raised: Slack never breaks a decision or a graph.
    """
    if not slack_configured():
        return
    store = StateStore()
    try:
        if kind == "proposal_created":
            post_proposal(proposal_id, store=store)
            post_occurrence(proposal_id, store=store)  # repeats that attached while its agent drafted it
        elif kind == "occurrence_attached":
            post_occurrence(proposal_id, store=store)
        else:
            update_message(proposal_id, store=store)
    except _slack_errors() as exc:
        _audit_failure(store, str(proposal_id), "chat.update" if kind in ("proposal_decided", "proposal_updated")
                       else "chat.postMessage", exc)


# --------------------------------------------------------------------------- Slack calls us
class Click(BaseModel):
    """Who clicked which button on which proposal, where."""

    proposal_id: str
    user_id: str
    channel: str = ""
    trigger_id: str = ""


def _click(body: dict[str, Any]) -> Click:
    try:
        action = body["actions"][0]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
        return Click(proposal_id=str(action["value"]), user_id=str(body["user"]["id"]), channel=channel,
                     trigger_id=str(body.get("trigger_id") or ""))
    except (KeyError, IndexError, TypeError) as exc:
        raise UserError(f"malformed Slack interaction: missing {exc}", hint="click the button in Slack again") from exc


def _tell(client: WebClient, user_id: str, channel: str, text: str, proposal_id: str | None) -> None:
    """An ephemeral message to one person (in the channel they clicked in, else a direct message)."""
    try:
        if channel:
            client.chat_postEphemeral(channel=channel, user=user_id, text=text)
        else:
            client.chat_postMessage(channel=user_id, text=text)
    except _slack_errors() as exc:
        _audit_failure(StateStore(), proposal_id, "chat.postEphemeral", exc)


def _refusal(verb: str, exc: PipewardenError) -> str:
    text = f":no_entry: You can't {verb} this: {blocks.escape(exc.message)}"
    if exc.hint:
        text += f" ({blocks.escape(exc.hint)})"
    return blocks.clip(text, blocks.TEXT_MAX)


def _approver(client: WebClient, click: Click, verb: str) -> tuple[Approver, Approvers] | None:
    """The approver this Slack user is, with the loaded approvers; None after telling them why not."""
    try:
        approvers = Approvers.current()
    except ConfigError as exc:  # a broken approvers file: nobody can decide until it is fixed
        _tell(client, click.user_id, click.channel, _refusal(verb, exc), click.proposal_id)
        return None
    person = approvers.by_slack(click.user_id)
    if person is None:
        where = approvers.path or "approvers.yaml"
        user = blocks.escape(click.user_id)
        _tell(client, click.user_id, click.channel,
              f":no_entry: You can't {verb} this: your Slack account ({user}) is not an approver in "
              f"{where} (ask an admin to add `slack_user_id: {user}` to your entry)", click.proposal_id)
        return None
    return person, approvers


def _refresh_quietly(proposal_id: str) -> None:
    """After a refusal because the proposal moved on: make its message show where it is now."""
    try:
        notify("proposal_updated", proposal_id)
    except PipewardenError as exc:
        log.warning("could not refresh the Slack message of proposal %s: %s", proposal_id[:8], exc)


def _decide(client: WebClient, click: Click, person: Approver, approvers: Approvers, verdict: Verdict,
            reason: str = "") -> None:
    from pipewarden.inbox import service

    verb = verdict.value
    try:
        # Stored with its durable resume request; the supervisor's worker applies it (never this process).
        service.decide(click.proposal_id, verdict, person.name, reason, via="slack", approvers=approvers,
                       resume=False)
    except InvalidTransition as exc:  # decided elsewhere first, or expired: say so, and show it in the message
        _tell(client, click.user_id, click.channel, _refusal(verb, exc), click.proposal_id)
        _refresh_quietly(click.proposal_id)
    except PipewardenError as exc:  # Forbidden (no role, already approved), unknown proposal...
        _tell(client, click.user_id, click.channel, _refusal(verb, exc), click.proposal_id)


def _guarded(what: str, fn: Any, *args: Any) -> None:
    """Run a listener's work after the ack. An unexpected failure (a bug, the state DB down) is logged with its
    traceback, where bolt would log only its message; whatever was stored stays, and the inbox shows it."""
    try:
        fn(*args)
    except Exception:  # a background thread's top level: nothing above us would see it
        log.exception("Slack %s failed", what)


def on_approve(body: dict[str, Any], client: WebClient) -> None:
    """Lazy listener of an Approve click: map the user, then decide (`service.decide`; the worker applies it)."""

    def work() -> None:
        click = _click(body)
        found = _approver(client, click, "approve")
        if found is not None:
            _decide(client, click, *found, Verdict.approve)

    _guarded("approve", work)


def on_reject_click(body: dict[str, Any], client: WebClient) -> None:
    """Lazy listener of a Reject click: check the person may reject, then open the modal asking why."""

    def work() -> None:
        click = _click(body)
        found = _approver(client, click, "reject")
        if found is None:
            return
        person, approvers = found
        store = StateStore()
        try:
            p = store.get_proposal(click.proposal_id)
            if p.status not in OPEN_STATUSES:
                raise InvalidTransition(f"proposal {p.short_id} is already {p.status.value}; nothing to decide")
            check_can_decide(person.name, p, Verdict.reject, approvers, decisions=store.decisions_for(p.id))
        except InvalidTransition as exc:
            _tell(client, click.user_id, click.channel, _refusal("reject", exc), click.proposal_id)
            _refresh_quietly(click.proposal_id)
            return
        except PipewardenError as exc:
            _tell(client, click.user_id, click.channel, _refusal("reject", exc), click.proposal_id)
            return
        try:
            client.views_open(trigger_id=click.trigger_id, view=blocks.reject_modal(p, channel=click.channel))
        except _slack_errors() as exc:
            _audit_failure(store, str(p.id), "views.open", exc)

    _guarded("reject click", work)


def ack_reject_submission(ack: Any, body: dict[str, Any]) -> None:
    """Acknowledge a submitted reject modal; a missing reason keeps the modal open with the error under the field."""
    try:
        sub = blocks.read_reject_modal(body.get("view") or {})
    except UserError as exc:
        ack(response_action="errors", errors={blocks.REASON_BLOCK: exc.message})
        return
    if len(sub.reason) < blocks.MIN_REASON:
        ack(response_action="errors",
            errors={blocks.REASON_BLOCK: "Say why (at least 3 characters): the next agent reads this reason."})
        return
    ack()


def on_reject_submission(body: dict[str, Any], client: WebClient) -> None:
    """Lazy listener of a submitted reject modal: reject with the reason (refusals come back ephemerally)."""

    def work() -> None:
        sub = blocks.read_reject_modal(body.get("view") or {})
        if len(sub.reason) < blocks.MIN_REASON:
            return  # refused by the ack: the modal stayed open
        click = Click(proposal_id=sub.proposal_id, user_id=str(body["user"]["id"]), channel=sub.channel)
        found = _approver(client, click, "reject")
        if found is not None:
            _decide(client, click, *found, Verdict.reject, sub.reason)

    _guarded("reject submission", work)


def _ack(ack: Any) -> None:
    ack()


def _refuse_replays(req: Any, resp: Any, next_: Any) -> Any:
    """Bolt middleware, run right after bolt verified the signature and timestamp: refuse a request whose
    signature was already seen within the replay window (the state DB remembers it, for every server process)."""
    from slack_bolt import BoltResponse

    sig = (req.headers.get("x-slack-signature") or [""])[0]
    ts = (req.headers.get("x-slack-request-timestamp") or ["0"])[0]
    # A timestamp may be up to the window ahead of or behind our clock, so remember a signature for twice that.
    if sig and StateStore().seen_slack_request(sig, max_age_s=2 * REPLAY_WINDOW_S):
        log.warning("refused a replayed Slack request (timestamp %s)", ts)
        return BoltResponse(status=401, body=json.dumps({
            "error": "replayed request: this signature was already used",
            "hint": "Slack signs every request anew; a request is handled once",
        }), headers={"content-type": "application/json"})
    return next_()


def build_bolt_app(settings: Settings | None = None) -> App:
    """The slack-bolt App behind `POST /slack/events`: signature + timestamp checks (bolt), replay refusal, and
    listeners that ack at once (`process_before_response`: the ack is the HTTP response) and work lazily."""
    from slack_bolt import App
    from slack_bolt.authorization import AuthorizeResult

    settings = settings or get_settings()
    if settings.slack_signing_secret is None or settings.slack_bot_token is None:
        raise ConfigError("Slack is not configured: it needs a signing secret and a bot token",
                          hint="set PIPEWARDEN_SLACK_SIGNING_SECRET and PIPEWARDEN_SLACK_BOT_TOKEN")
    token = settings.slack_bot_token.get_secret_value()

    def authorize(enterprise_id: str | None, team_id: str | None, user_id: str | None) -> AuthorizeResult:
        # One workspace, one bot token: no `auth.test` round trip to Slack before the ack (bolt's default for a
        # single team makes one on the first request, which could eat Slack's 3-second budget).
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id, bot_token=token)

    client = web_client(settings)
    client.token = None  # the token comes from `authorize`, per request
    app = App(
        name="pipewarden", client=client, authorize=authorize, logger=logging.getLogger("pipewarden.inbox.slack.bolt"),
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        process_before_response=True, before_authorize=_refuse_replays,
        listener_executor=ThreadPoolExecutor(AFTER_ACK_THREADS, thread_name_prefix="pipewarden-slack"),
    )
    app.action(blocks.APPROVE_ACTION)(ack=_ack, lazy=[on_approve])
    app.action(blocks.REJECT_ACTION)(ack=_ack, lazy=[on_reject_click])
    app.view(blocks.REJECT_CALLBACK)(ack=ack_reject_submission, lazy=[on_reject_submission])
    return app


def mount_slack(app: FastAPI, settings: Settings | None = None) -> None:
    """Add `POST /slack/events` to the web inbox. Without a signing secret and bot token it answers 503 saying
    what to set. The bolt dispatch (verification, replay check, ack) runs in a worker thread, off the event loop."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response
    from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
    from starlette.concurrency import run_in_threadpool

    settings = settings or get_settings()
    bolt = (build_bolt_app(settings)
            if settings.slack_signing_secret is not None and settings.slack_bot_token is not None else None)

    async def slack_events(request: Request) -> Response:
        if bolt is None:
            return JSONResponse({"error": "Slack is not configured on this server",
                                 "hint": "set PIPEWARDEN_SLACK_SIGNING_SECRET and PIPEWARDEN_SLACK_BOT_TOKEN"},
                                status_code=503)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _too_large()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # read at most the limit, whatever the headers claim
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return _too_large()
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            bolt_req = to_bolt_request(request, body)
        except (ValueError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"malformed Slack request body: {exc}",
                                 "hint": "Slack posts form-encoded `payload=<json>` or a JSON event"},
                                status_code=400)
        return to_starlette_response(await run_in_threadpool(bolt.dispatch, bolt_req))

    def _too_large() -> Response:
        return JSONResponse({"error": f"request body over {MAX_BODY_BYTES} bytes",
                             "hint": "Slack's interaction payloads are a few KB; this is not one"}, status_code=413)

    # A plain Starlette route: the handler takes the raw request (bolt reads and verifies the body itself).
    app.add_route("/slack/events", slack_events, methods=["POST"], include_in_schema=False)
