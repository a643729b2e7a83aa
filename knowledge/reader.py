"""Who reads the knowledge index: a person (their roles, on their datasets) or a bare role.

`knowledge search --as NAME` and the MCP server's `knowledge_search` both search as a `Reader`. A person from
`approvers.yaml` reads with every role they hold, and only chunks about the datasets their roles apply to (a
chunk about no dataset, such as a runbook, is open to their roles everywhere). A bare role (`analyst`, `steward`)
reads what that role may read. Anything else is an error naming the value and the valid people and roles, with a
did-you-mean: a typo never silently returns nothing.

Public names: `Reader`, `resolve_reader(name, approvers=None)`, `known_roles(approvers=None)`,
`search_as(query, reader, *, limit=5, max_age=..., embedder=None, store=None)`.
"""

from __future__ import annotations

from datetime import timedelta
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import UnknownNameError
from pipewarden.knowledge.retrieval import DEFAULT_MAX_AGE, search, to_citation
from pipewarden.knowledge.store import VectorStore
from pipewarden.models import Citation
from pipewarden.policies.approvers import Approvers
from pipewarden.ports import Embedder


class Reader(BaseModel):
    """The identity a search runs as."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(description="A person's name, or the role itself for a bare role.")
    roles: list[str] = Field(min_length=1, description="Roles it reads with (a chunk needs one in allowed_roles).")
    datasets: list[str] = Field(default_factory=lambda: ["*"], description="Dataset patterns its roles apply to.")

    def covers(self, dataset: str | None) -> bool:
        return dataset is None or any(fnmatchcase(dataset, p) for p in self.datasets)


def known_roles(approvers: Approvers | None = None) -> list[str]:
    """Every role named anywhere: held by an approver, or allowed to read a contract of the project."""
    from pipewarden.policies.contract import list_contracts, load_contract

    approvers = approvers or Approvers.load()
    roles = {r for a in approvers.all() for r in a.roles}
    for name in list_contracts():
        try:
            roles.update(load_contract(name).allowed_roles)
        except Exception:  # noqa: BLE001 - a broken contract is reported by the commands that read it, not here
            continue
    return sorted(roles)


def resolve_reader(name: str, approvers: Approvers | None = None) -> Reader:
    """A person (by name) or a role; UnknownNameError listing both, with a did-you-mean, for anything else."""
    approvers = approvers or Approvers.load()
    person = approvers.get(name)
    if person is not None:
        return Reader(name=person.name, roles=list(person.roles), datasets=list(person.datasets))
    roles = known_roles(approvers)
    if name in roles:
        return Reader(name=name, roles=[name])
    people = sorted(a.name for a in approvers.all())
    raise UnknownNameError("person or role", name, [*people, *roles])


def search_as(
    query: str,
    reader: Reader,
    *,
    limit: int = 5,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
) -> list[Citation]:
    """The `limit` best citations `reader` may see: searched once per role (access is checked in the store query),
    merged by chunk (its best score), and kept only for the datasets the reader's roles apply to."""
    if embedder is None:
        from pipewarden import runtime

        embedder = runtime.current().embedder()
    if store is None:
        from pipewarden.knowledge.store import default_store

        store = default_store()  # one store for every role's query (Qdrant local mode locks its folder)
    best: dict[str, Citation] = {}
    for role in reader.roles:
        # Ask for more than `limit`: hits on datasets outside the reader's are dropped below.
        for hit in search(query, role=role, limit=limit * 4, max_age=max_age, embedder=embedder, store=store):
            if not reader.covers(hit.chunk.dataset):
                continue
            cite = to_citation(hit)
            if cite.chunk_id not in best or cite.score > best[cite.chunk_id].score:
                best[cite.chunk_id] = cite
    return sorted(best.values(), key=lambda c: c.score, reverse=True)[:limit]
