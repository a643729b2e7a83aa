"""OpenLineage run events from the guard and `pipewarden build`, for lineage tools (Marquez, DataHub, OpenMetadata).

Built on the `openlineage-python` client: its event and facet classes, `OpenLineageClient`, and its HTTP, file and
console transports. Off by default. Configured by `[openlineage]` in the project file (`OpenLineageConfig`:
`transport = "http" | "file" | "console"`, `url`, `endpoint`, `path`, `namespace`, `timeout_s`), each field
overridden by `PIPEWARDEN_OPENLINEAGE_<FIELD>`; `PIPEWARDEN_OPENLINEAGE_API_KEY` (environment only) is sent as a
bearer token over HTTP.

What is emitted (jobs in the configured namespace, default the project's name):

- **The guard** (`guard.<dataset>`, one run per guarded or re-checked batch). START names the input, the landed
  batch (`file` + its path, or `s3://bucket` + its key), with the schema it arrived with, and the output, the
  warehouse table `raw_<dataset>`, with the active contract's schema. COMPLETE when the batch is accepted (with
  the rows accepted), FAIL when it halts (an `errorMessage` facet with the reason) or when checking it crashed.
  The terminal event carries a `dataQualityAssertions` facet on the input: one assertion per contract check (the
  check's kind, its column, success when no row failed it); checks that could not run (their column is missing or
  retyped) are left out, and the missing column's `exists` assertion fails.
- **`build`** (`build`, one run per build, and `build.<model>` per model, each with a `parent` facet). A model's
  run names the tables it reads as inputs and its table as the output, with the output's `schema` (its columns),
  `columnLineage` (from sqlglot, `tools.lineage.column_lineage`: each output column's upstream table columns) and
  row count, and the model's SQL as the job's `sql` facet. A failed model's run FAILs with the database's message;
  a skipped model has no run; the build's run FAILs when any model failed.

Datasets are named as OpenLineage's naming conventions say: PostgreSQL `postgres://host:port` with
`database.schema.table`; DuckDB (which the conventions do not cover) `duckdb://<file>` with `main.<table>`.

A lineage receiver is an observer: sending never breaks or slows the pipeline beyond the transport's timeout. A
failed send is logged as a warning and dropped (HTTP retries are off), like a Slack failure.

Public names: `LineageSettings`, `lineage_settings(settings=None)`, `lineage_client(settings=None)`,
`guard_lineage(landed)`, `build_lineage(models, dialect, warehouse_url)`, `quality_assertions`,
`warehouse_naming`, `file_naming`, `PRODUCER`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from pipewarden import __version__
from pipewarden.settings import Settings, get_settings

if TYPE_CHECKING:
    from openlineage.client import OpenLineageClient
    from openlineage.client.event_v2 import InputDataset, OutputDataset, RunEvent

    from pipewarden.models import CheckResult
    from pipewarden.tools.lineage import SqlModel

log = logging.getLogger(__name__)

PRODUCER = f"https://pypi.org/project/pipewarden/{__version__}/"
"""Who produced the events (OpenLineage's `producer`: a URI naming the software and its version)."""
ENV_PREFIX = "PIPEWARDEN_OPENLINEAGE_"


class LineageSettings(BaseModel):
    """`[openlineage]` with the environment's overrides applied, paths resolved."""

    model_config = ConfigDict(frozen=True)
    transport: Literal["off", "http", "file", "console"] = "off"
    url: str | None = None
    endpoint: str = "api/v1/lineage"
    path: Path | None = None
    namespace: str = "pipewarden"
    timeout_s: float = 5.0
    api_key: SecretStr | None = None


def lineage_settings(settings: Settings | None = None) -> LineageSettings:
    """The project's `[openlineage]` section, each field overridden by `PIPEWARDEN_OPENLINEAGE_<FIELD>`."""
    from pipewarden.errors import ConfigError
    from pipewarden.project import OpenLineageConfig

    settings = settings or get_settings()
    project = settings.project_config if settings.has_project else None
    section = project.config.openlineage if project is not None else OpenLineageConfig()
    values: dict[str, Any] = section.model_dump()
    for field in values:
        env = os.environ.get(ENV_PREFIX + field.upper())
        if env is not None and env.strip():
            values[field] = env.strip()
    try:
        section = OpenLineageConfig.model_validate(values)
    except ValueError as exc:
        raise ConfigError(f"[openlineage] (or {ENV_PREFIX}*): {exc}",
                          hint="transport is off, http, file or console; http needs url, file needs path") from exc
    root = project.root if project is not None else Path.cwd()
    path = Path(section.path) if section.path else None
    if path is not None and not path.is_absolute():
        path = root / path
    if section.transport == "http" and not section.url:
        raise ConfigError("[openlineage] transport = \"http\" needs a url",
                          hint=f"set url = \"http://host:port\" in [openlineage] or {ENV_PREFIX}URL")
    if section.transport == "file" and path is None:
        raise ConfigError("[openlineage] transport = \"file\" needs a path",
                          hint=f"set path = \"lineage.jsonl\" in [openlineage] or {ENV_PREFIX}PATH")
    key = os.environ.get(ENV_PREFIX + "API_KEY", "").strip()
    return LineageSettings(
        transport=section.transport, url=section.url, endpoint=section.endpoint, path=path,
        namespace=section.namespace or (project.config.name if project is not None else "pipewarden"),
        timeout_s=section.timeout_s, api_key=SecretStr(key) if key else None,
    )


def lineage_client(settings: Settings | None = None) -> tuple[OpenLineageClient, str] | None:
    """The client for the configured transport and the jobs' namespace; None when lineage is off."""
    cfg = lineage_settings(settings)
    if cfg.transport == "off":
        return None
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport
    from openlineage.client.transport.file import FileConfig, FileTransport
    from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport, TokenProvider

    if cfg.transport == "http":
        auth = ApiKeyTokenProvider({"api_key": cfg.api_key.get_secret_value()}) if cfg.api_key else TokenProvider({})
        transport: Any = HttpTransport(HttpConfig(url=str(cfg.url), endpoint=cfg.endpoint, timeout=cfg.timeout_s,
                                                  auth=auth, retry={"total": 0}))
    elif cfg.transport == "file":
        assert cfg.path is not None
        cfg.path.parent.mkdir(parents=True, exist_ok=True)
        transport = FileTransport(FileConfig(log_file_path=str(cfg.path), append=True))
    else:
        transport = ConsoleTransport(ConsoleConfig())
    return OpenLineageClient(transport=transport), cfg.namespace


# ------------------------------------------------------------------------------------------ naming
def _now() -> str:
    return datetime.now(UTC).isoformat()


def _new_run_id() -> str:
    from openlineage.client.uuid import generate_new_uuid

    return str(generate_new_uuid())


def warehouse_naming(url: str) -> tuple[str, str]:
    """(namespace, table-name prefix) of a warehouse URL, after OpenLineage's naming conventions."""
    if url.startswith("duckdb:"):
        path = url.split(":///", 1)[-1] if ":///" in url else url.removeprefix("duckdb:")
        return f"duckdb://{Path(path).resolve() if path and path != ':memory:' else 'memory'}", "main."
    from sqlalchemy.engine import make_url

    u = make_url(url)
    scheme = "postgres" if u.get_backend_name() in ("postgresql", "postgres") else u.get_backend_name()
    return f"{scheme}://{u.host or 'localhost'}:{u.port or 5432}", f"{u.database}.public."


def file_naming(uri: str) -> tuple[str, str]:
    """(namespace, name) of a landed batch: `file` and its absolute path, or `scheme://bucket` and its key."""
    parts = urlsplit(uri)
    if parts.scheme and parts.scheme != "file" and len(parts.scheme) > 1:  # not a Windows drive letter
        return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")
    return "file", str(Path(parts.path if parts.scheme == "file" else uri).resolve())


def _emit(client: OpenLineageClient, event: RunEvent) -> None:
    try:
        client.emit(event)
    except Exception as exc:  # noqa: BLE001 - lineage is observed, never a dependency: a failed send is dropped
        log.warning("OpenLineage: could not send the %s event of %s: %s", event.eventType, event.job.name, exc)


def _event(state: str, run_id: str, namespace: str, job: str, *, inputs: list[InputDataset] | None = None,
           outputs: list[OutputDataset] | None = None, run_facets: dict[str, Any] | None = None,
           job_facets: dict[str, Any] | None = None) -> RunEvent:
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

    return RunEvent(eventType=RunState[state], eventTime=_now(), producer=PRODUCER,
                    run=Run(runId=run_id, facets=run_facets or {}),
                    job=Job(namespace=namespace, name=job, facets=job_facets or {}),
                    inputs=inputs or [], outputs=outputs or [])


def _job_type(job_type: str) -> dict[str, Any]:
    from openlineage.client.facet_v2 import job_type_job

    return {"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="PIPEWARDEN",
                                                    jobType=job_type, producer=PRODUCER)}


def _error(message: str) -> dict[str, Any]:
    from openlineage.client.facet_v2 import error_message_run

    return {"errorMessage": error_message_run.ErrorMessageRunFacet(message=message[:4000],
                                                                   programmingLanguage="python", producer=PRODUCER)}


def _schema(columns: Mapping[str, str | None]) -> Any:
    from openlineage.client.facet_v2 import schema_dataset

    return schema_dataset.SchemaDatasetFacet(
        fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in columns.items()],
        producer=PRODUCER)


# ------------------------------------------------------------------------------------------ the guard
_MISSING = re.compile(r"^contract column '(?P<c>[^']+)' \(.*\) is missing$")
_RETYPED = re.compile(r"^column '(?P<c>[^']+)' is ")


def quality_assertions(contract: Any, checks: CheckResult | None) -> list[Any]:
    """One OpenLineage assertion per contract check that ran, from the batch's CheckResult: a row rule succeeds when
    no row failed it (its label heads no entry of `failed_checks`); `exists` fails for a missing column; rules on a
    missing or retyped column did not run and are left out."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    from pipewarden.policies.expectations import check_specs

    if checks is None:
        return []
    missing = {m["c"] for e in checks.schema_errors if (m := _MISSING.match(e))}
    retyped = {m["c"] for e in checks.schema_errors if (m := _RETYPED.match(e))}
    out = []
    for spec in check_specs(contract):
        cols = set(spec.columns or (spec.column,))
        if spec.kind == "exists":
            success = spec.column not in missing
        elif cols & (missing | retyped):
            continue
        else:
            success = not any(f.startswith(spec.label + " (") for f in checks.failed_checks)
        out.append(dq.Assertion(assertion=spec.kind, success=success, column=spec.column, name=spec.label))
    return out


class GuardLineage:
    """One guard run's events: START when made, then `finished(result)` or `crashed(error)`."""

    def __init__(self, client: OpenLineageClient, namespace: str, landed: Any) -> None:
        from pipewarden.flows.validate import raw_table
        from pipewarden.tools.contracts import active_contract

        self._client, self._ns, self._landed = client, namespace, landed
        self._run_id = _new_run_id()
        self._job = f"guard.{landed.dataset}"
        self._contract = active_contract(landed.dataset)
        self._in_ns, self._in_name = file_naming(str(landed.uri))
        wh_ns, prefix = warehouse_naming(get_settings().warehouse)
        self._out_ns, self._out_name = wh_ns, prefix + raw_table(landed.dataset)
        _emit(client, _event("START", self._run_id, namespace, self._job, inputs=[self._input()],
                             outputs=[self._output()], job_facets=_job_type("GUARD")))

    def _input(self, checks: CheckResult | None = None) -> InputDataset:
        from openlineage.client.event_v2 import InputDataset
        from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

        input_facets: dict[str, Any] = {}
        if checks is not None:
            input_facets["dataQualityAssertions"] = dq.DataQualityAssertionsDatasetFacet(
                assertions=quality_assertions(self._contract, checks), producer=PRODUCER)
        return InputDataset(namespace=self._in_ns, name=self._in_name,
                            facets={"schema": _schema(dict(self._landed.columns))}, inputFacets=input_facets)

    def _output(self, rows: int | None = None) -> OutputDataset:
        from openlineage.client.event_v2 import OutputDataset
        from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

        out_facets = {} if rows is None else {
            "outputStatistics": stats.OutputStatisticsOutputDatasetFacet(rowCount=rows, producer=PRODUCER)}
        return OutputDataset(namespace=self._out_ns, name=self._out_name,
                             facets={"schema": _schema({c.name: c.type for c in self._contract.columns})},
                             outputFacets=out_facets)

    def finished(self, result: Any) -> Any:
        """COMPLETE for an accepted batch, FAIL (with the reason) for a halted one; returns `result`."""
        halted = result.status == "halted"
        _emit(self._client, _event(
            "FAIL" if halted else "COMPLETE", self._run_id, self._ns, self._job,
            inputs=[self._input(result.checks)], outputs=[self._output(None if halted else result.rows_accepted)],
            run_facets=_error(f"halted at {result.halted_at}: {result.reason}") if halted else None,
            job_facets=_job_type("GUARD")))
        return result

    def crashed(self, error: BaseException) -> None:
        _emit(self._client, _event("FAIL", self._run_id, self._ns, self._job, inputs=[self._input()],
                                   outputs=[self._output()], run_facets=_error(f"{type(error).__name__}: {error}"),
                                   job_facets=_job_type("GUARD")))


class _NoGuardLineage:
    def finished(self, result: Any) -> Any:
        return result


@contextlib.contextmanager
def guard_lineage(landed: Any) -> Iterator[GuardLineage | _NoGuardLineage]:
    """Around checking a landed batch: START now; `finished(result)` sends COMPLETE or FAIL; an exception sends
    FAIL and propagates. Does nothing when lineage is off."""
    made = lineage_client()
    if made is None:
        yield _NoGuardLineage()
        return
    run = GuardLineage(made[0], made[1], landed)
    try:
        yield run
    except BaseException as exc:
        run.crashed(exc)
        raise


# ------------------------------------------------------------------------------------------ build
class BuildLineage:
    """One build's events: the build's run (START when made) and a child run per model."""

    def __init__(self, client: OpenLineageClient, namespace: str, models: Mapping[str, SqlModel],
                 parsed: Mapping[str, SqlModel], dialect: str, warehouse_url: str) -> None:
        from pipewarden.tools.lineage import column_lineage, model_columns, model_dependencies

        self._client, self._ns, self._models, self._dialect = client, namespace, models, dialect
        self._run_id = _new_run_id()
        self._wh_ns, self._prefix = warehouse_naming(warehouse_url)
        self._reads = model_dependencies(models=parsed)
        try:
            self._columns = model_columns(models=parsed)
            self._edges = column_lineage(models=parsed)
        except Exception as exc:  # noqa: BLE001 - lineage facets are extra; the models still build and emit runs
            log.warning("OpenLineage: no column lineage for this build: %s", exc)
            self._columns, self._edges = {}, []
        self._started: dict[str, str] = {}
        self._failed: list[str] = []
        _emit(client, _event("START", self._run_id, namespace, "build", job_facets=_job_type("BUILD")))

    def _table(self, name: str) -> tuple[str, str]:
        return self._wh_ns, self._prefix + name

    def _parent(self) -> dict[str, Any]:
        from openlineage.client.facet_v2 import parent_run

        return {"parent": parent_run.ParentRunFacet(run=parent_run.Run(runId=self._run_id),
                                                    job=parent_run.Job(namespace=self._ns, name="build"),
                                                    producer=PRODUCER)}

    def _job_facets(self, name: str) -> dict[str, Any]:
        from openlineage.client.facet_v2 import sql_job

        return {**_job_type("MODEL"), "sql": sql_job.SQLJobFacet(query=self._models[name].sql, dialect=self._dialect,
                                                                 producer=PRODUCER)}

    def _io(self, name: str, rows: int | None = None) -> tuple[list[InputDataset], list[OutputDataset]]:
        from openlineage.client.event_v2 import InputDataset, OutputDataset
        from openlineage.client.facet_v2 import column_lineage_dataset as cl
        from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

        inputs = [InputDataset(namespace=ns, name=n) for ns, n in map(self._table, sorted(self._reads.get(name, ())))]
        facets: dict[str, Any] = {}
        if name in self._columns:
            facets["schema"] = _schema(dict.fromkeys(self._columns[name]))
        fields: dict[str, list[Any]] = {}
        for e in self._edges:
            if e.model == name:
                ns, table = self._table(e.upstream_table)
                fields.setdefault(e.column, []).append(cl.InputField(namespace=ns, name=table, field=e.upstream_column))
        if fields:
            facets["columnLineage"] = cl.ColumnLineageDatasetFacet(
                fields={c: cl.Fields(inputFields=f) for c, f in sorted(fields.items())}, producer=PRODUCER)
        out_facets = {} if rows is None else {
            "outputStatistics": stats.OutputStatisticsOutputDatasetFacet(rowCount=rows, producer=PRODUCER)}
        ns, table = self._table(name)
        return inputs, [OutputDataset(namespace=ns, name=table, facets=facets, outputFacets=out_facets)]

    def model_started(self, name: str) -> None:
        run_id = _new_run_id()
        self._started[name] = run_id
        inputs, outputs = self._io(name)
        _emit(self._client, _event("START", run_id, self._ns, f"build.{name}", inputs=inputs, outputs=outputs,
                                   run_facets=self._parent(), job_facets=self._job_facets(name)))

    def model_finished(self, result: Any) -> None:
        """COMPLETE or FAIL for a model that started (a skipped model never did)."""
        if result.model not in self._started:
            return
        run_id = self._started.pop(result.model)
        ok = result.status == "ok"
        if not ok:
            self._failed.append(result.model)
        inputs, outputs = self._io(result.model, result.rows_out if ok else None)
        _emit(self._client, _event("COMPLETE" if ok else "FAIL", run_id, self._ns, f"build.{result.model}",
                                   inputs=inputs, outputs=outputs,
                                   run_facets={**self._parent(), **({} if ok else _error(result.error or "failed"))},
                                   job_facets=self._job_facets(result.model)))

    def finished(self) -> None:
        failed = self._failed
        _emit(self._client, _event("FAIL" if failed else "COMPLETE", self._run_id, self._ns, "build",
                                   run_facets=_error(f"model(s) failed: {', '.join(failed)}") if failed else None,
                                   job_facets=_job_type("BUILD")))


class _NoBuildLineage:
    def model_started(self, name: str) -> None:
        return None

    def model_finished(self, result: Any) -> None:
        return None

    def finished(self) -> None:
        return None


def build_lineage(models: Mapping[str, SqlModel], dialect: str, warehouse_url: str) -> BuildLineage | _NoBuildLineage:
    """The build's lineage (START of the build's run now), or a stand-in that does nothing when lineage is off."""
    made = lineage_client()
    if made is None:
        return _NoBuildLineage()
    from pipewarden.flows.build import _models_in

    return BuildLineage(made[0], made[1], models, _models_in(models, dialect), dialect, warehouse_url)
