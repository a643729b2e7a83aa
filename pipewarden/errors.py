"""The error hierarchy. Every message names the input, what was wrong and what to do next.

`PipewardenError` is the root. The CLI catches it and prints its message without a traceback;
anything else escaping is a bug (a "crash", in Prefect's sense) and is shown in full.
"""

from __future__ import annotations

from difflib import get_close_matches


class PipewardenError(Exception):
    """Root of every error pipewarden raises on purpose. `exit_code` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)


class UserError(PipewardenError):
    """The caller misused pipewarden: a bad flag, a missing file, an unknown name."""

    exit_code = 2


class ConfigError(UserError):
    """A setting or a policy file is wrong."""


class UnknownNameError(UserError):
    """A name (dataset, proposal, agent) that does not exist; suggests the closest known ones."""

    def __init__(self, what: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        close = get_close_matches(name, list(known), n=3)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else None
        known_txt = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown {what} {name!r} (known: {known_txt})", hint=hint)
        self.what, self.name, self.known = what, name, list(known)


class InputFileError(UserError):
    """An input file that cannot be read: missing, empty, truncated, in the wrong encoding."""

    def __init__(self, path: object, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path, self.problem = str(path), problem


class ContractViolation(PipewardenError):
    """A batch broke its data contract badly enough that the pipeline halted before transform."""

    exit_code = 3


class BatchHalted(PipewardenError):
    """A guarded batch halted (schema drift, too many failed checks, a halting quality finding). The message names
    the dataset, the load, the event and the proposal once there is one; the hint names the command to look at it.
    `result` is the `GuardResult` (rows in, quarantined, event ids). Fix it in the inbox; exit 3."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None, result: object = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


class NotApproved(PipewardenError):
    """An effectful tool was called without an approved Decision (invariant 1). Stop; ask a human."""

    exit_code = 4


class InvalidTransition(PipewardenError):
    """A proposal cannot move from its current status to the requested one (already decided, expired...)."""

    exit_code = 4


class ModelRetry(PipewardenError):
    """An LLM answer failed validation; ask the model again with this message."""


class AuditChainBroken(PipewardenError):
    """The audit log's hash chain does not verify; the message names the first broken entry."""

    exit_code = 5


class Forbidden(NotApproved):
    """The identity may not do this: not a configured approver, lacks the role for the proposal's dataset, is a
    system or agent identity, or already approved (two-person rule). HTTP 403, exit 4. Nothing was changed."""


class Expired(InvalidTransition):
    """The proposal's approval window (`expires_at`, set by the approval rule's TTL) has passed. HTTP 409."""


class InvalidField(UserError):
    """One field of some input (an API body, `--field key=value`, a JSON file) fails validation. `loc` names the
    field (as pydantic does: `("failed", 0, "failed_rows")`), `problem` says what is wrong. HTTP 422, exit 2."""

    def __init__(self, loc: tuple[str | int, ...], problem: str, *, hint: str | None = None,
                 errors: list[dict[str, object]] | None = None) -> None:
        self.loc, self.problem = tuple(loc), problem
        self.field = ".".join(str(x) for x in self.loc) or "body"
        self.errors = errors or [{"loc": list(self.loc), "problem": problem}]
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"field {self.field!r}: {problem}{more}" if self.loc else f"{problem}{more}", hint=hint)
