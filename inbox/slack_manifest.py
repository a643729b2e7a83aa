"""The Slack app manifest for pipewarden's Slack app: what `pipewarden slack manifest` prints.

Paste it at https://api.slack.com/apps -> Create New App -> From an app manifest. It asks for the least the code
needs: the bot scopes of the Web API methods `inbox.slack` calls (`METHOD_SCOPES`, checked against the code by a
test that reads `inbox/slack.py`, so a new call cannot ship without its scope), interactivity pointed at the web
inbox's `POST /slack/events`, and a bot user. No events subscription, no slash commands, no socket mode: Slack only
calls us when someone clicks Approve or Reject or submits the reject modal.

`chat:write` lets the bot post only in channels it was invited to (`/invite @pipewarden`); it does not ask for
`chat:write.public` (posting anywhere without being invited).

Public names: `METHOD_SCOPES`, `SlackManifest`, `slack_manifest(url, *, name, bot_name)`, `to_dict(manifest)`, `to_yaml(manifest)`,
`events_url(url)`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import UserError

METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "chat.postMessage": ("chat:write",),  # a proposal, a thread reply, a DM when an ephemeral message fails
    "chat.update": ("chat:write",),  # rewrite the proposal's message after each decision or status change
    "chat.postEphemeral": ("chat:write",),  # "You can't approve this", to the clicker only
    "views.open": (),  # the reject modal: needs the click's trigger_id, no scope
}
"""Every Slack Web API method `inbox.slack` calls, and the bot scopes it needs."""

EVENTS_PATH = "/slack/events"


class SlackManifest(BaseModel):
    """A Slack app manifest (the fields pipewarden sets; Slack's schema has more, all optional)."""

    model_config = ConfigDict(frozen=True)
    display_information: dict[str, str]
    features: dict[str, Any]
    oauth_config: dict[str, Any]
    settings: dict[str, Any]
    scopes: list[str] = Field(exclude=True, description="The bot scopes, also in oauth_config.scopes.bot.")


def events_url(url: str) -> str:
    """The interactivity request URL for a web inbox at `url` (its public address)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"--url {url!r} is not an http(s) address",
                        hint="give the web inbox's public address, e.g. --url https://pipewarden.example.com")
    if parts.query or parts.fragment:
        raise UserError(f"--url {url!r} has a query or a fragment", hint="give the inbox's base address only")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{EVENTS_PATH}"


def slack_manifest(url: str, *, name: str = "pipewarden", bot_name: str = "pipewarden") -> SlackManifest:
    """The manifest for an inbox served at `url`: scopes from `METHOD_SCOPES`, interactivity at /slack/events."""
    if not name.strip() or not bot_name.strip():
        raise UserError("the app's name and the bot's name must not be empty", hint="pass --name and --bot-name")
    scopes = sorted({s for needed in METHOD_SCOPES.values() for s in needed})
    return SlackManifest(
        display_information={
            "name": name[:35],
            "description": "Data-pipeline fixes to approve or reject, posted by pipewarden",
        },
        features={"bot_user": {"display_name": bot_name[:80], "always_online": True}},
        oauth_config={"scopes": {"bot": scopes}},
        settings={
            "interactivity": {"is_enabled": True, "request_url": events_url(url)},
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
        scopes=scopes,
    )


def to_dict(manifest: SlackManifest) -> dict[str, Any]:
    """The manifest as Slack reads it (JSON or YAML), with its format version."""
    return {"_metadata": {"major_version": 1, "minor_version": 1}, **manifest.model_dump()}


def to_yaml(manifest: SlackManifest) -> str:
    import yaml

    return yaml.safe_dump(to_dict(manifest), sort_keys=False, default_flow_style=False)
