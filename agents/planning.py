"""The validate-retry-fallback loop around the planners (invariant 2).

`plan_mapping` asks the primary planner up to `max_attempts` times, sending the previous attempts' errors back as
feedback; an answer counts only when `validate` finds nothing wrong with it. When the primary gives up (invalid
answers, or its endpoint is unavailable), the offline planner answers once. If nothing valid comes out, the
outcome has no answer and `tried` says why, line by line, so the event can go to a human ("needs a human").

`validate_mapping` holds the deterministic checks every answer must pass; callers add their own (the dry-run)
by composing validators: `validate=lambda a: validate_mapping(a, ctx) or dry_run_errors(a)`.

Public names: `PlanOutcome`, `plan_mapping`, `validate_mapping`.
"""

from __future__ import annotations

from collections.abc import Callable
from difflib import get_close_matches

from pydantic import BaseModel, Field

from agents.planner import (
    CONTRACT_TYPES,
    OFFLINE,
    DriftContext,
    MappingAnswer,
    Planner,
    PlannerUnavailable,
)
from pipewarden.errors import ModelRetry

Validator = Callable[[MappingAnswer], list[str]]


class PlanOutcome(BaseModel):
    """What planning ended with: the accepted answer (or None), whose it is, and every attempt in words."""

    answer: MappingAnswer | None = None
    planner: str | None = Field(default=None, description="Name of the planner whose answer was accepted.")
    tried: list[str] = Field(default_factory=list, description="One line per attempt: '<planner> attempt N: ...'.")

    @property
    def accepted(self) -> bool:
        return self.answer is not None


def plan_mapping(
    ctx: DriftContext,
    *,
    primary: Planner,
    fallback: Planner | None = None,
    validate: Validator,
    max_attempts: int = 2,
) -> PlanOutcome:
    """Ask `primary` up to `max_attempts` times, then `fallback` once; accept the first answer `validate` passes.

    Feedback to a retry is every error of the earlier attempts, each prefixed with its attempt number. A
    `ModelRetry` from the planner counts as a failed attempt; `PlannerUnavailable` ends the primary's turn at once
    (the client has already retried). The fallback is skipped when it is the primary, or both are offline. A
    deterministic (offline) primary is asked once: asking again would give the same answer.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    tried: list[str] = []
    attempts = 1 if primary.name == OFFLINE else max_attempts
    answer = _ask(primary, ctx, validate, attempts, tried)
    if answer is not None:
        return PlanOutcome(answer=answer, planner=primary.name, tried=tried)
    if fallback is not None and fallback is not primary and not (primary.name == OFFLINE and fallback.name == OFFLINE):
        answer = _ask(fallback, ctx, validate, 1, tried)
        if answer is not None:
            return PlanOutcome(answer=answer, planner=fallback.name, tried=tried)
    return PlanOutcome(answer=None, planner=None, tried=tried)


def _ask(planner: Planner, ctx: DriftContext, validate: Validator, attempts: int, tried: list[str]) -> MappingAnswer | None:
    feedback: list[str] = []
    for n in range(1, attempts + 1):
        label = f"{planner.name} attempt {n}"
        try:
            answer = planner.draft_mapping(ctx, list(feedback) or None)
        except PlannerUnavailable as exc:
            tried.append(f"{label}: unavailable: {exc.message}")
            return None
        except ModelRetry as exc:
            tried.append(f"{label}: {exc.message}")
            feedback.append(f"attempt {n}: {exc.message}")
            continue
        errors = validate(answer)
        if not errors:
            tried.append(f"{label}: accepted")
            return answer
        tried.append(f"{label}: " + "; ".join(errors))
        feedback.extend(f"attempt {n}: {e}" for e in errors)
    return None


def validate_mapping(answer: MappingAnswer, ctx: DriftContext) -> list[str]:
    """The deterministic checks on a mapping; returns one readable error per problem (empty: it passes).

    Every rename key is an incoming column; every rename value is a contract column the batch does not already
    have (no hallucinated columns, no collisions); no two incoming columns feed one contract column; every cast
    targets a contract column, with a type from the vocabulary equal to the contract's; every cited chunk is one
    of the context's citations.
    """
    errors: list[str] = []
    incoming = ctx.incoming_names
    contract = ctx.contract_names
    present = ctx.present_contract_columns
    renamed_away = set(answer.renames) & present
    targets: dict[str, str] = {}
    for src, dst in answer.renames.items():
        if src not in incoming:
            errors.append(f"renames unknown column {src!r}{_did_you_mean(src, incoming)}; incoming columns: {_names(incoming)}")
        if dst not in contract:
            errors.append(f"renames {src!r} to {dst!r}, which is not a contract column{_did_you_mean(dst, contract)}")
            continue
        if dst != src and dst in present and dst not in renamed_away:
            errors.append(f"renames {src!r} to {dst!r}, but the batch already has a column {dst!r}")
        if dst in targets:
            errors.append(f"renames both {targets[dst]!r} and {src!r} to {dst!r}; map at most one column to it")
        else:
            targets[dst] = src
    for column, typ in answer.casts.items():
        expected = ctx.contract_type(column)
        if expected is None:
            errors.append(f"casts {column!r}, which is not a contract column{_did_you_mean(column, contract)}")
            continue
        if typ not in CONTRACT_TYPES:
            errors.append(f"casts {column!r} to {typ!r}, which is not a contract type ({', '.join(CONTRACT_TYPES)})")
        elif typ != expected:
            errors.append(f"casts {column!r} to {typ}, but the contract says {expected}")
    known = ctx.citation_ids
    for cid in answer.cited_chunks:
        if cid not in known:
            errors.append(f"cites chunk {cid!r}, which is not among the citations given ({_names(known)})")
    return errors


def _did_you_mean(name: str, known: list[str]) -> str:
    close = get_close_matches(name, known, n=2)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _names(names: list[str], limit: int = 12) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")

