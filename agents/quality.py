"""The quality agent, a spec (`SPEC`): from a `CheckFailed` or `QualityAnomaly` event to a verified fix.

    gather -> plan -> prove -> propose -> (shared tail: heed -> submit -> await_decision -> apply -> verify)

- gather (`QualityCase`, read once): knowledge citations about the dataset's contract and the quality runbook
  (read as the agent's role), the failing batch as the pipeline saw it (`tools.quality_fix.load_case`, kept for
  the later steps of the process), the root cause (which load and source file, where the bad rows concentrate,
  which upstream reference, which downstream models), and the deterministic candidates (`draft_candidates`), each
  dry-run on the batch.
- plan: the planner (`agents.llm.plan`; the OpenAI planner when an endpoint is configured, then the offline one,
  whose solver takes the first candidate that heals) answers a `QualityAnswer`. Every answer is validated: a known
  action for this fault, real columns only, the predicate through `tools.sql_guard.check_predicate`, a quarantine
  no larger than the policy allows, citations that exist, and a dry-run that heals the batch (a dedupe must take out
  exactly the extra copies). The dry-run of the answer that counts is its proof (`QualityProof`), made once.
  Nothing valid: the proposal says "needs a human" with what was tried.
- propose: the chosen change proven on the batch becomes the proposal's evidence, with its risk (a contract change
  loosens the contract: high).

Verification (`verify_quality`): for a quarantine, dedupe rule or contract change, the batch re-runs through the
pipeline under the new versions, and passes when validate no longer halts it and the event's own anomaly is not
found again (a different finding on the same batch is a different event and proposal). A re-ingest cannot be
verified by re-running the same bytes: it passes once the request is recorded as the active `reingest:<dataset>`
version (with the load, the source and the reason); the re-delivered load is judged by the detectors when it lands.

What people decided on this fault before (`case.precedents`, gathered once) is heard before drafting: the model's
request carries it as data (`agents.precedent.with_precedents`), an answer whose change a person rejected for the
fault is refused before its dry-run (`agents.precedent.refusal`), and `offline_solve` leaves such a candidate out
and puts one people accepted first (`agents.precedent.rank`), saying so in its rationale. The shared tail's `heed`
stays the safety net: it may still swap the planner's pick for another drafted candidate (`alternatives`: every
other candidate that heals and passes the same validation).

Public names: `SPEC`, `AGENT`, `QualityAnswer`, `BoundEdit`, `QualityCase`, `QualityProof`, `verify_quality`,
`answer_to_change`, `validate_answer`, `offline_solve`, `candidate_answers`, `alternatives`.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.agents.lifecycle import Verification, proposal_for
from pipewarden.agents.precedent import Precedent, blocked_by, change_identity, gather_precedents, rank, refusal
from pipewarden.agents.spec import AgentSpec, Plan
from pipewarden.events import CheckFailed, QualityAnomaly
from pipewarden.models import (
    Change,
    Citation,
    ContractChange,
    DedupeRule,
    DryRun,
    NoChange,
    Proposal,
    ProposalStatus,
    Risk,
)
from pipewarden.runtime import Runtime
from pipewarden.store import StateStore

log = logging.getLogger(__name__)
AGENT = "quality"
READER_ROLE = "engineer"

TASK = (
    "A batch of the dataset failed a data quality check. Propose ONE fix from the actions: quarantine (a SQL boolean "
    "predicate over the batch's columns that matches only the bad rows, with the reason), dedupe_rule (key columns, "
    "keep first or last), reingest (the rows are missing and the source must deliver again), contract_change (only "
    "when the contract is what is wrong: give the new bounds or allowed values). The data holds the finding, the "
    "root cause evidence, the batch's columns and drafted candidates with their dry-runs."
)
RULES = [
    "A quarantine predicate is one boolean expression over the listed columns: no subqueries, no statements.",
    "Prefer the smallest fix whose dry-run heals the batch; never quarantine most of the batch.",
    "A contract change loosens the contract: choose it only when the evidence says the data is real.",
    "Cite only chunk ids listed under citations.",
]


class BoundEdit(BaseModel):
    """A contract column edit for a contract_change: new bounds (null keeps the current one) and allowed values."""

    model_config = ConfigDict(extra="forbid")
    column: str
    min: float | None = None
    max: float | None = None
    add_allowed: list[str] = Field(default_factory=list)


class QualityAnswer(BaseModel):
    """What a planner answers for a quality fault (strict: every field typed, nothing extra)."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["quarantine", "dedupe_rule", "reingest", "contract_change"]
    predicate: str = Field(default="", description="quarantine: SQL boolean over the batch's columns; else ''.")
    reason: str = Field(description="Why, in one line; a quarantine stores it with every row it takes out.")
    keys: list[str] = Field(default_factory=list, description="dedupe_rule: the key columns.")
    keep: Literal["first", "last"] = "last"
    order_by: str | None = Field(default=None, description="dedupe_rule: the column that orders copies; null: batch order.")
    bounds: list[BoundEdit] = Field(default_factory=list, description="contract_change: the column edits.")
    rationale: str = ""
    cited_chunks: list[str] = Field(default_factory=list)


class QualityCase(BaseModel):
    """What the agent gathered for one quality event, read once: the event, the citations, and the planner's
    context (the finding, the root cause, the batch's columns, the drafted candidates with their dry-runs)."""

    event: Annotated[CheckFailed | QualityAnomaly, Field(discriminator="kind")]
    citations: list[Citation] = Field(default_factory=list)
    context: dict[str, Any]
    precedents: list[Precedent] = Field(default_factory=list)
    """What people decided on this fault before (`agents.precedent.gather_precedents`), heard before drafting."""


class QualityProof(BaseModel):
    """An answer's change and its dry-run on the failing batch."""

    change: Change
    evidence: DryRun


# --------------------------------------------------------------------------- the batch (cached per process)
_CASES: dict[tuple[str, tuple[Any, ...]], Any] = {}


def _fault_case(ev: Any, store: StateStore) -> Any:
    """The FaultCase (the failing batch as the pipeline saw it, `tools.quality_fix.load_case`) for an event, read
    by gather and kept for the later steps of the same process; read again when any version it depends on changed
    (mapping, rules, contract), or in a process that did not gather it (a crash between the steps)."""
    from pipewarden.tools.quality_fix import load_case

    stamp = tuple((v.number if (v := store.active_version(f"{kind}:{ev.dataset}")) else None)
                  for kind in ("mapping", "quarantine", "dedupe", "contract"))
    key = (str(ev.id), stamp)
    if key not in _CASES:
        if len(_CASES) > 8:
            _CASES.clear()
        _CASES[key] = load_case(ev)
    return _CASES[key]


def _finding_text(ev: Any) -> str:
    if ev.kind == "quality_anomaly":
        msg = (ev.detail or {}).get("message") or f"observed {ev.observed}, expected {ev.expected}"
        return f"{ev.check}{f' on {ev.column}' if ev.column else ''}: {msg}"
    return (f"{ev.failure_rate:.1%} of rows failed the contract (threshold {ev.threshold:.1%}): "
            + "; ".join(f"{f.detail or f.check} ({f.failed_rows} rows)" for f in ev.failed))


def gather(ev: CheckFailed | QualityAnomaly, rt: Runtime) -> QualityCase:
    """Citations about the dataset's contract and the quality runbook, the failing batch, the root cause, and the
    deterministic candidates (`draft_candidates`), each dry-run on the batch."""
    from pipewarden.agents.planner import format_citation
    from pipewarden.tools.quality_fix import draft_candidates, dry_run, root_cause

    what = f"{ev.check} {ev.column or ''}" if ev.kind == "quality_anomaly" else \
        " ".join(f"{f.check} {f.column or ''}" for f in ev.failed)
    cites = rt.cite(f"{ev.dataset} data quality {what}; quarantine, dedupe, re-ingest or contract change runbook",
                 role=READER_ROLE)
    store = rt.store()
    case = _fault_case(ev, store)
    candidates = []
    for c in draft_candidates(case):
        evidence = dry_run(case, c.change)
        candidates.append({
            "name": c.name, "rationale": c.rationale, "change": c.change.model_dump(mode="json"),
            "heals": evidence.heals, "after_failed_checks": evidence.after.failed_checks[:4],
            "notes": evidence.notes[:3],
        })
    columns = [{"name": c, "type": case.contract.column(c).type if c in case.contract.names else "unknown"}
               for c in case.columns]
    ctx = {
        "dataset": ev.dataset, "load_id": ev.load_id, "event_kind": ev.kind, "finding": _finding_text(ev),
        "check": getattr(ev, "check", None), "column": getattr(ev, "column", None),
        "root_cause": root_cause(case), "columns": columns, "keys": list(case.dq.keys),
        "rows": len(case.frame), "max_quarantine_fraction": case.dq.agent.max_quarantine_fraction,
        "candidates": candidates,
        "citations": [format_citation(c.chunk_id, c.excerpt, max_chars=300) for c in cites],
    }
    return QualityCase(event=ev, citations=cites, context=ctx, precedents=gather_precedents(ev, state=store))


def offline_solve(request: Any, precedents: list[Precedent] | None = None, fault: Any = None) -> QualityAnswer:
    """The deterministic answer: the first drafted candidate whose dry-run heals (a re-ingest when rows are missing).
    With the fault's `precedents` (and its `fault` case, to know each candidate's change), ranked before any is
    proven (`agents.precedent.rank`): one a person rejected for this fault is left out (ModelRetry when none is
    left), one people accepted comes first; the answer's rationale says why."""
    from pipewarden.errors import ModelRetry

    data = request.data
    cites = [c[1:c.index("]")] for c in data.get("citations", []) if c.startswith("[") and "]" in c][:2]
    answers = candidate_answers(data, cites)
    notes: list[str] = []
    if precedents and fault is not None and answers:
        drafted = answers
        answers, notes = rank(drafted, lambda a: _identity(a, fault), precedents, describe=_describe)
        if not answers:  # every drafted candidate was rejected for this fault: say why, as validation would
            raise ModelRetry(refusal(precedents, answer_to_change(drafted[0], fault)) or " ".join(notes))
    for answer in answers:
        if notes:
            return answer.model_copy(update={"rationale": f"{answer.rationale}. {' '.join(notes)}"})
        return answer
    # nothing heals: the first candidate, so validation says why and the proposal needs a human
    return QualityAnswer(action="quarantine", predicate="", reason="no drafted candidate heals the batch",
                         rationale="offline: no candidate heals", cited_chunks=[])


def candidate_answers(data: dict[str, Any], cites: list[str]) -> list[QualityAnswer]:
    """The drafted candidates that heal the batch (a re-ingest cannot be proven, so it counts), as answers, in the
    order they were drafted."""
    answers = []
    for cand in data.get("candidates", []):
        change = cand["change"]
        if not cand["heals"] and change["kind"] != "reingest":
            continue
        kind = change["kind"]
        base = {"rationale": f"offline: {cand['rationale']}", "cited_chunks": cites}
        if kind == "quarantine":
            answers.append(QualityAnswer(action="quarantine", predicate=change["predicate"], reason=change["reason"],
                                         **base))
        elif kind == "dedupe_rule":
            answers.append(QualityAnswer(action="dedupe_rule", keys=change["keys"], keep=change["keep"],
                                         order_by=change.get("order_by"), reason=cand["rationale"], **base))
        elif kind == "reingest":
            answers.append(QualityAnswer(action="reingest", reason=change["reason"], **base))
        elif kind == "contract_change":
            answers.append(QualityAnswer(action="contract_change", reason=change.get("summary", ""),
                                         bounds=_bounds_from(change), **base))
    return answers


def _identity(answer: QualityAnswer, fault: Any) -> str | None:
    """The `change_identity` of the change an answer stands for (None when it cannot be one)."""
    from pipewarden.errors import PipewardenError

    try:
        return change_identity(answer_to_change(answer, fault))
    except PipewardenError:
        return None


def _describe(answer: QualityAnswer) -> str:
    if answer.action == "quarantine":
        return f"quarantine where {answer.predicate}"
    if answer.action == "dedupe_rule":
        return f"keep one row per ({', '.join(answer.keys)})"
    if answer.action == "contract_change":
        return "loosen the contract (" + ", ".join(b.column for b in answer.bounds) + ")"
    return "re-ingest the load"


def _bounds_from(change: dict[str, Any]) -> list[BoundEdit]:
    """The column edits a drafted ContractChange makes, against the contract in force."""
    from pipewarden.tools.contracts import active_contract

    old = active_contract(change["dataset"])
    edits = []
    for col in change["contract"]["columns"]:
        if col["name"] not in old.names:
            continue
        o = old.column(col["name"])
        added = [v for v in (col.get("allowed") or []) if v not in (o.allowed or [])]
        if (col.get("min"), col.get("max")) != (o.min, o.max) or added:
            edits.append(BoundEdit(column=col["name"], min=col.get("min"), max=col.get("max"), add_allowed=added))
    return edits


def answer_to_change(answer: QualityAnswer, case: Any) -> Any:
    """The typed change an answer stands for (raises UserError when it cannot be one)."""
    from pipewarden.errors import UserError
    from pipewarden.tools.contracts import contract_to_dict
    from pipewarden.tools.quality_fix import _quarantine, _reingest

    if answer.action == "quarantine":
        return _quarantine(case, answer.predicate, answer.reason or "quarantined by the quality agent")
    if answer.action == "dedupe_rule":
        return DedupeRule(dataset=case.dataset, keys=list(answer.keys), keep=answer.keep, order_by=answer.order_by)
    if answer.action == "reingest":
        return _reingest(case, answer.reason)
    data = contract_to_dict(case.contract)
    data["version"] = int(data.get("version", 1)) + 1
    by_name = {c["name"]: c for c in data["columns"]}
    loosens, parts = False, []
    for edit in answer.bounds:
        if edit.column not in by_name:
            raise UserError(f"contract_change names column {edit.column!r}, which the contract does not have")
        col = by_name[edit.column]
        if edit.min is not None:
            loosens |= col.get("min") is None or edit.min < col["min"]
            col["min"] = edit.min
        if edit.max is not None:
            loosens |= col.get("max") is None or edit.max > col["max"]
            col["max"] = edit.max
        if edit.add_allowed:
            loosens = True
            col["allowed"] = [*(col.get("allowed") or []), *[v for v in edit.add_allowed if v not in (col.get("allowed") or [])]]
        parts.append(f"{edit.column}: [{col.get('min')}, {col.get('max')}]" + (f" +{edit.add_allowed}" if edit.add_allowed else ""))
    return ContractChange(dataset=case.dataset, contract=data, loosens=loosens or not answer.bounds,
                          summary=answer.reason or "; ".join(parts))


def validate_answer(answer: QualityAnswer, case: Any, ctx: dict[str, Any],
                    proofs: dict[str, QualityProof] | None = None,
                    precedents: list[Precedent] | None = None) -> list[str]:
    """Everything wrong with an answer (empty: acceptable). See the module docstring. The dry-run it makes is kept
    in `proofs` (by the answer's JSON) when given. A change a person rejected for this fault (`precedents`) fails
    before it is dry-run (`agents.precedent.refusal`)."""
    from pipewarden.errors import PipewardenError
    from pipewarden.tools.quality_fix import REINGEST_CHECKS, dry_run

    errors: list[str] = []
    check = ctx.get("check")
    columns = set(case.columns)
    known_cites = {c[1:c.index("]")] for c in ctx.get("citations", []) if c.startswith("[") and "]" in c}
    errors += [f"cited chunk {c!r} is not in the data's citations" for c in answer.cited_chunks if c not in known_cites]
    if answer.action == "reingest" and check not in (*REINGEST_CHECKS, "distribution"):
        errors.append(f"a re-ingest cannot fix a {check or 'contract check'} fault: the bad rows are in the batch")
    if answer.action == "dedupe_rule":
        if check != "duplicates":
            errors.append("a dedupe rule only fixes duplicate keys")
        unknown = [k for k in [*answer.keys, *([answer.order_by] if answer.order_by else [])] if k not in columns]
        if unknown or not answer.keys:
            errors.append(f"dedupe keys must be batch columns; unknown: {', '.join(unknown) or '(no keys given)'}")
    if answer.action == "quarantine" and not case.guarded(answer.predicate):  # a drafted one was guarded already
        errors += _predicate_errors(answer.predicate, frozenset(columns))
    if answer.action == "contract_change":
        if not answer.bounds:
            errors.append("a contract change must name at least one column edit")
        errors += [f"contract_change names column {b.column!r}, which the contract does not have"
                   for b in answer.bounds if b.column not in case.contract.names]
    if errors:
        return errors
    try:
        change = answer_to_change(answer, case)
        if precedents and (refused := refusal(precedents, change)):
            return [refused]
        evidence = dry_run(case, change)
    except PipewardenError as exc:
        return [exc.message]
    if proofs is not None:
        proofs[_key(answer)] = QualityProof(change=change, evidence=evidence)
    if answer.action == "quarantine":
        limit = case.dq.agent.max_quarantine_fraction
        if change.rows == 0:
            return [f"the predicate {answer.predicate!r} matches no row of the batch"]
        if change.fraction > limit:
            return [f"the predicate takes out {change.fraction:.0%} of the batch, over the {limit:.0%} a quarantine may"]
    if answer.action == "dedupe_rule" and evidence.metrics.get("rows_taken_out") != evidence.metrics.get("duplicate_rows"):
        return ["the dedupe rule would take out rows that are not duplicates"]
    if answer.action != "reingest" and not evidence.heals:
        return ["the dry-run does not heal the batch: " + "; ".join(evidence.after.failed_checks[:3])]
    return errors  # a new finding the change brings on (notes) is evidence for the person, not a refusal


@functools.lru_cache(maxsize=64)
def _predicate_errors(predicate: str, columns: frozenset[str]) -> tuple[str, ...]:
    """`tools.sql_guard.check_predicate`, once per predicate and columns in a process: the plan and `alternatives`
    validate the same drafted predicates, and parsing a long IN list takes up to a few tenths of a second."""
    from pipewarden.tools.sql_guard import check_predicate

    return tuple(check_predicate(predicate, set(columns)))


def _key(answer: QualityAnswer) -> str:
    return json.dumps(answer.model_dump(mode="json"), sort_keys=True)


def plan(case: QualityCase, rt: Runtime) -> Plan[QualityAnswer, QualityProof]:
    """`agents.llm.plan` (the OpenAI planner when configured, then `offline_solve`), every answer through
    `validate_answer`, whose dry-run of the answer that counts is kept as its proof."""
    from pipewarden.agents.llm import OfflinePlanner, PlanRequest
    from pipewarden.agents.llm import plan as ask
    from pipewarden.agents.precedent import with_precedents
    from pipewarden.tools.quality import TOOLS

    fault, ctx = _fault_case(case.event, rt.store()), case.context
    proofs: dict[str, QualityProof] = {}
    request = with_precedents(PlanRequest(agent=AGENT, task=TASK, rules=RULES, data=ctx), case.precedents)
    outcome = ask(request, QualityAnswer, offline=OfflinePlanner(lambda req: offline_solve(req, case.precedents, fault)),
                  validate=lambda a: validate_answer(a, fault, ctx, proofs, case.precedents), tools=TOOLS,
                  primary=rt.planner())
    return Plan(answer=outcome.answer, planner=outcome.planner or "offline", tried=list(outcome.tried),
                usage=outcome.usage.model_dump(mode="json"),
                proof=proofs.get(_key(outcome.answer)) if outcome.answer else None)


def prove(answer: QualityAnswer, case: QualityCase, rt: Runtime) -> QualityProof:
    """The answer's change, dry-run on the failing batch (`tools.quality_fix.dry_run`)."""
    from pipewarden.tools.quality_fix import dry_run

    fault = _fault_case(case.event, rt.store())
    change = answer_to_change(answer, fault)
    return QualityProof(change=change, evidence=dry_run(fault, change))


def _risk(change: Any) -> Risk:
    if change.kind == "contract_change":
        return Risk.high
    if change.kind == "quarantine" and change.fraction < 0.05:
        return Risk.low
    return Risk.medium


def _title(ev: Any, change: Any) -> str:
    if change.kind == "quarantine":
        return f"{ev.dataset}: quarantine {change.rows} rows where {change.predicate}"[:200]
    if change.kind == "dedupe_rule":
        return f"{ev.dataset}: keep one row per ({', '.join(change.keys)})"
    if change.kind == "reingest":
        return f"{ev.dataset}: re-ingest load {change.load_id}"
    return f"{ev.dataset}: loosen the contract ({change.summary})"[:200]


def alternatives(case: QualityCase, plan: Plan[QualityAnswer, QualityProof], rt: Runtime) -> list[Proposal]:
    """The shared tail's hook (`agents.precedent`): every other drafted candidate that heals and passes the same
    validation as a planner's answer, proven on the batch, in the order they were drafted."""
    fault, ctx = _fault_case(case.event, rt.store()), case.context
    out = []
    for answer in candidate_answers(ctx, []):
        proofs: dict[str, QualityProof] = {}
        if not validate_answer(answer, fault, ctx, proofs):
            out.append(_proposal(case, answer, proofs[_key(answer)], "offline", plan.tried, rt))
    return out


def propose(case: QualityCase, plan: Plan[QualityAnswer, QualityProof], proof: QualityProof | None,
            rt: Runtime) -> Proposal:
    return _proposal(case, plan.answer, proof, plan.planner, plan.tried, rt)


def _proposal(case: QualityCase, answer: QualityAnswer | None, proof: QualityProof | None, planner: str,
              tried: list[str], rt: Runtime) -> Proposal:
    """The proposal for an answer, its change proven on the batch (None: no valid fix, it needs a human)."""
    ev, ctx = case.event, case.context
    cause = "\n".join(f"- {line}" for line in ctx["root_cause"])
    if answer is None or proof is None:
        from pipewarden.tools.quality_fix import _result

        fault = _fault_case(ev, rt.store())
        res = _result(fault, fault.before())
        change: Any = NoChange(reason="no valid fix was found; " + " | ".join(tried[-3:]))
        evidence = DryRun(before=res, after=res)
        status, risk = ProposalStatus.needs_human, Risk.high
        title = f"{ev.dataset}: quality fault needs a human ({getattr(ev, 'check', 'contract checks')})"
        if (blocker := blocked_by(case.precedents, tried)) is not None:
            title += f": the fixes found were rejected before (proposal {blocker.proposal} by {blocker.actor})"
            title = title[:200]
        diagnosis = f"{ctx['finding']}\n\nRoot cause:\n{cause}\n\nNo drafted or planned fix heals the batch."
    else:
        change, evidence = proof.change, proof.evidence
        status, risk = ProposalStatus.pending, _risk(change)
        title = _title(ev, change)
        diagnosis = (f"{ctx['finding']}\n\nRoot cause:\n{cause}\n\nProposed by the {planner} "
                     f"planner: {answer.action}. {answer.rationale}")
    return proposal_for(
        ev, AGENT, dataset=ev.dataset, title=title, diagnosis=diagnosis, change=change, dry_run=evidence,
        citations=case.citations, risk=risk, required_roles=["owner"], status=status, planner=planner, tried=tried,
    )


# --------------------------------------------------------------------------- verification
def verify_quality(proposal: Proposal, event: Any, rt: Runtime) -> Verification:
    """See the module docstring: a re-run that no longer halts at validate nor finds the event's anomaly again;
    a re-ingest passes once its request is the active version."""
    from pipewarden.models import leaf_changes

    leaves = leaf_changes(proposal.change)
    if any(c.kind == "reingest" for c in leaves):
        change = next(c for c in leaves if c.kind == "reingest")
        v = rt.store().active_version(change.target)
        detail = {"reingest": "requested" if v else "missing", "version": v.number if v else None,
                  "load_id": change.load_id, "source": change.source,
                  "check": "the re-delivered load is judged by the detectors when it lands"}
        return Verification(v is not None, detail, "" if v else "the re-ingest request is not recorded")
    source = getattr(event, "batch_path", None)
    if source is None:
        return Verification(True, {"rerun": "not needed"})
    result = rt.pipeline_runner(proposal.dataset, source, load_id=event.load_id, rerun=True)
    detail = {"rerun_status": result.status, "load_id": result.load_id, "rows_in": result.rows_in,
              "rows_quarantined": result.rows_quarantined, "halted_at": result.halted_at, "events": result.events}
    if result.status == "failed" or result.halted_at == "validate":
        reason = f"re-run {result.status} at {result.halted_at or 'an unknown stage'}"
        if result.checks and result.checks.failed_checks:
            reason += ": " + "; ".join(result.checks.failed_checks[:3])
        return Verification(False, detail, reason)
    if event.kind == "quality_anomaly" and str(event.id) in result.events:
        return Verification(False, detail, f"the re-run still finds {event.check}"
                            + (f" on {event.column}" if event.column else ""))
    return Verification(True, detail)


SPEC: AgentSpec[QualityCase, QualityAnswer, QualityProof] = AgentSpec(
    name=AGENT, handles=("check_failed", "quality_anomaly"), case=QualityCase, gather=gather, answer=QualityAnswer,
    plan=plan, proof=QualityProof, prove=prove, propose=propose, verifier=verify_quality,
    alternatives=alternatives, reader_role=READER_ROLE,
)
