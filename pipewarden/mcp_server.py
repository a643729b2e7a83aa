"""`pipewarden mcp`: the approval queue and the read-only tools, for IDE agents, over the Model Context Protocol.

Built on the official `mcp` SDK (`mcp.server.mcpserver.MCPServer`, 2.x). Two transports:

- **stdio** (`pipewarden mcp`): the IDE starts the command; the caller is the owner of the personal token in
  `PIPEWARDEN_TOKEN` (`pipewarden approvers token NAME` prints one).
- **streamable HTTP** (`pipewarden mcp --http PORT`, or `/mcp` beside the web inbox under `pipewarden serve`): every
  request carries `Authorization: Bearer <token>`. `BearerGate` checks it as the inbox's `/api/*` does (401 and an
  audited `sign_in_failed` without a believed token; 429 while an address keeps failing), then the SDK's bearer
  middleware asks `TokenAuth` and binds the session to the token's owner (a session id sent by anyone else is
  refused).

Either way the token is checked again on every tool call against the state DB and the approvers file, so a revoked
token or a person removed from `approvers.yaml` loses access at once. Who the caller is never comes from a tool
argument: there is no `actor` parameter.

Tools (each a thin wrapper over the function the CLI calls):

| tool | what | who |
|---|---|---|
| `whoami` | the caller's name, roles and datasets | any approver |
| `inbox_list`, `inbox_show` | the queue (filters: status, dataset) and one proposal with its decisions and audit | any approver |
| `inbox_decide` | approve or reject as the caller, through `inbox.service.decide` (`via="mcp"`): the same approval rules, separation of duties, edit gate and audit as every other front end | who the rules allow |
| `check` | a CSV/Parquet file against a dataset's contract | any approver |
| `schema_match` | the schema-drift matcher between two files | any approver |
| `quality_scan` | cell-level error detection on a file (`pipewarden quality scan`), with or without a contract | any approver |
| `knowledge_search` | the knowledge index, as the caller's roles may read it | any approver |
| `column_lineage` | the SQL models and model columns computed from a column (sqlglot) | any approver |
| `audit_verify` | the audit log's hash chain | any approver |

Files named by `check`, `schema_match` and `quality_scan` must lie inside the project folder (relative paths resolve against it):
an agent reaching the server over HTTP cannot make it read anything else on the machine.

Errors are tool errors (`isError: true`) whose text starts with a category (`unauthenticated`, `forbidden`,
`not found`, `conflict`, `invalid`) and carries the message and the hint the CLI would print.

Public names: `build_server(*, token=None, store=None, embedder=None, vectors=None)`, `http_app(server, *, host=...)`, `mount(app, *, host)`,
`run_stdio()`, `run_http(host, port)`, `TokenAuth`, `BearerGate`, `Caller`, `TOOL_NAMES`, `TOKEN_ENV`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel, ConfigDict

from pipewarden.errors import (
    Forbidden,
    InvalidTransition,
    NotApproved,
    PipewardenError,
    UnknownNameError,
    UserError,
)
from pipewarden.inbox.identity import TOKEN_ENV as IDENTITY_TOKEN_ENV

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken
    from starlette.applications import Starlette

    from pipewarden.knowledge.store import VectorStore
    from pipewarden.policies.approvers import Approver
    from pipewarden.ports import Embedder
    from pipewarden.store import StateStore

TOKEN_ENV = IDENTITY_TOKEN_ENV  # the same variable the CLI's decisions read (`inbox.identity`)
TOKEN_HINT = "ask for a personal token (`pipewarden approvers token NAME` prints one)"
TOOL_NAMES = ("whoami", "inbox_list", "inbox_show", "inbox_decide", "check", "schema_match", "quality_scan",
              "knowledge_search", "column_lineage", "audit_verify")
OPEN = ("pending", "needs_human")


class Unauthenticated(UserError):
    """No token, or one that is unknown or revoked. Nothing was read or changed."""


class NotReadable(UnknownNameError):
    """No proposal with this id that the caller may read: the same answer whether it does not exist or is on a
    dataset where they hold no role but reporter (as the web inbox answers 404); it lists no other ids."""

    def __init__(self, ref: str) -> None:
        UserError.__init__(self, f"no proposal {ref!r} that you may read",
                           hint="inbox_list lists the proposals you may read: those on datasets where "
                                "approvers.yaml gives you a role other than reporter")
        self.what, self.name, self.known = "proposal", ref, []


class Caller(BaseModel):
    """Who a tool call speaks for: the approver a personal token belongs to."""

    model_config = ConfigDict(frozen=True)
    name: str
    roles: list[str]
    datasets: list[str]


class TokenAuth:
    """The SDK's `TokenVerifier` over pipewarden's personal tokens (only their sha256 is stored)."""

    def __init__(self, store_factory: Callable[[], StateStore]) -> None:
        self._store = store_factory

    async def verify_token(self, token: str) -> AccessToken | None:
        import anyio.to_thread
        from mcp.server.auth.provider import AccessToken

        name = await anyio.to_thread.run_sync(self._store().approver_for_token, token)
        if not name:
            return None
        return AccessToken(token=token, client_id=name, subject=name, scopes=[])


def _category(exc: PipewardenError) -> str:
    if isinstance(exc, Unauthenticated):
        return "unauthenticated"
    if isinstance(exc, (Forbidden, NotApproved)):
        return "forbidden"
    if isinstance(exc, UnknownNameError):
        return "not found" if exc.what == "proposal" else "invalid"
    if isinstance(exc, InvalidTransition):
        return "conflict"
    return "invalid"


def _tool_error(exc: PipewardenError) -> Exception:
    from mcp.server.mcpserver.exceptions import ToolError

    text = f"{_category(exc)}: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else "")
    return ToolError(text)


def build_server(*, token: str | None = None, store: Callable[[], StateStore] | None = None,
                 embedder: Embedder | None = None, vectors: VectorStore | None = None) -> MCPServer:
    """The MCP server with every tool registered. `token` is the stdio caller's personal token (HTTP callers bring
    theirs on each request); `store` makes the state store (default `StateStore()`, made per call so settings
    changes and tests see a fresh one); `embedder` and `vectors` serve knowledge search (default: MiniLM and the
    configured Qdrant store, loaded on the first search)."""
    from mcp.server.auth.settings import AuthSettings

    from pipewarden import __version__

    def make_store() -> StateStore:
        if store is not None:
            return store()
        from pipewarden.store import StateStore

        return StateStore()

    server: MCPServer = MCPServer(
        "pipewarden", version=__version__,
        instructions="pipewarden's approval queue (list, show, decide as your token's owner) and read-only data "
                     "tools: contract checks, schema matching, column lineage, knowledge search, audit verify.",
        token_verifier=TokenAuth(make_store),
        # Personal tokens, not OAuth: no authorization server is advertised (resource_server_url=None means no
        # protected-resource metadata route); issuer_url is required by the SDK's settings but unused without one.
        auth=AuthSettings(issuer_url="http://127.0.0.1", resource_server_url=None),  # type: ignore[arg-type]
        log_level="WARNING",
    )

    def caller(ctx: Context) -> Caller:
        person = approver(ctx)
        return Caller(name=person.name, roles=list(person.roles), datasets=list(person.datasets))

    def approver(ctx: Context) -> Approver:
        """The approver this call speaks for, proven now: HTTP from the request's verified bearer token (the
        middleware ran for this very request), stdio from PIPEWARDEN_TOKEN; either way looked up again here."""
        from pipewarden.policies.approvers import Approvers

        request = ctx.request_context.request
        if request is not None:
            user = getattr(request, "scope", {}).get("user")
            access = getattr(user, "access_token", None)
            presented = getattr(access, "token", None)
            if not presented:
                raise Unauthenticated("no bearer token on this request", hint=f"send `Authorization: Bearer "
                                      f"<token>`; {TOKEN_HINT}")
        else:
            presented = token
            if not presented:
                raise Unauthenticated(f"no personal token: {TOKEN_ENV} is not set for `pipewarden mcp`",
                                      hint=f"set {TOKEN_ENV} in the MCP server's environment; {TOKEN_HINT}")
        name = make_store().approver_for_token(presented)
        if not name:
            raise Unauthenticated("the token is unknown or has been revoked", hint=TOKEN_HINT)
        approvers = Approvers.load()
        person: Approver | None = approvers.get(name)
        if person is None:
            raise Forbidden(f"{name!r} holds a token but is no longer in {approvers.path}",
                            hint="ask a project owner to add you back to approvers.yaml")
        return person

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Turn pipewarden's errors into tool errors a model can read (category, message, hint)."""
        import functools

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except PipewardenError as exc:
                raise _tool_error(exc) from exc

        return wrapper

    def project_file(path: str) -> Path:
        """An input file, which must be inside the project folder (an allow-list, not a deny-list)."""
        from pipewarden.settings import get_settings

        root = get_settings().project_root.resolve()
        p = Path(path).expanduser()
        resolved = (p if p.is_absolute() else root / p).resolve()
        if not resolved.is_relative_to(root):
            raise Forbidden(f"{path}: outside the project folder {root}",
                            hint="the MCP server reads files inside the project only; copy the file there")
        return resolved

    # ------------------------------------------------------------------ identity
    @server.tool(description="Who this token belongs to: name, roles and the datasets they apply to.")
    @guarded
    def whoami(ctx: Context) -> dict[str, Any]:
        return caller(ctx).model_dump()

    # ------------------------------------------------------------------ the inbox
    @server.tool(description="The approval queue, newest first. status: 'open' (default: pending and needs_human), "
                             "'all', or any of pending, needs_human, approved, rejected, applying, applied, verified, "
                             "rolled_back, expired.")
    @guarded
    def inbox_list(ctx: Context, status: list[str] | None = None, dataset: str | None = None,
                   limit: int = 50) -> dict[str, Any]:
        from pipewarden.inbox.render import proposal_json
        from pipewarden.models import ProposalStatus

        person = approver(ctx)
        known = [s.value for s in ProposalStatus]
        wanted: list[str] | None = []
        for s in status or ["open"]:
            if s == "all":
                wanted = None
                break
            if s == "open":
                wanted.extend(OPEN)  # type: ignore[union-attr]
            elif s in known:
                wanted.append(s)  # type: ignore[union-attr]
            else:
                raise UnknownNameError("proposal status", s, [*known, "open", "all"])
        if not 1 <= limit <= 500:
            raise UserError(f"limit={limit} is out of range", hint="ask for 1 to 500 proposals")
        # Only datasets where the caller holds a role other than reporter (`Approver.may_read`, as the web inbox);
        # an unreadable dataset asked for by name reads as one with no proposals.
        st = make_store()
        readable = [d for d in st.count_proposals_by("dataset", {})
                    if person.may_read(d) and (dataset is None or d == dataset)]
        filters: dict[str, list[str]] = {"dataset": readable}
        if wanted is not None:
            filters["status"] = wanted
        proposals = st.find_proposals(filters, limit=limit) if readable else []
        return {"count": len(proposals), "proposals": [proposal_json(p) for p in proposals]}

    @server.tool(description="One proposal (full id or a unique prefix of 4+ characters): diagnosis, change, dry-run "
                             "evidence, citations, decisions, audit trail, and who must still approve.")
    @guarded
    def inbox_show(ctx: Context, proposal: str) -> dict[str, Any]:
        from pipewarden.inbox.render import proposal_detail_json
        from pipewarden.inbox.service import proposal_view

        who = approver(ctx)
        try:
            view = proposal_view(proposal, store=make_store())
        except UnknownNameError:
            raise NotReadable(proposal) from None
        if not who.may_read(view.proposal.dataset):
            raise NotReadable(proposal)
        need = view.requirement
        return {**proposal_detail_json(view.proposal, view.decisions, view.audit, event=view.event),
                "requirement": need.model_dump(mode="json") if need is not None else None,
                "you": who.name}

    @server.tool(description="Approve or reject a proposal as the token's owner, under the same approval rules as "
                             "the web inbox, Slack and the CLI (audited). A rejection needs a reason. An approval "
                             "that completes the rule applies the change, re-runs the batch and verifies it.")
    @guarded
    def inbox_decide(ctx: Context, proposal: str, verdict: Literal["approve", "reject"],
                     reason: str = "") -> dict[str, Any]:
        from pipewarden.inbox.render import outcome_json
        from pipewarden.inbox.service import decide

        who = caller(ctx)
        outcome = decide(proposal, verdict, who.name, reason, via="mcp", store=make_store())
        need = outcome.requirement
        return {**outcome_json(outcome),
                "requirement": need.model_dump(mode="json") if need is not None else None}

    # ------------------------------------------------------------------ data tools (read-only)
    @server.tool(description="Check a CSV or Parquet file (inside the project folder) against a dataset's data "
                             "contract without landing it: schema errors, failed checks, rejected rows.")
    @guarded
    def check(ctx: Context, file: str, dataset: str) -> dict[str, Any]:
        from pipewarden.tools.checks import check_file

        caller(ctx)
        path = project_file(file)
        report = check_file(path, dataset)
        return {"file": str(path), "dataset": dataset, **report.result.model_dump(mode="json"),
                "failure_rate": report.failure_rate}

    @server.tool(description="The schema-drift matcher: for each column of NEW, the best REFERENCE column (or none), "
                             "a score, a cast and the reason. Files inside the project; a .yaml reference is read as "
                             "a contract. embeddings=true adds MiniLM name similarity (slower to start).")
    @guarded
    def schema_match(ctx: Context, reference: str, new: str, embeddings: bool = False) -> dict[str, Any]:
        from pipewarden.tools.schema_match import match_files

        caller(ctx)
        embedder = None
        if embeddings:
            from pipewarden import runtime

            embedder = runtime.current().embedder()
        report = match_files(project_file(reference), project_file(new), embedder=embedder)
        return report.model_dump(mode="json")

    @server.tool(description="Cell-level error detection on a CSV or Parquet file inside the project: missing values "
                             "in disguise, format breaks, typos, outliers, broken dependencies and duplicates, each as "
                             "{row, column, kind, reason, value} (row: 0-based position in the file). dataset adds "
                             "that contract's types, allowed values, ranges and keys.")
    @guarded
    def quality_scan(ctx: Context, file: str, dataset: str | None = None) -> dict[str, Any]:
        from pipewarden.tools.quality_scan import scan_file

        caller(ctx)
        return scan_file(project_file(file), dataset=dataset).model_dump(mode="json")

    @server.tool(description="Search the knowledge index (contracts, runbooks, lineage, past decisions) as the "
                             "token's owner: only chunks one of their roles may read, on their datasets.")
    @guarded
    def knowledge_search(ctx: Context, query: str, limit: int = 5,
                         max_age_days: float | None = None) -> dict[str, Any]:
        from pipewarden.knowledge.reader import Reader, search_as

        who = caller(ctx)
        reader = Reader(name=who.name, roles=who.roles, datasets=who.datasets)
        cites = search_as(query, reader, limit=limit, embedder=embedder, store=vectors,
                          max_age=timedelta(days=max_age_days) if max_age_days is not None else None)
        return {"reader": reader.model_dump(), "citations": [c.model_dump(mode="json") for c in cites]}

    @server.tool(description="Column lineage from the project's SQL models (sqlglot): the models that read TABLE."
                             "COLUMN (a raw table such as raw_flights, or a model) and every model column computed "
                             "from it.")
    @guarded
    def column_lineage(ctx: Context, table: str, column: str) -> dict[str, Any]:
        from pipewarden.tools.lineage import (
            ColumnLineageResult,
            ModelColumn,
            affected_models,
            downstream_of,
            model_columns,
            raw_schemas,
        )

        caller(ctx)
        down = downstream_of(table, column)  # an unknown table fails here, naming the known ones
        reading = affected_models(table, column)
        if not down and not reading:  # unread, or misspelt: a misspelt column must not look like an unread one
            columns = {t: list(cols) for t, cols in raw_schemas().items()}
            if table not in columns:
                columns.update(model_columns())
            if column not in columns.get(table, [column]):
                raise UnknownNameError(f"column of {table}", column, columns[table])
        return ColumnLineageResult(
            table=table, column=column, models_reading=reading,
            downstream=[ModelColumn(model=m, column=c) for m, c in down],
        ).model_dump(mode="json")

    @server.tool(description="Check the audit log's hash chain; reports the first broken entry, if any.")
    @guarded
    def audit_verify(ctx: Context) -> dict[str, Any]:
        caller(ctx)
        return make_store().verify_audit().model_dump(mode="json")

    return server


# ------------------------------------------------------------------------------------------ transports
def run_stdio() -> None:
    """Serve over stdin/stdout as the owner of `PIPEWARDEN_TOKEN` (checked on every call)."""
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    build_server(token=token).run("stdio")


class BearerGate:
    """ASGI middleware in front of `/mcp`: the inbox's own bearer check (`inbox.auth.bearer_actor`), so a missing,
    unknown or revoked token is answered 401 and audited (`sign_in_failed`), and an address that keeps failing is
    throttled (429 with Retry-After), exactly as on `/api/*`. Requests that pass go on to the SDK's bearer
    middleware, which binds the session to the token's owner."""

    def __init__(self, app: Any, store: Callable[[], StateStore]) -> None:
        self.app, self._store = app, store

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import anyio.to_thread
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        from pipewarden.inbox import auth

        request = Request(scope)
        try:
            await anyio.to_thread.run_sync(auth.bearer_actor, request, self._store())
        except (auth.SignInRequired, auth.SignInThrottled) as exc:
            throttled = isinstance(exc, auth.SignInThrottled)
            headers = ({"Retry-After": str(exc.retry_after_s)} if isinstance(exc, auth.SignInThrottled)
                       else {"WWW-Authenticate": 'Bearer realm="pipewarden"'})
            response = JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=429 if throttled else 401,
                                    headers=headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def http_app(server: MCPServer, *, host: str = "127.0.0.1", store: Callable[[], StateStore] | None = None) -> Any:
    """The streamable-HTTP app (route `/mcp`), bearer tokens required (`BearerGate`, then the SDK's check). Its
    lifespan runs the session manager. DNS-rebinding protection (Host and Origin allow-lists) is on when bound to a
    loopback address."""
    def default_store() -> StateStore:
        from pipewarden.store import StateStore

        return StateStore()

    app = server.streamable_http_app(host=host)
    app.add_middleware(BearerGate, store=store or default_store)  # outermost: it runs before the SDK's
    return app


def mount(app: Any, *, host: str = "127.0.0.1") -> None:
    """Serve `/mcp` beside the web inbox (a FastAPI app): one route, `/mcp`, handed to the MCP app as it is (every
    other path stays the inbox's, its 404 page included); the MCP session manager starts and stops with the
    inbox's lifespan."""
    mcp_app: Starlette = http_app(build_server(), host=host)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with mcp_app.router.lifespan_context(mcp_app), inner(a) as state:
            yield state

    app.router.lifespan_context = lifespan
    from starlette.routing import Route

    app.router.routes.append(Route("/mcp", endpoint=mcp_app))  # an ASGI app endpoint: the path is passed on as is


def run_http(host: str, port: int) -> None:
    """Serve streamable HTTP alone at http://HOST:PORT/mcp until interrupted."""
    import uvicorn

    uvicorn.run(http_app(build_server(), host=host), host=host, port=port, log_level="warning")
