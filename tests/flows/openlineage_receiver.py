"""A local OpenLineage HTTP receiver for the tests, and a strict check of each event it receives.

The OpenLineage JSON Schema files are not shipped by the `openlineage-python` package (it ships classes generated
from them) and the tests download nothing, so each event is checked against those generated classes: every
object is rebuilt field by field (a missing required field, an unknown field, a wrong type, a bad enum value, a
run id that is not a UUID or an event time that is not an ISO date-time fails), every facet must be one this
project emits and carry that facet's own `_schemaURL`, and the rebuilt event must serialize back to exactly the
JSON received.
"""

from __future__ import annotations

import json
import threading
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attr
from openlineage.client.event_v2 import RunEvent
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    JobFacet,
    OutputDatasetFacet,
    RunFacet,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    schema_dataset,
    sql_job,
    tags_run,
)
from openlineage.client.serde import Serde

FACETS: dict[type, dict[str, type]] = {
    # `tags` is the client's own: it names its version on every run
    RunFacet: {"parent": parent_run.ParentRunFacet, "errorMessage": error_message_run.ErrorMessageRunFacet,
               "tags": tags_run.TagsRunFacet},
    JobFacet: {"jobType": job_type_job.JobTypeJobFacet, "sql": sql_job.SQLJobFacet},
    DatasetFacet: {"schema": schema_dataset.SchemaDatasetFacet,
                   "columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet},
    InputDatasetFacet: {"dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet},
    OutputDatasetFacet: {"outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet},
}


class InvalidEvent(AssertionError):
    pass


def _structure(tp: Any, data: Any, where: str, key: str | None = None) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        [inner] = [a for a in args if a is not type(None)]
        return _structure(inner, data, where, key)
    if origin is list:
        if not isinstance(data, list):
            raise InvalidEvent(f"{where}: expected a list, got {data!r}")
        return [_structure(args[0], x, f"{where}[{i}]") for i, x in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise InvalidEvent(f"{where}: expected an object, got {data!r}")
        return {k: _structure(args[1], v, f"{where}.{k}", k) for k, v in data.items()}
    if tp in FACETS:
        known = FACETS[tp]
        if key not in known:
            raise InvalidEvent(f"{where}: {tp.__name__} {key!r} is not one of {sorted(known)}")
        return _build(known[key], data, where)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(data)
        except ValueError as exc:
            raise InvalidEvent(f"{where}: {data!r} is not one of {[e.value for e in tp]}") from exc
    if attr.has(tp):
        return _build(tp, data, where)
    if tp is bool or tp is str:
        if not isinstance(data, tp):
            raise InvalidEvent(f"{where}: expected {tp.__name__}, got {data!r}")
        return data
    if tp is int or tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float) if tp is float else int):
            raise InvalidEvent(f"{where}: expected {tp.__name__}, got {data!r}")
        return data
    raise InvalidEvent(f"{where}: no rule for {tp!r}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise InvalidEvent(f"{where}: expected an object for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = attr.fields(cls)
    unknown = set(data) - {f.name for f in fields}
    if unknown:
        raise InvalidEvent(f"{where}: {cls.__name__} has no field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for f in fields:
        if f.name not in data:
            if f.default is attr.NOTHING:
                raise InvalidEvent(f"{where}: {cls.__name__} needs {f.name!r}")
            continue
        if not f.init:  # the schema URL: must name this very class's schema
            if data[f.name] != cls._get_schema():  # type: ignore[attr-defined]
                raise InvalidEvent(f"{where}: {f.name} {data[f.name]!r} is not {cls._get_schema()!r}")  # type: ignore[attr-defined]
            continue
        kwargs[f.alias] = _structure(hints[f.name], data[f.name], f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InvalidEvent(f"{where}: {cls.__name__}: {exc}") from exc


def _without_empties(data: Any) -> Any:
    """Empty objects and lists dropped: the client writes `"facets": {}` where a sender may leave the key out."""
    if isinstance(data, dict):
        return {k: _without_empties(v) for k, v in data.items() if v not in ({}, [])}
    if isinstance(data, list):
        return [_without_empties(v) for v in data]
    return data


def validate_event(data: dict[str, Any]) -> RunEvent:
    """The event rebuilt as the client's RunEvent; InvalidEvent (an AssertionError) naming the first problem."""
    event = _build(RunEvent, data, "event")
    again = Serde.to_dict(event)
    if _without_empties(again) != _without_empties(data):
        raise InvalidEvent(f"the event does not serialize back to what was received: {again} != {data}")
    return event


@dataclass
class Receiver:
    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)

    def states(self, job: str) -> list[str]:
        return [e["eventType"] for e in self.events if e["job"]["name"] == job]

    def of(self, job: str, state: str) -> dict[str, Any]:
        [event] = [e for e in self.events if e["job"]["name"] == job and e["eventType"] == state]
        return event


@contextmanager
def receiver() -> Iterator[Receiver]:
    """An HTTP server on a free loopback port that keeps every JSON body POSTed to it (answering 200)."""
    got = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.paths.append(self.path)
            got.auth.append(self.headers.get("Authorization"))
            got.events.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
