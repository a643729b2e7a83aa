"""The schema-drift agent: a LangGraph graph from a SchemaDrift event to a verified column mapping.

    gather -> diagnose -> draft -> dry_run -> (shared tail: submit -> await_decision -> apply -> verify)

- gather: the event, the contract, the failing batch, reference data (accepted rows in the warehouse, or
  the contract alone) and knowledge citations (contract and runbook chunks the agent may read).
- diagnose: the matcher pairs each unexplained incoming column with a contract column using names, values
  and MiniLM embeddings of the names; retyped columns get a cast.
- draft: the planner (OpenAI when a key is set, else offline) proposes a mapping; every answer is validated
  (real columns only, one-to-one, contract types) and must heal the batch in a dry-run, else it is retried with
  the errors, then the offline planner answers; if nothing is valid the proposal says "needs a human".
- dry_run: the checks before and after the mapping, on the failing batch, become the proposal's evidence.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from agents.lifecycle import AgentState, build_agent_graph, proposal_id_for, thread_id_for
from pipewarden.events import SchemaDrift
from pipewarden.models import Citation, ColumnMapping, DryRun, NoChange, Proposal, ProposalStatus, Risk
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from policies.contract import Contract, load_contract

log = logging.getLogger(__name__)
AGENT = "schema-drift"
READER_ROLE = "engineer"  # the role the agent reads the knowledge index as
REFERENCE_ROWS = 20_000


class DriftState(AgentState, total=False):
    context: dict[str, Any]
    citations: list[dict[str, Any]]
    answer: dict[str, Any] | None
    planner: str
    tried: list[str]
    dry_run: dict[str, Any]


def _event(state: DriftState) -> SchemaDrift:
    ev = StateStore().get_event(state["event_id"])
    assert isinstance(ev, SchemaDrift), f"schema-drift agent got a {ev.kind} event"
    return ev


def _batch(ev: SchemaDrift) -> pd.DataFrame:
    from tools.io import read_table

    return read_table(ev.batch_path)


def _reference(contract: Contract) -> Any:
    """Accepted rows of this dataset from the warehouse, or the contract's profiles when there are none."""
    from tools.schema_match import profiles_from_contract

    settings = get_settings()
    if settings.warehouse_path.exists():
        import duckdb

        try:
            con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        except duckdb.IOException:  # another process is writing: the contract will do
            return profiles_from_contract(contract)
        try:
            table = f"raw_{contract.dataset}"
            if con.execute("select count(*) from information_schema.tables where table_name = ?", [table]).fetchone()[0]:
                cols = ", ".join(f'"{c}"' for c in contract.names)
                df = con.execute(f"select {cols} from {table} using sample {REFERENCE_ROWS} rows").df()
                if len(df):
                    return df
        finally:
            con.close()
    return profiles_from_contract(contract)


def _citations(ev: SchemaDrift, contract: Contract) -> list[Citation]:
    """Knowledge chunks about this dataset's contract and the drift runbook, read as the agent's role."""
    from pipewarden.errors import PipewardenError

    try:
        from knowledge.retrieval import search, to_citation

        names = ", ".join(c.name for c in ev.added + ev.dropped) + ", " + ", ".join(t.column for t in ev.retyped)
        query = f"{contract.dataset} contract columns {names}; renamed or retyped column runbook"
        return [to_citation(h) for h in search(query, role=READER_ROLE, limit=4)]
    except (PipewardenError, OSError, RuntimeError, ValueError) as exc:  # the index is optional evidence
        log.warning("knowledge search failed, proposing without citations: %s", exc)
        return []


def gather(state: DriftState) -> DriftState:
    ev = _event(state)
    contract = load_contract(ev.dataset)
    return {"citations": [c.model_dump(mode="json") for c in _citations(ev, contract)]}


def diagnose(state: DriftState) -> DriftState:
    from agents.planner import ContractColumn, DriftContext, IncomingColumn, Suggestion, format_citation
    from knowledge.embedder import default_embedder
    from policies.contract import observed_type, schema_diff
    from tools.schema_match import match_columns

    ev = _event(state)
    contract = load_contract(ev.dataset)
    batch = _batch(ev)
    diff = schema_diff(contract, batch)
    report = match_columns(_reference(contract), batch.drop(columns=[c for c in batch.columns if str(c).startswith("_")]),
                           embedder=default_embedder())
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
        suggestions=[
            Suggestion(incoming=m.column, contract_column=m.match, score=round(m.score, 4), cast=m.cast, reason=m.reason)
            for m in report.matches if m.column in unexplained
        ],
        citations=[format_citation(c["chunk_id"], c["excerpt"], max_chars=300) for c in state.get("citations", [])],
    )
    return {"context": ctx.model_dump(mode="json")}


def _samples(series: pd.Series, n: int = 5) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in series.dropna().head(n).tolist()]


def _mapping(answer: Any, dataset: str) -> ColumnMapping:
    return ColumnMapping(dataset=dataset, renames=dict(answer.renames), casts=dict(answer.casts))


def draft(state: DriftState) -> DriftState:
    from agents.planner import DriftContext, OfflinePlanner, planner_from_settings
    from agents.planning import plan_mapping, validate_mapping
    from tools.checks import dry_check

    ev = _event(state)
    ctx = DriftContext.model_validate(state["context"])
    contract = load_contract(ev.dataset)
    batch = _batch(ev)

    def validate(answer: Any) -> list[str]:
        errors = validate_mapping(answer, ctx)
        if errors:
            return errors
        after = dry_check(batch, contract, _mapping(answer, ev.dataset))
        if not after.passed:
            return ["the mapping does not heal the batch: " + "; ".join((after.schema_errors + after.failed_checks)[:5])]
        return []

    primary = planner_from_settings(get_settings())
    fallback = None if primary.name == "offline" else OfflinePlanner()
    outcome = plan_mapping(ctx, primary=primary, fallback=fallback, validate=validate)
    return {
        "answer": outcome.answer.model_dump(mode="json") if outcome.answer else None,
        "planner": outcome.planner or primary.name,
        "tried": list(outcome.tried),
    }


def dry_run(state: DriftState) -> DriftState:
    from agents.planner import MappingAnswer
    from tools.checks import dry_check
    from tools.mapping import apply_mapping

    ev = _event(state)
    contract = load_contract(ev.dataset)
    batch = _batch(ev)
    before = dry_check(batch, contract, None)
    citations = [Citation.model_validate(c) for c in state.get("citations", [])]
    if state.get("answer") is None:
        change: Any = NoChange(reason="no valid mapping was found; " + " | ".join(state.get("tried", [])[-3:]))
        evidence = DryRun(before=before, after=before)
        status, risk = ProposalStatus.needs_human, Risk.high
        title = f"{ev.dataset}: schema drift needs a human"
        diagnosis = "The batch does not match its contract and no mapping that heals it was found.\n" + "\n".join(
            f"- {line}" for line in before.schema_errors)
    else:
        answer = MappingAnswer.model_validate(state["answer"])
        change = _mapping(answer, ev.dataset)
        after = dry_check(batch, contract, change)
        healed = apply_mapping(batch, change, contract)
        sample = healed[[c for c in contract.names if c in healed.columns]].head(5)
        evidence = DryRun(before=before, after=after, sample=sample.astype(object).where(sample.notna(), None)
                          .to_dict(orient="records"))
        status, risk = ProposalStatus.pending, Risk.medium
        parts = [f"{src} -> {dst}" for src, dst in change.renames.items()]
        parts += [f"cast {col} to {typ}" for col, typ in change.casts.items()]
        title = f"{ev.dataset}: map " + ", ".join(parts)
        diagnosis = ("Batch " + (ev.load_id or "?") + " does not match contract " + ev.contract_version + ":\n"
                     + "\n".join(f"- {line}" for line in before.schema_errors)
                     + f"\n\nProposed by the {state.get('planner', 'offline')} planner. " + answer.rationale)
    proposal = Proposal(
        id=proposal_id_for(state["event_id"]), event_id=ev.id, agent=AGENT, dataset=ev.dataset, title=title,
        diagnosis=diagnosis, change=change, dry_run=evidence, citations=citations, risk=risk,
        required_roles=["owner"], status=status, thread_id=thread_id_for(state["event_id"]),
        planner=state.get("planner", "offline"), tried=state.get("tried", []),
    )
    return {"proposal": proposal.model_dump(mode="json"), "dry_run": evidence.model_dump(mode="json")}


STEPS: tuple[tuple[str, Any], ...] = (("gather", gather), ("diagnose", diagnose), ("draft", draft),
                                      ("dry_run", dry_run))


def build_graph(checkpointer: Any = None) -> Any:
    return build_agent_graph(DriftState, STEPS, checkpointer)
