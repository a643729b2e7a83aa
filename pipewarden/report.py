"""Events reported from outside a Prefect flow: `POST /api/events` and `pipewarden emit`.

A reported event is validated against the typed event union (`pipewarden.events`) by the model its `kind` names,
and refused field by field (`InvalidField`: the field's path and the problem) when it does not fit: an unknown
`kind`, a field the kind does not have, a missing or mistyped one, a blank `dataset`, or an `id` (the outbox gives
ids; retries are made safe by an idempotency key instead). The event is then written to the outbox by
`StateStore.report_event`, with who reported it in the audit log, and the supervisor claims it like any other.

Public names: `EVENT_MODELS`, `EVENT_KINDS`, `reported_event`, `fields_hint`, `check_idempotency_key`,
`parse_field`, `read_json_body`, `cli_body`, `cli_event`, `MAX_IDEMPOTENCY_KEY`.
"""

from __future__ import annotations

import json
import sys
from difflib import get_close_matches
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from pipewarden.errors import InputFileError, InvalidField
from pipewarden.events import Event

EVENT_MODELS: dict[str, type[BaseModel]] = {
    m.model_fields["kind"].default: m for m in get_args(get_args(Event)[0])
}
EVENT_KINDS: tuple[str, ...] = tuple(EVENT_MODELS)
MAX_IDEMPOTENCY_KEY = 255  # the idempotency_keys.key column
# The outbox's columns these fields are copied into.
MAX_LENGTHS: dict[str, int] = {"dataset": 128, "load_id": 64}
_NOT_REPORTED = ("id", "kind")  # `kind` is given separately; `id` is the outbox's


def fields_hint(kind: str) -> str:
    """The fields a `kind` event takes, required ones first: the hint of every refusal."""
    fields = {name: f for name, f in EVENT_MODELS[kind].model_fields.items() if name not in _NOT_REPORTED}
    required = [n for n, f in fields.items() if f.is_required()]
    optional = [n for n, f in fields.items() if not f.is_required()]
    return f"a {kind} event needs {', '.join(required)}" + (f"; optional: {', '.join(optional)}" if optional else "")


def _kind_hint(kind: object) -> str:
    close = get_close_matches(str(kind), EVENT_KINDS, n=1) if isinstance(kind, str) else []
    again = f"did you mean {close[0]!r}? " if close else ""
    return f"{again}kind is one of: {', '.join(EVENT_KINDS)}"


def reported_event(data: Any) -> Event:
    """Validate a reported event (a JSON object) against the event union; InvalidField names the first bad field.

    The event gets a new id (and `occurred` defaults to now). Unknown fields are refused rather than dropped, so a
    misspelt field is not lost silently.
    """
    if not isinstance(data, dict):
        raise InvalidField((), f"expected a JSON object (an event), got {type(data).__name__}",
                           hint='send {"kind": ..., "dataset": ..., ...}; ' + _kind_hint(None))
    kind = data.get("kind")
    if kind is None:
        raise InvalidField(("kind",), "Field required", hint=_kind_hint(None))
    if not isinstance(kind, str) or kind not in EVENT_MODELS:
        raise InvalidField(("kind",), f"unknown event kind {kind!r}", hint=_kind_hint(kind))
    model = EVENT_MODELS[kind]
    if "id" in data:
        raise InvalidField(("id",), "an event's id is given by the outbox, not by the reporter",
                           hint="drop `id`; to make a retry safe, send an idempotency key")
    unknown = [k for k in data if k not in model.model_fields]
    if unknown:
        raise InvalidField((unknown[0],), f"a {kind} event has no such field", hint=fields_hint(kind),
                           errors=[{"loc": [k], "problem": f"a {kind} event has no such field"} for k in unknown])
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        first = exc.errors()[0]
        raise InvalidField(tuple(first["loc"]), first["msg"], hint=fields_hint(kind), errors=errors) from None
    for name, limit in MAX_LENGTHS.items():
        value = getattr(event, name)
        if name == "dataset" and not value.strip():
            raise InvalidField((name,), "must not be empty", hint="name the dataset the event concerns")
        if value is not None and len(value) > limit:
            raise InvalidField((name,), f"is {len(value)} characters long; at most {limit}",
                               hint=f"shorten {name}")
    return event  # type: ignore[return-value]


def check_idempotency_key(key: str | None) -> str | None:
    """None, or a key of 1..255 printable characters (surrounding spaces dropped); InvalidField otherwise."""
    if key is None:
        return None
    key = key.strip()
    hint = "use a short unique text per report, e.g. the job's run id; send the same key only to retry"
    if not key:
        raise InvalidField(("idempotency_key",), "must not be empty", hint=hint)
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidField(("idempotency_key",), f"is {len(key)} characters long; at most {MAX_IDEMPOTENCY_KEY}",
                           hint=hint)
    if not key.isprintable():
        raise InvalidField(("idempotency_key",), "contains control characters", hint=hint)
    return key


# --------------------------------------------------------------------------- the command line
def parse_field(text: str) -> tuple[str, Any]:
    """`key=value` from `--field`: the value is text (pydantic reads numbers and true/false from it), or JSON when
    it starts with `[` or `{` (lists and objects such as `failed` or `detail`)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidField(("field",), f"{text!r} is not key=value",
                           hint="pass --field NAME=VALUE, e.g. --field stage=dbt_run")
    if value.lstrip()[:1] in ("[", "{"):
        try:
            return key, json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidField((key,), f"looks like JSON but is not valid JSON: {exc.msg} (column {exc.colno})",
                               hint=f"quote the whole value for your shell: --field '{key}=[...]'") from None
    return key, value


def read_json_body(source: str) -> dict[str, Any]:
    """The JSON object in file `source`, or on stdin for `-`; InputFileError (missing, not JSON) otherwise."""
    where = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(where, "no such file", hint="pass an existing JSON file, or - to read stdin") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(where, f"cannot be read: {exc}", hint="pass a UTF-8 JSON file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(where, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                             hint="fix the JSON (one object with the event's fields)") from None
    if not isinstance(data, dict):
        raise InputFileError(where, f"holds a JSON {type(data).__name__}, not an object",
                             hint='write one object: {"stage": ..., "error": ...}')
    return data


def cli_body(kind: str, dataset: str | None, fields: list[str], body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event `pipewarden emit` reports: the JSON body's fields, then each `--field`, with KIND and --dataset.

    A field given twice, or a body whose `kind`/`dataset` disagree with the command line, is refused by name.
    """
    data = dict(body or {})
    for name, given in (("kind", kind), ("dataset", dataset)):
        if given is None:
            continue
        if name in data and data[name] != given:
            raise InvalidField((name,), f"the JSON body says {data[name]!r} but the command line says {given!r}",
                               hint=f"drop {name} from the body or make the two agree")
        data[name] = given
    seen: set[str] = set()
    for text in fields:
        key, value = parse_field(text)
        if key in ("kind", "dataset"):
            raise InvalidField((key,), "is given by the command line, not by --field",
                               hint="pass KIND as the argument and --dataset NAME")
        if key in seen or (body and key in body):
            raise InvalidField((key,), "is given twice", hint=f"give {key} once (--field or the JSON body)")
        seen.add(key)
        data[key] = value
    if "dataset" not in data:
        raise InvalidField(("dataset",), "Field required", hint="pass --dataset NAME")
    return data


def cli_event(kind: str, dataset: str | None, fields: list[str], body: dict[str, Any] | None = None) -> Event:
    """The validated event of `pipewarden emit`; a refusal's hint says which option to pass."""
    try:
        return reported_event(cli_body(kind, dataset, fields, body))
    except InvalidField as exc:
        if len(exc.loc) == 1 and exc.loc[0] not in ("kind", "dataset") and exc.problem == "Field required":
            raise InvalidField(exc.loc, exc.problem, errors=exc.errors,
                               hint=f"pass --field {exc.loc[0]}=VALUE; {exc.hint}") from None
        raise
