"""The schema-drift agent, a spec (`SPEC`): from a SchemaDrift event to a verified change.

    gather -> plan -> prove -> propose -> (shared tail: heed -> submit -> await_decision -> apply -> verify)

- gather (`DriftCase`, read once): the ACTIVE contract (`tools.contracts.active_contract`), knowledge citations
  (contract and runbook chunks the agent may read), the batch against the contract (the checks before, its schema
  fingerprint); the matcher pairs each unexplained incoming column with a contract column by names, values
  (accepted rows in the warehouse, or the contract alone) and MiniLM embeddings, and proposes casts and value
  transforms (a unit scale, a date format, epoch numbers); sqlglot lineage names the SQL models that read each
  missing column.
- plan: `agents.llm.plan` asks the OpenAI planner (when configured; it may call `profile_column`,
  `match_columns`, `column_lineage`) and falls back to the offline answer (`offline_answer`:
  `agents.planner.solve_mapping`, after a mapping people accepted for this drifted schema; never one a person
  rejected for it). The fault's precedents (`case.precedents`) reach the model as data, and an answer whose change
  a person rejected for this fault fails validation (`agents.precedent.refusal`). An
  answer counts only when `validate_mapping` passes and `prove` proves it (`draft_change`): the checks pass on the
  batch under the mapping (and the loosened contract, for dropped columns), and every SQL model that reads a
  dropped column is patched and proven in DuckDB (`tools.sql_patch.prove_drop`). The proof of the answer that
  counts is kept: the change is proven once. Nothing valid: "needs a human".
- propose: a `column_mapping`, or a `change_set` of `contract_change` (loosens; high risk), the mapping and the
  `sql_model_patch`es, with the checks before and after and the SQL proofs in `DryRun.notes`.

Public names: `SPEC`, `DriftCase`, `Drafted`, `draft_change`, `offline_answer`, `TOOL_NAMES`, `AGENT`,
`READER_ROLE`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from pipewarden.agents.lifecycle import proposal_for
from pipewarden.agents.planner import DriftContext, MappingAnswer
from pipewarden.agents.precedent import Precedent, blocked_by, change_identity, gather_precedents, rank, refusal
from pipewarden.agents.spec import AgentSpec, Plan
from pipewarden.events import SchemaDrift
from pipewarden.models import (
    Change,
    ChangeSet,
    CheckResult,
    Citation,
    DryRun,
    NoChange,
    Proposal,
    ProposalStatus,
    Risk,
    leaf_changes,
)
from pipewarden.policies.contract import Contract
from pipewarden.runtime import Runtime
from pipewarden.tools.contracts import active_contract

log = logging.getLogger(__name__)
AGENT = "schema-drift"
READER_ROLE = "engineer"  # the role the agent reads the knowledge index as
TOOL_NAMES = ("profile_column", "match_columns", "column_lineage")
"""The tools the OpenAI planner may call while drafting (see `tools.registry`)."""


class DriftCase(BaseModel):
    """What the agent gathered for one SchemaDrift event, read once: the event, the active contract, the checks
    on the batch as it landed, its schema fingerprint, the citations and the planner's context."""

    event: SchemaDrift
    contract: Contract
    before: CheckResult
    fingerprint: str | None = None
    citations: list[Citation] = Field(default_factory=list)
    context: DriftContext
    precedents: list[Precedent] = Field(default_factory=list)
    """What people decided on this fault (this drifted schema) before (`agents.precedent.gather_precedents`),
    heard before drafting."""


# The drifted batches the gather step read, by event id: the plan (and a prove after it) prove answers on the
# frame gather read. A process that did not gather the event (a crash between the steps) reads the batch again.
_BATCHES: dict[str, pd.DataFrame] = {}


def _read_batch(ev: SchemaDrift) -> pd.DataFrame:
    from pipewarden.tools.io import read_table

    if len(_BATCHES) >= 4:
        _BATCHES.clear()
    _BATCHES[str(ev.id)] = batch = read_table(ev.batch_path)
    return batch


def _batch(case: DriftCase) -> pd.DataFrame:
    batch = _BATCHES.get(str(case.event.id))
    return batch if batch is not None else _read_batch(case.event)


def _fingerprint(ev: SchemaDrift) -> str | None:
    """The schema fingerprint of the drifted batch as it landed: from the event, else the landed file's metadata."""
    from pipewarden.tools.mapping import landed_fingerprint

    return ev.schema_fingerprint or landed_fingerprint(ev.batch_path)


def _citations(ev: SchemaDrift, contract: Contract, rt: Runtime) -> list[Citation]:
    """Knowledge chunks about this dataset's contract and the drift runbook, read as the agent's role."""
    names = ", ".join(c.name for c in ev.added + ev.dropped) + ", " + ", ".join(t.column for t in ev.retyped)
    return rt.cite(f"{contract.dataset} contract columns {names}; renamed or retyped column runbook", role=READER_ROLE)


def gather(ev: SchemaDrift, rt: Runtime) -> DriftCase:
    """The evidence, read once: citations, the batch against the ACTIVE contract, the matcher's suggestions,
    the lineage of the missing columns, and the checks on the batch as it landed."""
    from pipewarden.agents.planner import ContractColumn, IncomingColumn, Suggestion, format_citation
    from pipewarden.policies.contract import observed_type, schema_diff
    from pipewarden.tools.checks import dry_check
    from pipewarden.tools.schema_match import match_columns, reference_for

    store = rt.store()
    contract = active_contract(ev.dataset, store)
    citations = _citations(ev, contract, rt)
    batch = _read_batch(ev)
    diff = schema_diff(contract, batch)
    report = match_columns(reference_for(contract), batch.drop(columns=[c for c in batch.columns if str(c).startswith("_")]),
                           embedder=rt.embedder())
    unexplained = {c.name for c in diff.added} | {t.column for t in diff.retyped}
    ctx = DriftContext(
        dataset=ev.dataset,
        contract_columns=[ContractColumn(name=c.name, type=c.type, description=c.description) for c in contract.columns],
        incoming_columns=[
            IncomingColumn(name=str(n), type=observed_type(batch[n]), samples=_samples(batch[n]))
            for n in batch.columns if n in unexplained
        ],
        missing_columns=[c.name for c in diff.dropped],
        retyped={t.column: t.observed for t in diff.retyped},
        suggestions=[Suggestion.from_match(m) for m in report.matches
                     if m.column in unexplained or m.transform is not None],
        citations=[format_citation(c.chunk_id, c.excerpt, max_chars=300) for c in citations],
        downstream=_downstream(ev.dataset, [c.name for c in diff.dropped]),
        event_id=str(ev.id),
    )
    return DriftCase(event=ev, contract=contract, before=dry_check(batch, contract, None),
                     fingerprint=_fingerprint(ev), citations=citations, context=ctx,
                     precedents=gather_precedents(ev, state=store))


def _downstream(dataset: str, columns: list[str]) -> dict[str, list[str]]:
    """For each missing column, the SQL models that read it (lineage); empty when the models cannot be read."""
    from pipewarden.errors import PipewardenError
    from pipewarden.tools.lineage import affected_models

    out: dict[str, list[str]] = {}
    for column in columns:
        try:
            out[column] = affected_models(f"raw_{dataset}", column)
        except PipewardenError as exc:
            log.warning("lineage of %s.%s failed: %s", dataset, column, exc)
    return out


def _samples(series: pd.Series, n: int = 5) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in series.dropna().head(n).tolist()]


class Drafted(BaseModel):
    """A planner answer turned into the change it stands for, proven on the failing batch (or why not): the
    agent's proof."""

    change: Change | None = None
    after: CheckResult | None = None
    sample: list[dict[str, Any]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    loosens: bool = False


def draft_change(answer: Any, dataset: str, contract: Contract, batch: pd.DataFrame, *,
                 fingerprint: str | None = None) -> Drafted:
    """Build the change an answer stands for and prove it on the batch: the checks pass under the mapping (and
    the loosened contract when columns are dropped), transformed columns match the reference distribution, and
    every downstream SQL model that reads a dropped column is patched and proven in DuckDB (`tools.sql_patch`).
    The mapping is scoped to the batch's schema `fingerprint` (computed from `batch` when not given): it will
    apply only to batches of that shape. Writes nothing."""
    from pipewarden.errors import PipewardenError
    from pipewarden.tools.checks import dry_check
    from pipewarden.tools.contracts import contract_change_for, contract_from_dict
    from pipewarden.tools.mapping import apply_mapping, batch_fingerprint, conform_to_contract
    from pipewarden.tools.sql_patch import draft_drop_patches, prove_drop

    out = Drafted()
    mapping = answer.to_mapping(dataset).model_copy(
        update={"source_fingerprint": fingerprint or batch_fingerprint(batch)})
    drops = list(answer.drop_from_contract)
    target = contract
    changes: list[Any] = []
    if drops:
        cc = contract_change_for(contract, drops)
        target = contract_from_dict(cc.contract, where=f"the drafted {dataset} contract v{cc.contract['version']}")
        changes.append(cc)
        out.loosens = True
        out.notes.append(f"contract: {cc.summary}")
    try:
        after = dry_check(batch, target, mapping if answer.changes_mapping else None)
        healed = apply_mapping(batch, mapping, target)
    except PipewardenError as exc:
        out.errors.append(f"the mapping cannot be applied: {exc.message}")
        return out
    out.after = after
    if not after.passed:
        out.errors.append("the change does not heal the batch: " + "; ".join((after.schema_errors + after.failed_checks)[:5]))
        return out
    if answer.changes_mapping:
        changes.append(mapping)
    out.notes += _distribution_notes(answer, healed, contract, out.metrics)
    if drops:
        dropped = {c: contract.column(c).type for c in drops}
        try:
            patches = draft_drop_patches(f"raw_{dataset}", dropped)
        except PipewardenError as exc:
            out.errors.append(f"the downstream SQL models cannot be patched: {exc.message}")
            return out
        rows = conform_to_contract(healed, target)[target.names]
        rows["_load_id"] = "dry-run"
        proofs = prove_drop(f"raw_{dataset}", dropped, rows, patches)
        for proof in proofs:
            out.notes += proof.notes()
            out.metrics.update({f"{k}[{proof.label}]": v for k, v in proof.metrics().items()})
        failing = [m.describe() for proof in proofs for m in proof.models if not m.ok]
        if failing:
            out.errors.append("the SQL patches are not proven: " + "; ".join(failing[:3]))
            return out
        changes += patches
    if not changes:
        out.errors.append("the answer changes nothing")
        return out
    out.change = changes[0] if len(changes) == 1 else ChangeSet(changes=changes, summary=_title_parts(answer, changes))
    sample = healed[[c for c in target.names if c in healed.columns]].head(5)
    out.sample = sample.astype(object).where(sample.notna(), None).to_dict(orient="records")
    return out


def _distribution_notes(answer: Any, healed: pd.DataFrame, contract: Contract, metrics: dict[str, float]) -> list[str]:
    """For each unit transform: how the converted values compare with the reference's (accepted rows)."""
    from pipewarden.tools.schema_match import profile_table, reference_for, value_similarity

    scaled = [t.column for t in answer.transforms if t.kind == "unit_scale" and t.column in healed.columns]
    if not scaled:
        return []
    ref = reference_for(contract)
    if isinstance(ref, dict):
        return [f"{c}: no accepted rows to compare the scaled values with" for c in scaled]
    notes = []
    for col in scaled:
        new = profile_table(healed[[col]])[col]
        old = profile_table(ref[[col]])[col]
        sim = value_similarity(new, old)
        metrics[f"distribution_match.{col}"] = round(sim, 4)
        notes.append(f"{col}: after the scale, p10/p50/p90 {new.p10:g}/{new.p50:g}/{new.p90:g} vs the reference's "
                     f"{old.p10:g}/{old.p50:g}/{old.p90:g} (value similarity {sim:.2f})")
    return notes


def _title_parts(answer: Any, changes: list[Any] | None = None) -> str:
    parts = [f"{r.incoming} -> {r.contract_column}" for r in answer.renames]
    parts += [f"cast {c.column} to {c.type}" for c in answer.casts]
    parts += [t.to_transform().describe() for t in answer.transforms]
    parts += [f"drop {c} from the contract" for c in answer.drop_from_contract]
    patched = [c.model for c in (changes or []) if getattr(c, "kind", "") == "sql_model_patch"]
    if patched:
        parts.append("patch " + ", ".join(patched))
    return ", ".join(parts)


def _key(answer: Any) -> str:
    return json.dumps(answer.model_dump(mode="json"), sort_keys=True)


def prove(answer: MappingAnswer, case: DriftCase, rt: Runtime | None = None) -> Drafted:
    """The answer's change, proven on the drifted batch (`draft_change`)."""
    return draft_change(answer, case.event.dataset, case.contract, _batch(case), fingerprint=case.fingerprint)


def _planned_change(answer: MappingAnswer, case: DriftCase) -> Change | None:
    """The change an answer stands for, known before proving it: its mapping scoped to the batch's schema (None
    when it drops contract columns: that change holds the SQL patches drafted while proving it)."""
    if answer.drop_from_contract or not answer.changes_mapping:
        return None
    from pipewarden.tools.mapping import batch_fingerprint

    return answer.to_mapping(case.event.dataset).model_copy(
        update={"source_fingerprint": case.fingerprint or batch_fingerprint(_batch(case))})


def _accepted_answer(p: Precedent) -> MappingAnswer | None:
    """A mapping people accepted for this fault, as an answer the offline planner can try (and prove) again."""
    from pydantic import ValidationError

    from pipewarden.agents.planner import CastPair, RenamePair, TransformPair

    ch = p.change
    if p.outcome != "accepted" or ch.get("kind") != "column_mapping":
        return None
    try:
        return MappingAnswer(
            renames=[RenamePair(incoming=k, contract_column=v) for k, v in ch.get("renames", {}).items()],
            casts=[CastPair(column=k, type=v) for k, v in ch.get("casts", {}).items()],
            transforms=[TransformPair(column=t["column"], kind=t["kind"], factor=t.get("factor"),
                                      format=t.get("format")) for t in ch.get("transforms", [])],
            rationale=f"the mapping people accepted for this fault on proposal {p.proposal} ({p.actor})")
    except ValidationError:
        return None


def offline_answer(case: DriftCase) -> MappingAnswer:
    """The offline planner's answer: `solve_mapping`, unless the fault's precedents say otherwise before anything
    is proven (`agents.precedent.rank`): a mapping people accepted for this drifted schema is tried first, one a
    person rejected is left out (ModelRetry when nothing is left)."""
    from pipewarden.agents.planner import solve_mapping
    from pipewarden.errors import ModelRetry

    solved = solve_mapping(case.context)
    if not case.precedents:
        return solved
    accepted = [a for p in case.precedents if (a := _accepted_answer(p)) is not None]
    ranked, notes = rank([*accepted, solved], lambda a: change_identity(_planned_change(a, case)), case.precedents,
                         describe=lambda a: _title_parts(a) or "no change")
    if not ranked:
        raise ModelRetry(refusal(case.precedents, _planned_change(solved, case)) or " ".join(notes))
    first = ranked[0]
    return first.model_copy(update={"rationale": " ".join([first.rationale, *notes]).strip()}) if notes else first


def plan(case: DriftCase, rt: Runtime) -> Plan[MappingAnswer, Drafted]:
    """`agents.llm.plan`: the OpenAI planner when configured (with `TOOL_NAMES`), then the offline answer
    (`solve_mapping`). An answer counts when `validate_mapping` passes and its change is proven on the batch; the
    proof of the answer that counts is kept (the prove step does not prove it again)."""
    from pipewarden.agents.llm import OfflinePlanner
    from pipewarden.agents.llm import plan as ask
    from pipewarden.agents.planner import request_for
    from pipewarden.agents.planning import validate_mapping
    from pipewarden.agents.precedent import with_precedents
    from pipewarden.tools.registry import all_tools

    ctx = case.context
    proofs: dict[str, Drafted] = {}

    def validate(answer: MappingAnswer) -> list[str]:
        if errors := validate_mapping(answer, ctx):
            return errors
        if case.precedents and (refused := refusal(case.precedents, _planned_change(answer, case))):
            return [refused]  # rejected for this fault before: not proven again
        proofs[_key(answer)] = drafted = prove(answer, case)
        if drafted.change is not None and (refused := refusal(case.precedents, drafted.change)):
            return [refused]
        return drafted.errors

    tools = [t for name, t in all_tools().items() if name in TOOL_NAMES]
    outcome = ask(with_precedents(request_for(ctx), case.precedents), MappingAnswer,
                  offline=OfflinePlanner(lambda _req: offline_answer(case)), validate=validate, tools=tools,
                  primary=rt.planner())
    return Plan(answer=outcome.answer, planner=outcome.planner or "offline", tried=list(outcome.tried),
                usage=outcome.usage.model_dump(), proof=proofs.get(_key(outcome.answer)) if outcome.answer else None)


def propose(case: DriftCase, plan: Plan[MappingAnswer, Drafted], drafted: Drafted | None, rt: Runtime) -> Proposal:
    """The proven change (a mapping, or a change set that loosens the contract: high risk), else "needs a human"
    with the checks before and why no change heals the batch."""
    ev, before, answer = case.event, case.before, plan.answer
    if answer is None or drafted is None or drafted.errors or drafted.change is None:
        why = drafted.errors if drafted is not None else plan.tried[-3:]
        change: Any = NoChange(reason="no valid change was found; " + " | ".join(why))
        evidence = DryRun(before=before, after=before)
        status, risk = ProposalStatus.needs_human, Risk.high
        title = f"{ev.dataset}: schema drift needs a human"
        if (blocker := blocked_by(case.precedents, plan.tried)) is not None:
            title += f": the change found was rejected before (proposal {blocker.proposal} by {blocker.actor})"
            title = title[:200]
        diagnosis = "The batch does not match its contract and no change that heals it was found.\n" + "\n".join(
            f"- {line}" for line in before.schema_errors)
    else:
        change = drafted.change
        evidence = DryRun(before=before, after=drafted.after, sample=drafted.sample, metrics=drafted.metrics,
                          notes=drafted.notes)
        status = ProposalStatus.pending
        risk = Risk.high if drafted.loosens else Risk.medium
        title = f"{ev.dataset}: " + _title_parts(answer, leaf_changes(change))
        diagnosis = ("Batch " + (ev.load_id or "?") + " does not match contract " + ev.contract_version + ":\n"
                     + "\n".join(f"- {line}" for line in before.schema_errors)
                     + f"\n\nProposed by the {plan.planner} planner. " + answer.rationale)
        if drafted.loosens:
            diagnosis += ("\n\nHigh risk: the change loosens the contract (a column is no longer required); "
                          "the downstream SQL models that read it are patched and proven on the batch.")
    return proposal_for(
        ev, AGENT, dataset=ev.dataset, title=title, diagnosis=diagnosis, change=change, dry_run=evidence,
        citations=case.citations, risk=risk, required_roles=["owner"], status=status, planner=plan.planner,
        tried=plan.tried,
    )


SPEC: AgentSpec[DriftCase, MappingAnswer, Drafted] = AgentSpec(
    name=AGENT, handles=("schema_drift",), case=DriftCase, gather=gather, answer=MappingAnswer, plan=plan,
    proof=Drafted, prove=prove, propose=propose, reader_role=READER_ROLE,
)
