"""The `pipewarden` command line (Typer). The composition root: each command imports what it needs lazily,
so `pipewarden --help` answers without loading Prefect, GX, MLflow or torch.

A `PipewardenError` is printed as a one-line message with a hint and exits with its code; anything else is a
bug and shows its traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipewarden.errors import PipewardenError

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich Console built on first use, so a command that prints only JSON (`schema match --json`) never imports
    rich's console (~0.03 s of CPU). Every attribute is the real console's."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def _real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __enter__(self) -> Console:  # rich's Live and Progress hold the console as a context (not found by __getattr__)
        return self._real().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._real().__exit__(*exc)  # type: ignore[arg-type]


console: Console = _LazyConsole()  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True, soft_wrap=True)  # type: ignore[assignment]

app = typer.Typer(
    name="pipewarden",
    help="Supervise Prefect data pipelines: contracts, typed events, agents that propose fixes, a human-approval inbox.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
inbox_app = typer.Typer(help="The approval queue: list, show, approve and reject proposals.", no_args_is_help=True)
audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)
schema_app = typer.Typer(help="The schema-drift matcher.", no_args_is_help=True)
knowledge_app = typer.Typer(help="The knowledge index (Qdrant + MiniLM) with provenance.", no_args_is_help=True)
app.add_typer(inbox_app, name="inbox")
app.add_typer(audit_app, name="audit")
app.add_typer(schema_app, name="schema")
app.add_typer(knowledge_app, name="knowledge")
approvers_app = typer.Typer(help="Who may approve what (the project's approvers.yaml) and their personal tokens.",
                            no_args_is_help=True)
db_app = typer.Typer(help="The state DB: schema migrations (Alembic).", no_args_is_help=True)
app.add_typer(approvers_app, name="approvers")
app.add_typer(db_app, name="db")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


@app.callback()
def _project_option(
    project: Annotated[
        Path | None,
        typer.Option("--project", help="The project folder (or its pipewarden.toml). Default: found from the "
                     "working folder upward.", envvar="PIPEWARDEN_PROJECT", show_envvar=True),
    ] = None,
) -> None:
    """Supervise Prefect data pipelines: contracts, typed events, agents that propose fixes, a human-approval inbox."""
    if project is not None:
        os.environ["PIPEWARDEN_PROJECT"] = str(project.expanduser().resolve())
        from pipewarden.settings import get_settings

        get_settings.cache_clear()


# ----------------------------------------------------------------------------------------------- project
@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to make the project (made if missing).")] = Path("."),
    name: Annotated[str | None, typer.Option(help="The project's name. Default: the folder's name.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Scaffold a project: pipewarden.toml, contracts/, models/, approvers.yaml, .env.example."""
    from pipewarden.scaffold import init_project

    report = init_project(folder, name=name)
    if as_json:
        _print_json(report.model_dump(mode="json"))
        return
    console.print(f"[green]created[/] {report.project_file}")
    for rel in report.written:
        console.print(f"  wrote {rel}")
    for rel in report.kept:
        console.print(f"  kept  {rel} (already there)")
    console.print("next: [bold]pipewarden contract init NAME --from FILE[/] drafts a dataset's contract from a sample")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def _stdout_to_stderr(active: bool = True) -> Iterator[None]:
    """While a `--json` command works, anything a library or a worker process writes to stdout (progress bars,
    prints) goes to stderr instead, at the file-descriptor level, so stdout holds only the JSON document."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _quiet_libraries() -> None:
    """Offline, quiet defaults for the heavy libraries (no hub downloads, no progress bars)."""
    import logging
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("mlflow", "alembic", "great_expectations", "httpx", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------------------------- pipeline
@app.command()
def run(
    file: Annotated[Path, typer.Option("--file", help="A batch file (CSV or Parquet).")],
    dataset: Annotated[str, typer.Option(help="The dataset the file belongs to (one of the project's datasets).")],
    as_json: JsonOpt = False,
) -> None:
    """Run the pipeline once on one batch: land it, check it (contract, quality), then the project's next stages.

    Exits 3 when the batch halts, naming the event and the command to look at it."""
    _quiet_libraries()
    from pipewarden.flows.pipeline import run_batch
    from pipewarden.policies.contract import known_dataset

    known_dataset(dataset)  # a name of the project's, never a path
    from pipewarden.progress import progress

    with progress(f"run: landing and checking the {dataset} batch, then the next stages", enabled=not as_json):
        result = run_batch(dataset, str(file))
    if as_json:
        _print_json(result.model_dump(mode="json"))
    else:
        style = {"completed": "green", "halted": "yellow", "failed": "red"}[result.status]
        console.print(
            f"[{style}]{result.status}[/] {dataset} load {result.load_id}: {result.rows_in} rows in, "
            f"{result.rows_quarantined} quarantined"
            + (f"; halted at {result.halted_at}" if result.halted_at else "")
            + (f"; {len(result.events)} event(s) in the outbox" if result.events else "")
        )
    if result.status == "halted":
        from pipewarden.flows.pipeline import halted_error

        raise halted_error(result)
    if result.status != "completed":
        raise typer.Exit(3)


@app.command()
def build(
    select: Annotated[list[str] | None, typer.Option(
        "--select", "-s", metavar="MODEL", help="Build only this model (repeat, or comma-separate, for more).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the project's SQL models in its warehouse (DuckDB or PostgreSQL), in dependency order, recording each
    model's cost. A failing model skips the models that read it; exits 1 when any model failed."""
    from pipewarden.flows.build import BuiltModel, build_models

    only = [n.strip() for item in select or [] for n in item.split(",") if n.strip()] or None

    from pipewarden.progress import NullReporter, progress

    with progress("build: ordering the models by lineage", enabled=not as_json) as bar:

        def show(m: BuiltModel) -> None:
            took = f" {m.rows_out} rows in {m.elapsed_ms:.0f} ms" if m.status == "ok" else ""
            bar.note(f"{m.status:>7} {m.model}{took}")
            bar.advance()
            bar.say(f"build: {m.model} {m.status}")

        report = build_models(only=only, progress=None if isinstance(bar, NullReporter) else show)
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        for m in report.models:
            done = f"{m.rows_out} rows, {m.elapsed_ms:.0f} ms" if m.status == "ok" else m.status
            console.print(f"{m.model}: {done}", markup=False, highlight=False)
        console.print(f"built {sum(m.status == 'ok' for m in report.models)} of {len(report.models)} model(s) in "
                      f"{report.warehouse}", markup=False, highlight=False)
    if not report.ok:
        from rich.markup import escape

        for m in report.models:
            if m.status != "ok":
                err_console.print(f"[red]{m.status}:[/] {escape(m.model)} ({escape(m.path)}): {escape(m.error or '')}")
        raise typer.Exit(1)


@app.command()
def check(
    file: Annotated[Path, typer.Argument(help="A CSV or Parquet file.")],
    dataset: Annotated[str, typer.Option(help="The dataset whose contract to check against (one of the project's "
                                               "datasets, by name).")],
    as_json: JsonOpt = False,
) -> None:
    """Validate a file against a data contract without landing it. Exits 3 when the file fails its contract.

    A file of at least PIPEWARDEN_PUSHDOWN_MIN_BYTES (64 MiB) is checked in DuckDB over the file, in bounded memory.
    """
    _quiet_libraries()
    from pipewarden.policies.contract import known_dataset
    from pipewarden.progress import progress
    from pipewarden.tools.checks import check_file

    with progress(f"checking {file.name} against the {dataset} contract", enabled=not as_json) as bar:
        report = check_file(file, known_dataset(dataset), say=bar.say)
    res = report.result
    if as_json:
        _print_json({"file": str(file), "dataset": dataset, **res.model_dump(mode="json"),
                     "failure_rate": report.failure_rate})
    else:
        verdict = "[green]passes[/]" if res.passed else "[red]fails[/]"
        console.print(f"{file}: {verdict} the {dataset} contract ({res.rows} rows, {res.failed_rows} rejected, "
                      f"{report.failure_rate:.2%})")
        for line in res.schema_errors + res.failed_checks:
            console.print(f"  - {line}")
    if not res.passed:
        raise typer.Exit(3)


@app.command()
def emit(
    kind: Annotated[str, typer.Argument(
        help="The event kind: schema_drift, check_failed, run_failed, cost_regression, model_drift or "
             "quality_anomaly (their fields are listed above).", metavar="KIND", show_default=False)],
    dataset: Annotated[str | None, typer.Option(help="The dataset the event concerns (or `dataset` in the JSON body).")]
    = None,
    field: Annotated[list[str] | None, typer.Option(
        "--field", help="NAME=VALUE, repeatable. Text, numbers and true/false as typed; a list or object as JSON "
                        "('failed=[{\"check\": \"not_null\", \"failed_rows\": 3}]').")] = None,
    json_body: Annotated[str | None, typer.Option(
        "--json-body", help="A JSON file holding the event's fields as one object, or - to read it from stdin.")]
    = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Report at most once per key: the same key again prints the first event's id and stores nothing.")]
    = None,
    actor: Annotated[str | None, typer.Option(
        "--as", help="Which of the identities you prove to report as (default: $PIPEWARDEN_USER, else the proven "
                     "one). It never names someone you have not proven.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="A private file (chmod 600) holding the reporter's personal token; else "
                             "$PIPEWARDEN_TOKEN, else your login's `os_user` entry in approvers.yaml.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Report an event from outside a Prefect flow: validated like a flow's event and written to the outbox (no
    server needed); the supervisor claims it. The reporter proves who they are like a decision does (a personal
    token in $PIPEWARDEN_TOKEN or --token-file, or their login as `os_user` in approvers.yaml) and needs the
    reporter role on the dataset, as `POST /api/events` does; who reported it is audited.

    KIND, and the fields it needs besides --dataset:

    [bold]schema_drift[/]     batch_path, contract_version
    [bold]check_failed[/]     batch_path, failed, failure_rate, threshold
    [bold]run_failed[/]       stage, error
    [bold]cost_regression[/]  model, baseline, observed, ratio
    [bold]model_drift[/]      model, metric, value, threshold
    [bold]quality_anomaly[/]  check (freshness, volume, distribution, duplicates,
                     referential, null_spike or range)

    Any kind may carry load_id, run_id and occurred.
    A missing, misspelt or mistyped field is refused by name (exit 2).
    """
    from pipewarden.inbox.identity import cli_identity
    from pipewarden.policies.approvers import Approvers, check_can_report
    from pipewarden.report import cli_event, read_json_body
    from pipewarden.store import StateStore

    store, approvers = StateStore(), Approvers.load()
    reporter = cli_identity(store, approvers, claimed=actor, token_file=token_file).name  # proven, never a bare name
    check_can_report(reporter, approvers)  # before reading the body: a non-reporter learns nothing more
    body = read_json_body(json_body) if json_body is not None else None
    event = cli_event(kind, dataset, field or [], body)
    check_can_report(reporter, approvers, event.dataset)
    event_id, created = store.report_event(event, reporter, idempotency_key=idempotency_key, via="cli")
    if as_json:
        _print_json({"id": event_id, "created": created, "kind": event.kind, "dataset": event.dataset})
    elif created:
        console.print(f"event {event_id} ({event.kind} on {event.dataset}) is in the outbox; "
                      "`pipewarden supervise --once` handles it")
    else:
        console.print(f"already reported with idempotency key {idempotency_key!r}: event {event_id}; nothing stored")


@app.command()
def supervise(
    once: Annotated[bool, typer.Option("--once", help="Handle what is pending now, then exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls when not --once.")] = 5.0,
    as_flow: Annotated[bool | None, typer.Option(
        "--flow/--no-flow", help="Run each pass as the Prefect flow pipewarden-supervise (a task run per event and "
                                 "per resumed proposal). Default: a flow when PREFECT_API_URL is set and there is work; "
                                 "without it a flow would first start Prefect's ephemeral server (tens of "
                                 "seconds).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Claim pending events, route each to its agent, and resume graphs whose proposals were decided.

    With a Prefect API configured each pass is a flow run of pipewarden-supervise, and the proposals' lifecycle
    (proposed, approved, rejected, applied, verified, rolled back) is mirrored to Prefect events.
    """
    _quiet_libraries()
    import time

    from pipewarden.inbox.service import expire_stale
    from pipewarden.progress import progress

    prepared = _Preparation(quiet=as_json)
    if once:  # one pass: the agents cite the knowledge index, so bring it up to date first
        prepared.run(warm=False)
    else:  # a long-running worker resumes decided proposals at once, and claims events once the index is ready
        prepared.start()
    while True:
        events = prepared.ready()  # raises what the preparation raised: the worker exits, `serve` restarts it
        if prepared.note and not as_json:
            console.print(f"[dim]{prepared.note}[/]")
            prepared.note = None
        with progress("supervise: handling pending events and decided proposals", enabled=not as_json):
            expired = expire_stale()
            report = _supervise_pass(as_flow, events=events)
        for p in expired:
            console.print(f"proposal {p.short_id} expired: {p.status_reason}")
        if as_json:
            _print_json(report.model_dump(mode="json"))
        else:
            for line in report.lines():
                console.print(line)
        if once:
            return
        time.sleep(interval)


class _Preparation:
    """What a worker does before it claims events: bring the knowledge index up to date (agents cite it) and, for a
    long-running worker, load the agents and the embedder. Run in a thread (`start`) so decided proposals are
    resumed while it runs: a resume needs neither (the agent's graph is loaded on its own)."""

    def __init__(self, *, quiet: bool) -> None:
        import threading

        self.quiet = quiet
        self.note: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self.run, kwargs={"warm": True, "in_thread": True},
                                        name="pipewarden-supervise-prepare", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run(self, *, warm: bool, in_thread: bool = False) -> None:
        from pipewarden.flows.knowledge_sync import sync_knowledge
        from pipewarden.progress import progress

        show = not self.quiet and not in_thread  # one live progress display at a time: the loop's
        try:
            with progress("supervise: bringing the knowledge index up to date", enabled=show):
                self.note = f"knowledge index: {sync_knowledge()}"
            if warm:
                from pipewarden.agents.router import warm_up

                with progress("supervise: loading the agents", enabled=show):
                    warm_up()
        except BaseException as exc:  # handed to the loop, which raises it
            self.error = exc
            if not in_thread:
                raise
        finally:
            self.done.set()

    def ready(self) -> bool:
        """True once events may be claimed; raises the preparation's error."""
        if self.error is not None:
            raise self.error
        return self.done.is_set()


def _supervise_pass(as_flow: bool | None, *, events: bool = True) -> Any:
    """One pass: as the Prefect flow (`--flow`, or by default when there is work and PREFECT_API_URL is set),
    inline with the lifecycle mirrored (`--no-flow`, or work without a Prefect API), or, idle by default, inline
    without importing Prefect at all (it costs seconds, and an idle pass has nothing to show). `events=False`
    (the worker is still preparing): only decided proposals are resumed, inline; events wait for the next passes
    (the lifecycle is mirrored by the first full pass)."""
    from pipewarden.agents.supervisor import SuperviseReport, supervise_once
    from pipewarden.flows.supervise_work import has_work

    if not events:
        return supervise_once(limit=0)
    if as_flow is None and not has_work():
        return supervise_once()
    from pipewarden.flows.prefect_story import prefect_configured
    from pipewarden.flows.supervise import supervise_flow, supervise_pass

    if as_flow or (as_flow is None and prefect_configured()):
        return SuperviseReport.model_validate(supervise_flow(sync_index=False))
    return supervise_pass()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8765,
    trusted_user_header: Annotated[str | None, typer.Option(
        help="Believe this header (e.g. X-Forwarded-User) as the signed-in approver; only behind an authentication "
             "proxy that sets it on every request. Default: PIPEWARDEN_TRUSTED_USER_HEADER, else tokens only.",
    )] = None,
    worker: Annotated[bool, typer.Option(
        "--worker/--no-worker", help="Run a supervisor worker beside the server (a child process, stopped with it) "
                                     "that applies approved decisions. --no-worker: you run `pipewarden supervise`.",
    )] = True,
) -> None:
    """Serve the web inbox, its JSON API, the Slack endpoint and the MCP server (/mcp) until Ctrl-C, with a
    supervisor worker beside them that applies what people approve (the server itself only stores decisions).

    People sign in with a personal token (`pipewarden approvers token NAME`); the API takes the same token as
    `Authorization: Bearer <token>`.
    """
    _quiet_libraries()
    if trusted_user_header is not None:
        import os

        from pipewarden.settings import get_settings

        os.environ["PIPEWARDEN_TRUSTED_USER_HEADER"] = trusted_user_header
        get_settings.cache_clear()
    from pipewarden.inbox.web import serve as serve_web

    def with_mcp(web_app: Any) -> None:
        from pipewarden.mcp_server import mount

        mount(web_app, host=host)
        print(f"  MCP for IDE agents: http://{host}:{port}/mcp (Authorization: Bearer <token>)", flush=True)

    serve_web(host=host, port=port, worker=worker, extend=with_mcp)


@app.command()
def mcp(
    http: Annotated[int | None, typer.Option("--http", metavar="PORT", help="Serve streamable HTTP at "
                                             "http://HOST:PORT/mcp (bearer tokens) instead of stdio.")] = None,
    host: Annotated[str, typer.Option(help="With --http: the interface to bind.")] = "127.0.0.1",
) -> None:
    """Serve the inbox and the read-only tools to IDE agents over MCP (stdio by default).

    Over stdio the caller is the owner of the personal token in PIPEWARDEN_TOKEN; over HTTP each request sends
    `Authorization: Bearer <token>` (`pipewarden approvers token NAME` prints one). `pipewarden serve` also
    serves it at /mcp beside the web inbox.
    """
    _quiet_libraries()
    from pipewarden import mcp_server

    if http is None:
        mcp_server.run_stdio()
        return
    from pipewarden.inbox.web import ensure_port_free

    ensure_port_free(host, http)
    err_console.print(f"pipewarden MCP: http://{host}:{http}/mcp  (bearer tokens; Ctrl-C to stop)")
    mcp_server.run_http(host, http)


@app.command()
def deploy(
    name: Annotated[str, typer.Option(help="The deployment's name (pipewarden-supervise/NAME).")] = "on-events",
    every: Annotated[int, typer.Option("--every", metavar="SECONDS", help="Also run supervise every SECONDS as a "
                                       "safety net; 0 for none (events only).")] = 300,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be served and exit; Prefect's API "
                                          "is not contacted.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Serve the supervise flow as a Prefect deployment, run by pipewarden's fault events (Ctrl-C stops serving).

    Served against PREFECT_API_URL when set, else Prefect's local default; the trigger fires on events sent to
    that same server, so point the pipeline there too.
    """
    _quiet_libraries()
    from pipewarden.flows.deploy import build_supervise_deployment, describe, serve_deployment

    deployment = build_supervise_deployment(name=name, every=every)
    plan = describe(deployment)
    if as_json:
        _print_json({**plan.model_dump(mode="json"), "deployment": plan.full_name, "served": not dry_run})
    else:
        console.print(f"deployment [bold]{plan.full_name}[/]")
        for t in plan.triggers:
            console.print(f"  triggered by: {', '.join(t.events)}", soft_wrap=True)
            console.print(f"  on resources: {', '.join(f'{k}={v}' for k, v in t.match.items())}", soft_wrap=True)
        console.print(f"  interval: {f'every {plan.every_s}s' if plan.every_s else 'none'}")
        console.print(f"  Prefect API: {plan.api_url or 'local default (PREFECT_API_URL is not set)'}", soft_wrap=True)
    if not dry_run:
        with _stdout_to_stderr(as_json):
            serve_deployment(deployment)


@app.command()
def demo(
    approve_all: Annotated[bool, typer.Option("--approve-all", help="Approve every proposal without a person.")] = False,
    serve_inbox: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the web inbox until Ctrl-C.")] = True,
    port: Annotated[int, typer.Option(help="Port for the web inbox.")] = 8765,
    home: Annotated[Path | None, typer.Option(help="Folder for the demo's state, wiped at start if the demo made "
                                              "it; default PIPEWARDEN_HOME (./.pipewarden).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The main job: a clean month, then a drifted month; the agent's proposal waits in the inbox."""
    _quiet_libraries()
    from pipewarden.flows.demo import run_demo

    with _stdout_to_stderr(as_json):
        summary = run_demo(approve_all=approve_all, serve=serve_inbox, port=port, home=home,
                           log=None if as_json else console.print)
    if as_json:
        _print_json(summary.model_dump(mode="json"))
    if not summary.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------------------------- eval
eval_app = typer.Typer(help="Run the agent eval scenarios (the built-in catalogue and the project's recorded ones); "
                       "`eval record ID` records a decided proposal as a scenario.", invoke_without_command=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("record")
def eval_record(
    proposal_id: Annotated[str, typer.Argument(help="A decided proposal's id (or its first 4+ characters).")],
    as_json: JsonOpt = False,
) -> None:
    """Record a decided proposal (its event's batch and the human decision) as an eval scenario of this project:
    `evals/scenarios/recorded.yaml` and `evals/batches/`. `pipewarden eval` then runs it beside the catalogue."""
    from pipewarden.evals.record import record
    from pipewarden.settings import get_settings

    settings = get_settings()
    done = record(proposal_id, settings.project_config.root)
    s = done.scenario
    if as_json:
        _print_json({"scenario": s.model_dump(mode="json", exclude_none=True), "file": str(done.file),
                     "batch": str(done.batch)})
        return
    assert s.recorded is not None and s.expect.change is not None
    want = ("expects" if s.expect.outcome == "change" else "expects anything but") + \
        f" {s.expect.change.kind} {s.expect.change.fields}"
    console.print(f"recorded scenario [bold]{s.id}[/] ({s.agent}, {s.recorded.verdict} by {s.recorded.actor}): {want}")
    console.print(f"  {done.file}\n  {done.batch}")
    console.print(f"run it: pipewarden eval --scenario {s.id}")


@eval_app.callback()
def eval_(
    ctx: typer.Context,
    llm: Annotated[str, typer.Option("--llm", help="mock (scripted model per scenario), offline (no model) or openai "
                                     "(a live endpoint).")] = "mock",
    base_url: Annotated[str | None, typer.Option("--base-url", help="With --llm openai: any OpenAI-compatible URL.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="With --llm openai: the model name.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's scenarios.")] = None,
    scenario: Annotated[str | None, typer.Option("--scenario", help="Only the scenario with this id.")] = None,
    pattern: Annotated[str | None, typer.Option("-k", help="Only scenarios whose id or a tag matches (glob or "
                                                "substring).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for report.json and report.md "
                                             "(default PIPEWARDEN_HOME/evals/<timestamp>/).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: 2 for 8+ scenarios).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep each scenario's home under --out/homes.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the agent eval scenarios (the built-in catalogue and this project's recorded ones) and score them;
    exits 1 on any unsafe change or a pass rate below the bar."""
    if ctx.invoked_subcommand is not None:
        return
    _quiet_libraries()
    if llm not in ("mock", "offline", "openai"):
        raise typer.BadParameter(f"--llm {llm!r}: use mock, offline or openai")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipewarden.evals.command import EvalOptions, run_eval
    from pipewarden.evals.report import render_table

    opts = EvalOptions(llm=llm, base_url=base_url, model=model, agent=agent, scenario=scenario,  # type: ignore[arg-type]
                       pattern=pattern, out=out, workers=workers, keep=keep,
                       command="pipewarden " + " ".join(sys.argv[1:]))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("evals: preparing", total=None)

        def started(n: int) -> None:
            bar.update(task, total=n, description="evals: building the shared starting state")

        def done(r: Any) -> None:
            mark = "UNSAFE" if r.unsafe else ("pass" if r.passed else "fail")
            bar.update(task, advance=1, description=f"evals: {r.id} {mark}")

        with _stdout_to_stderr(as_json):
            report, folder = run_eval(opts, on_start=started, progress=done,
                                      say=lambda m: bar.update(task, description=m))
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        console.print(render_table(report))
    err_console.print(f"reports: {folder / 'report.json'} and {folder / 'report.md'}")
    err_console.print(("[green]PASS[/] " if report.ok else "[red]FAIL[/] ") + report.verdict)
    if not report.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------------------------- inbox
@inbox_app.command("list")
def inbox_list(
    status: Annotated[str | None, typer.Option(help="Only this status (pending, verified, ...).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every proposal, not only open ones.")] = False,
    dataset: Annotated[str | None, typer.Option(help="Only proposals about this dataset.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List proposals (open ones by default)."""
    from pipewarden.inbox.render import proposal_json, proposals_table
    from pipewarden.store import StateStore

    if status is not None:
        from pipewarden.errors import UnknownNameError
        from pipewarden.models import ProposalStatus

        known = [s.value for s in ProposalStatus]
        if status not in known:
            raise UnknownNameError("proposal status", status, known)
    if dataset is not None:
        from pipewarden.errors import UnknownNameError
        from pipewarden.policies.contract import list_contracts

        datasets = list_contracts()
        if dataset not in datasets:
            raise UnknownNameError("dataset", dataset, datasets)
    wanted = status or (None if all_ else ["pending", "needs_human"])
    proposals = [p for p in StateStore().list_proposals(wanted) if dataset is None or p.dataset == dataset]
    if as_json:
        _print_json([proposal_json(p) for p in proposals])
    else:
        console.print(proposals_table(proposals))


@inbox_app.command("show")
def inbox_show(proposal_id: Annotated[str, typer.Argument(help="Id or a unique prefix (4+ chars).")],
               as_json: JsonOpt = False) -> None:
    """Show one proposal: diagnosis, change, evidence, citations, decisions and its audit trail."""
    from pipewarden.inbox.render import proposal_detail, proposal_json
    from pipewarden.store import StateStore

    store = StateStore()
    p = store.get_proposal(proposal_id)
    decisions = store.decisions_for(p.id)
    audit = store.audit_entries(str(p.id))
    occurrences = store.occurrences(p.id)
    if as_json:
        _print_json({**proposal_json(p), "decisions": [d.model_dump(mode="json") for d in decisions],
                     "audit": [a.model_dump(mode="json") for a in audit],
                     "occurrences": [o.model_dump(mode="json") for o in occurrences]})
    else:
        console.print(proposal_detail(p, decisions, audit))
        if len(occurrences) > 1:  # one fault, one proposal: the loads it covers (approval re-runs them all)
            console.print(f"seen in {len(occurrences)} batches ({occurrences[0].label}); approval re-runs and "
                          "verifies every load:", markup=False, highlight=False)
            for o in occurrences:
                console.print(f"  {o.load_id or '(no load id)'}  {'first seen' if o.role == 'origin' else 'repeat'}"
                              f"  {o.attached_at.isoformat(timespec='seconds')}", markup=False, highlight=False)


ActorOpt = Annotated[str | None, typer.Option(
    "--as", help="Which of the identities you prove to decide as (default: $PIPEWARDEN_USER, else the proven one). "
                 "It never names someone you have not proven.")]
TokenFileOpt = Annotated[Path | None, typer.Option(
    "--token-file", help="A private file (chmod 600) holding your personal token; else $PIPEWARDEN_TOKEN, else "
                         "your login's `os_user` entry in approvers.yaml.")]


def _proven_actor(actor: str | None, token_file: Path | None) -> str:
    """The approver this command line proves (a personal token or the mapped OS login); `--as` only selects."""
    from pipewarden.inbox.identity import cli_identity
    from pipewarden.policies.approvers import Approvers
    from pipewarden.store import StateStore

    return cli_identity(StateStore(), Approvers.load(), claimed=actor, token_file=token_file).name


@inbox_app.command("approve")
def inbox_approve(proposal_id: Annotated[str, typer.Argument(help="Id or a unique prefix.")],
                  actor: ActorOpt = None,
                  token_file: TokenFileOpt = None,
                  reason: Annotated[str, typer.Option(help="Why (optional for approvals).")] = "",
                  wait: Annotated[bool, typer.Option(
                      "--wait/--no-wait", help="Apply, re-run and verify it here and show how it ended (default), "
                      "or only store the decision for the supervisor's worker (`pipewarden supervise`).")] = True,
                  as_json: JsonOpt = False) -> None:
    """Approve a proposal as the person you prove: the decision is stored, then the change is applied, re-run and
    verified (here, under the same lease a worker would take; with --no-wait, by the worker)."""
    _quiet_libraries()
    from pipewarden.inbox.service import approve, hand_off

    who = _proven_actor(_known_actor(actor), token_file)
    if wait:
        outcome = approve(proposal_id, who, via="cli", reason=reason)
    else:
        outcome = hand_off(proposal_id, "approve", who, reason, via="cli")
    _print_outcome(outcome, as_json)


@inbox_app.command("reject")
def inbox_reject(proposal_id: Annotated[str, typer.Argument(help="Id or a unique prefix.")],
                 reason: Annotated[str, typer.Option(help="Why the proposal is refused (required).")],
                 actor: ActorOpt = None, token_file: TokenFileOpt = None, as_json: JsonOpt = False) -> None:
    """Reject a proposal with a reason, as the person you prove."""
    from pipewarden.inbox.service import reject

    outcome = reject(proposal_id, _proven_actor(_known_actor(actor), token_file), reason, via="cli")
    _print_outcome(outcome, as_json)


def _known_actor(actor: str | None) -> str | None:
    """`--as NAME` must be a configured approver: a typo is an error naming the people, with a did-you-mean."""
    if actor is None:
        return None
    from pipewarden.errors import UnknownNameError
    from pipewarden.policies.approvers import Approvers

    approvers = Approvers.load()
    if approvers.get(actor.strip()) is None:
        raise UnknownNameError(f"approver (in {approvers.path})", actor, [a.name for a in approvers.all()])
    return actor


def _print_outcome(outcome: Any, as_json: bool) -> None:
    if as_json:
        _print_json(outcome.model_dump(mode="json"))
        return
    p = outcome.proposal
    console.print(f"proposal {p.short_id}: [bold]{p.status.value}[/]" + (f" ({p.status_reason})" if p.status_reason else ""))
    need = outcome.requirement
    if need is not None and not need.satisfied and outcome.decision.verdict == "approve":
        console.print(f"approval by {outcome.decision.actor} recorded; it {need.missing}"
                      + (f" (e.g. {', '.join(need.eligible_people[:3])})" if need.eligible_people else ""))
    if outcome.resume == "in_progress":
        console.print(f"the decision is stored; the worker {outcome.worker} is applying it now (one owner at a time). "
                      f"Follow it with `pipewarden inbox show {p.short_id}`")
    elif outcome.resume == "handed_off":
        console.print("the decision is stored; the next `pipewarden supervise` applies it, re-runs the batch and "
                      "verifies it (run `pipewarden supervise --once` if none is running)")
    if outcome.resume_error:
        err_console.print(f"[yellow]the decision is stored, but resuming the agent failed: {outcome.resume_error}[/]")
        err_console.print("[dim]hint:[/] `pipewarden supervise` retries it with backoff; "
                          f"`pipewarden inbox show {p.short_id}` shows the error")
        raise typer.Exit(1)


@inbox_app.command("expire")
def inbox_expire(as_json: JsonOpt = False) -> None:
    """Close open proposals whose approval window (their rule's TTL) has passed: they become expired."""
    from pipewarden.inbox.service import expire_stale

    expired = expire_stale()
    if as_json:
        _print_json([{"id": str(p.id), "status": p.status.value, "reason": p.status_reason} for p in expired])
        return
    for p in expired:
        console.print(f"proposal {p.short_id}: [bold]expired[/] ({p.status_reason})")
    console.print(f"{len(expired)} proposal(s) expired")


# ----------------------------------------------------------------------------------------------- approvers
@approvers_app.command("list")
def approvers_list(as_json: JsonOpt = False) -> None:
    """List the configured approvers, their roles and datasets, and their Slack ids."""
    from pipewarden.policies.approvers import Approvers

    approvers = Approvers.load()
    if as_json:
        _print_json([a.model_dump(mode="json") for a in approvers.all()])
        return
    from rich.table import Table

    table = Table("name", "roles", "datasets", "slack", "display name", title=str(approvers.path))
    for a in approvers.all():
        table.add_row(a.name, ", ".join(a.roles), ", ".join(a.datasets), a.slack_user_id or "", a.display_name)
    console.print(table)


@approvers_app.command("token")
def approvers_token(
    name: Annotated[str, typer.Argument(help="A configured approver.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Revoke NAME's tokens instead of issuing one.")] = False,
) -> None:
    """Issue a personal token for NAME (printed once; only its hash is stored), or revoke NAME's tokens."""
    from pipewarden.errors import UnknownNameError
    from pipewarden.policies.approvers import Approvers
    from pipewarden.store import StateStore

    approvers = Approvers.load()
    if approvers.get(name) is None:
        raise UnknownNameError(f"approver (in {approvers.path})", name, [a.name for a in approvers.all()])
    store = StateStore()
    if revoke:
        console.print(f"revoked {store.revoke_tokens(name)} token(s) of {name}")
        return
    sys.stdout.write(store.issue_token(name) + "\n")
    err_console.print(f"[dim]a personal token for {name}; it is shown once, keep it secret[/]")


# ----------------------------------------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the state DB (PIPEWARDEN_DATABASE_URL or SQLite in PIPEWARDEN_HOME) to REVISION with Alembic."""
    import sqlalchemy as sa

    from pipewarden import db
    from pipewarden.settings import get_settings

    settings = get_settings()
    url = settings.state_url
    if url.startswith("sqlite"):
        settings.ensure_home()
    engine = db.make_engine(url) if revision == "head" else None
    if engine is None:
        engine = sa.create_engine(url)
        db.upgrade(engine, revision)
    with engine.connect() as conn:
        current = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    console.print(f"state DB at revision {current} ({engine.url.render_as_string(hide_password=True)})")


# ----------------------------------------------------------------------------------------------- audit
@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the audit log and report every problem. Exits 5 if it does not verify.

    What it checks:
    - the hash chain: an entry edited, removed or reordered in the middle;
    - the signed anchor: the newest entries removed, the anchor edited or replaced;
    - every proposal against its audit trail: a status reset, a decision deleted or added behind the store;
    - this home's witness of its last verify: the log rolled back to an older copy.

    The anchor's key is PIPEWARDEN_HOME/audit_key, never in the state DB: copy it to every home that writes to the same state DB.

    It cannot catch someone who can write the state DB and also read the key, nor a rollback to a copy newer than this home's last verify (pipewarden/README.md, "What audit verify guarantees").
    """
    from pipewarden.inbox.render import audit_report
    from pipewarden.store import StateStore

    report = StateStore().verify_audit()
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        console.print(audit_report(report))
    if not report.ok:
        raise typer.Exit(5)


# ----------------------------------------------------------------------------------------------- schema
@schema_app.command("match")
def schema_match(
    reference: Annotated[Path, typer.Argument(help="The reference table (CSV or Parquet).")],
    new: Annotated[Path, typer.Argument(help="The new table whose columns are matched (CSV or Parquet).")],
    embeddings: Annotated[bool, typer.Option(help="Use MiniLM embeddings of column names.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """For each column of NEW: the best REFERENCE column (or none) with a score."""
    _quiet_libraries()
    from pipewarden.tools.schema_match import match_files

    embedder = None
    if embeddings:
        from pipewarden.knowledge.embedder import CachedEmbedder
        from pipewarden.settings import get_settings

        # names embedded once are read back from PIPEWARDEN_HOME; MiniLM loads only for a name it has not seen
        embedder = CachedEmbedder(get_settings().home / "cache" / "embeddings")
    report = match_files(reference, new, embedder=embedder)
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        return
    from rich.table import Table

    table = Table("new column", "reference column", "score", "cast", "reason")
    for m in report.matches:
        table.add_row(m.column, m.match or "[dim]none[/]", f"{m.score:.2f}", m.cast or "", m.reason)
    console.print(table)


# ----------------------------------------------------------------------------------------------- quality
quality_app = typer.Typer(help="Data quality: scan a table for suspicious cells; profile data and propose a contract's "
                          "expectations.", no_args_is_help=True)
app.add_typer(quality_app, name="quality")


@quality_app.command("suggest")
def quality_suggest(
    dataset: Annotated[str, typer.Argument(help="The dataset (a contract name).")],
    from_file: Annotated[Path | None, typer.Option("--from", help="Profile this CSV or Parquet file instead of the "
                                                   "dataset's accepted rows in the warehouse.")] = None,
    write: Annotated[bool, typer.Option("--write", help="Also write it to contracts/suggested/DATASET.yaml "
                                        "(a new numbered file if that exists; never overwritten).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Profile the data and propose an expectation suite for the contract (types, not-null, ranges, allowed sets,
    uniqueness), printed as YAML in the contract's format."""
    from pipewarden.tools.quality import suggest_suite, write_suggestion

    suggestion, text = suggest_suite(dataset, str(from_file) if from_file else None)
    written = write_suggestion(dataset, text) if write else None
    if as_json:
        _print_json({**suggestion.model_dump(mode="json"), "yaml": text, "written": written})
        return
    sys.stdout.write(text)
    if written:
        err_console.print(f"written to {written}")


@quality_app.command("scan")
def quality_scan(
    file: Annotated[Path, typer.Argument(help="The table to scan (CSV or Parquet).")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="Also hold it to this dataset's contract "
                                                "(types, allowed values, bounds, unique keys).")] = None,
    limit: Annotated[int, typer.Option(help="Flagged cells shown in the table (--json lists them all).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Find suspicious cells: missing values in disguise, format breaks, typos, outliers, values breaking a
    dependency between columns, duplicates. Rows are 0-based positions in the file."""
    from pipewarden.progress import progress
    from pipewarden.tools.quality_scan import scan_file

    with progress(f"scanning {file}", enabled=not as_json) as bar:
        report = scan_file(file, dataset=dataset, reporter=bar)
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        return
    from rich.markup import escape
    from rich.table import Table

    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(report.counts.items())) or "nothing"
    console.print(f"{escape(str(file))}: {report.rows} rows, {len(report.columns)} columns; "
                  f"{len(report.flags)} flagged cells ({counts})")
    if report.flags:
        table = Table("row", "column", "kind", "value", "reason")
        for f in report.flags[:limit]:
            table.add_row(str(f.row), escape(f.column or "(row)"), f.kind, escape(repr(f.value) if f.value is not None
                          else ""), escape(f.reason))
        console.print(table)
        if len(report.flags) > limit:
            console.print(f"[dim]... {len(report.flags) - limit} more (--limit N, or --json for all)[/]")


# ----------------------------------------------------------------------------------------------- slack
slack_app = typer.Typer(help="Slack set-up: the app manifest to create pipewarden's Slack app from.",
                        no_args_is_help=True)
app.add_typer(slack_app, name="slack")


@slack_app.command("manifest")
def slack_manifest(
    url: Annotated[str | None, typer.Option(help="The web inbox's public address (Slack posts button clicks to "
                                            "URL/slack/events). Default: PIPEWARDEN_PUBLIC_URL.")] = None,
    name: Annotated[str, typer.Option(help="The app's name in Slack.")] = "pipewarden",
    bot_name: Annotated[str, typer.Option(help="The bot user's display name.")] = "pipewarden",
    as_json: JsonOpt = False,
) -> None:
    """Print a Slack app manifest (YAML; JSON with --json): the bot scopes the code uses, interactivity at
    URL/slack/events, and a bot user. Paste it at api.slack.com/apps -> Create New App -> From a manifest."""
    from pipewarden.inbox.slack_manifest import slack_manifest as make_manifest
    from pipewarden.inbox.slack_manifest import to_dict, to_yaml
    from pipewarden.settings import get_settings

    manifest = make_manifest(url or get_settings().public_url, name=name, bot_name=bot_name)
    if as_json:
        _print_json(to_dict(manifest))
    else:
        sys.stdout.write(to_yaml(manifest))
    request_url = manifest.settings["interactivity"]["request_url"]
    if not request_url.startswith("https://"):
        err_console.print(f"note: Slack accepts only https request URLs; {request_url} is not. Serve the inbox "
                          "behind https and pass --url https://...", markup=False, highlight=False)


# ----------------------------------------------------------------------------------------------- contract
contract_app = typer.Typer(help="Data contracts: draft a new dataset's contract from a sample.", no_args_is_help=True)
app.add_typer(contract_app, name="contract")


@contract_app.command("init")
def contract_init(
    name: Annotated[str, typer.Argument(help="The new dataset's name (an identifier; names contracts/NAME.yaml).")],
    source: Annotated[str, typer.Option("--from", help="A CSV or Parquet sample, or warehouse:TABLE (a table of "
                                        "the project's warehouse, warehouse:SCHEMA.TABLE on a server).")],
    owner: Annotated[str | None, typer.Option(help="Who owns the dataset. Default: the first approver with the "
                                              "owner role in approvers.yaml, else your login.")] = None,
    sample_rows: Annotated[int, typer.Option(help="Read at most this many rows (the first ones).")] = 100_000,
    max_failure_rate: Annotated[float, typer.Option(help="Share of a batch's rows that may fail.")] = 0.05,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing contract or registration.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Draft contracts/NAME.yaml from a sample (types, nullability, ranges, allowed sets, key candidates), register
    the dataset in the project file and index the contract in the knowledge store. Review the draft."""
    _quiet_libraries()
    from pipewarden.tools.contract_draft import contract_target, default_owner, draft_contract, read_sample, write_draft

    contract_target(name, force=force)  # refuse early: nothing is read or written
    df = read_sample(source, sample_rows=sample_rows)
    draft = draft_contract(name, df, source=source, owner=owner or default_owner(name),
                           max_failure_rate=max_failure_rate)
    path = write_draft(draft, force=force)
    from pipewarden.knowledge.documents import contract_chunks
    from pipewarden.knowledge.index import index_chunks
    from pipewarden.policies.contract import load_contract
    from pipewarden.settings import get_settings

    with _stdout_to_stderr(as_json):
        indexed = index_chunks(contract_chunks(load_contract(name)))
    if as_json:
        _print_json({**draft.model_dump(mode="json"), "indexed": indexed.model_dump(mode="json")})
        return
    project = get_settings().project_config
    console.print(f"[green]wrote[/] {path.relative_to(project.root)} ({draft.rows} rows, {len(draft.columns)} columns, "
                  f"owner {draft.owner}) in {project.root}")
    console.print(f"  registered {name} in {project.file.name}; indexed {indexed.added + indexed.replaced} "
                  "knowledge chunks")
    if draft.key_candidates:
        console.print("  key candidates: " + "; ".join(", ".join(k) for k in draft.key_candidates))
    console.print(f"  the rules reject {draft.rows_rejected} of the sample's rows; review the file, then "
                  f"`pipewarden check FILE --dataset {name}`")


# ----------------------------------------------------------------------------------------------- knowledge
@knowledge_app.command("index")
def knowledge_index(as_json: JsonOpt = False) -> None:
    """Index contracts, runbooks and SQL lineage into the knowledge store (unchanged chunks are skipped)."""
    _quiet_libraries()
    from pipewarden.flows.knowledge_sync import sync_knowledge

    if as_json:
        report = sync_knowledge()
    else:
        from rich.progress import Progress

        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("embedding chunks", total=None)
            report = sync_knowledge(progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        console.print(f"indexed: {report}")


@knowledge_app.command("search")
def knowledge_search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    reader_name: Annotated[str, typer.Option("--as", metavar="PERSON|ROLE", help="Who reads: a person in "
                                             "approvers.yaml (their roles, on their datasets) or a role (e.g. "
                                             "analyst); chunks they may not read are never returned.")],
    limit: Annotated[int, typer.Option(help="How many hits.")] = 5,
    max_age_days: Annotated[float | None, typer.Option(help="Skip chunks older than this.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the knowledge index as a role, respecting access policy and freshness."""
    _quiet_libraries()
    from datetime import timedelta

    from pipewarden.knowledge.reader import resolve_reader, search_as

    reader = resolve_reader(reader_name)
    cites = search_as(query, reader, limit=limit,
                      max_age=timedelta(days=max_age_days) if max_age_days is not None else None)
    if as_json:
        _print_json([c.model_dump(mode="json") for c in cites])
        return
    if not cites:
        err_console.print(f"no matches readable by {reader.name} (roles: {', '.join(reader.roles)}); "
                          "`pipewarden knowledge index` builds the index", markup=False, highlight=False)
    for c in cites:
        console.print(f"[bold]{c.score:.2f}[/] {c.kind} {c.source} (owner {c.owner}, updated {c.updated_at})")
        console.print(f"    {c.excerpt[:160]}")


def main() -> None:
    """Entry point: run the app, turning PipewardenError into a clear message and exit code."""
    try:
        app()  # standalone: usage errors print usage and exit 2, typer.Exit(n) exits n
    except PipewardenError as exc:
        from rich.markup import escape  # messages carry data ([owner], file names): never markup

        err_console.print(f"[red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err_console.print(f"[dim]hint:[/] {escape(exc.hint)}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
