"""Identity: the people who may decide proposals and their roles, from the project's `approvers.yaml`.

The file (or `PIPEWARDEN_APPROVERS_FILE`) lists each approver once: a name, roles (`owner`, `steward`, `ml_owner`,
`engineer`, `reporter`...), the datasets the roles apply to (shell patterns, `*` for all), the Slack member id
that maps to the person, and the operating-system login that proves them on the command line (`os_user`). Which
roles a proposal needs is decided by the rules in `policies.approval`.

Reading: a person may read (in the web inbox and its API) the proposals of the datasets on which they hold any role
but `reporter` (`may_read`); others get the same 404 as for an id that does not exist.

Proving who decides from the command line: a personal token (`PIPEWARDEN_TOKEN`, `--token-file`) or the login the
process runs as (its real uid, never `$USER`), mapped here by `os_user`. One login maps to at most one approver, so
one operating-system user can never be two people under the two-person rule.

`reporter` is the role of anything that is not a Prefect flow but reports faults (a cron job, dbt, another
scheduler): with its personal token it may `POST /api/events` on the datasets it covers. It never decides a
proposal: no approval rule may name it, and `policies.approval.check_can_decide` refuses an identity whose only
role it is.

Public names: `Approver` (`may_report`, `may_read`), `Approvers` (`load`, `current`, `get`, `by_slack`, `by_os_user`,
`all`, `path`), `check_can_report`, `REPORTER_ROLE`, `hash_token`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipewarden.errors import ConfigError, Forbidden
from pipewarden.models import is_system_actor
from pipewarden.settings import get_settings
from pipewarden.tokens import hash_token

__all__ = ["REPORTER_ROLE", "Approver", "Approvers", "check_can_report", "hash_token"]

REPORTER_ROLE = "reporter"
"""May report events (POST /api/events) on its datasets; never decides a proposal."""


class Approver(BaseModel):
    """One person who may decide proposals, as configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, description="The identity they decide as (web sign-in, Slack, the CLI).")
    roles: list[str] = Field(min_length=1, description='e.g. ["owner"], ["steward"], ["engineer"].')
    datasets: list[str] = Field(default_factory=lambda: ["*"], description="Datasets the roles apply to (patterns).")
    slack_user_id: str | None = Field(default=None, description="The Slack member id that maps to this person.")
    slack_channel: str | None = Field(default=None, description="Channel for proposals on datasets they own.")
    os_user: str | None = Field(default=None, min_length=1,
                                description="The operating-system login that proves this person on the command line "
                                            "(`pipewarden inbox approve` run by that login decides as them).")
    display_name: str = ""

    @field_validator("name")
    @classmethod
    def _not_a_system_name(cls, v: str) -> str:
        v = v.strip()
        if is_system_actor(v):
            raise ValueError(f"{v!r} is a system identity (system, agent*, supervisor, policy...); use a person's name")
        return v

    def covers(self, dataset: str) -> bool:
        """Whether this person's roles apply to `dataset`."""
        return any(fnmatchcase(dataset, pattern) for pattern in self.datasets)

    def roles_for(self, dataset: str) -> list[str]:
        """The roles this person holds on `dataset` (none when the dataset is not theirs)."""
        return list(self.roles) if self.covers(dataset) else []

    def may_read(self, dataset: str) -> bool:
        """Whether this person may read proposals on `dataset`: any role there but `reporter`."""
        return bool(set(self.roles_for(dataset)) - {REPORTER_ROLE})

    def may_report(self, dataset: str) -> bool:
        """Whether this identity may report events on `dataset` (the reporter role, on that dataset)."""
        return REPORTER_ROLE in self.roles_for(dataset)

    @property
    def label(self) -> str:
        return self.display_name or self.name


_CURRENT: dict[tuple[str, int, int], Approvers] = {}  # Approvers.current's one entry: the file as last read


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approvers: list[Approver]


class Approvers:
    """The configured approvers, by name and by Slack member id."""

    def __init__(self, approvers: list[Approver], path: Path | None = None) -> None:
        self.path = path
        self._by_name: dict[str, Approver] = {}
        self._by_slack: dict[str, Approver] = {}
        self._by_os_user: dict[str, Approver] = {}
        where = str(path) if path else "approvers"
        for a in approvers:
            if a.name in self._by_name:
                raise ConfigError(f"{where}: approver {a.name!r} is listed twice", hint="keep one entry per person")
            self._by_name[a.name] = a
            if a.slack_user_id:
                if a.slack_user_id in self._by_slack:
                    other = self._by_slack[a.slack_user_id].name
                    raise ConfigError(f"{where}: slack_user_id {a.slack_user_id!r} is given to both {other!r} and "
                                      f"{a.name!r}", hint="a Slack member maps to one approver")
                self._by_slack[a.slack_user_id] = a
            if a.os_user:
                if a.os_user in self._by_os_user:
                    other = self._by_os_user[a.os_user].name
                    raise ConfigError(f"{where}: os_user {a.os_user!r} is given to both {other!r} and {a.name!r}",
                                      hint="one login proves one person: otherwise one user could approve as two "
                                           "people; give each person their own login or a personal token")
                self._by_os_user[a.os_user] = a

    @classmethod
    def load(cls, path: Path | str | None = None) -> Approvers:
        """Read the approvers file; a clear ConfigError naming the file, the entry and the field when invalid."""
        path = Path(path) if path is not None else get_settings().approvers_path
        if not path.is_file():
            raise ConfigError(f"{path}: the approvers file does not exist",
                              hint="create it (see `pipewarden init`, which writes one) or set PIPEWARDEN_APPROVERS_FILE")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}", hint="fix the file's syntax") from exc
        if not isinstance(raw, dict) or "approvers" not in raw:
            raise ConfigError(f"{path}: expected a mapping with an 'approvers' list",
                              hint="start the file with `approvers:` followed by one `- name: ...` entry per person")
        try:
            parsed = _File.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = list(first["loc"])
            where = "top level"
            if len(loc) >= 2 and loc[0] == "approvers" and isinstance(loc[1], int):
                entries = raw.get("approvers") or []
                entry = entries[loc[1]] if loc[1] < len(entries) else None
                who = entry.get("name") if isinstance(entry, dict) else None
                field = ".".join(str(x) for x in loc[2:]) or "entry"
                where = f"approver #{loc[1] + 1}" + (f" ({who!r})" if who else "") + f", field {field!r}"
            elif loc:
                where = f"field {'.'.join(str(x) for x in loc)!r}"
            raise ConfigError(f"{path}: {where}: {first['msg']}",
                              hint="each approver needs `name` and `roles`; allowed fields: "
                              + ", ".join(Approver.model_fields)) from exc
        return cls(parsed.approvers, path)

    @classmethod
    def current(cls, path: Path | str | None = None) -> Approvers:
        """`load`, re-read only when the file changes (its path, size and mtime): a server asks on every request,
        and parsing the YAML each time cost about half of a decision. A missing or broken file still raises."""
        path = Path(path) if path is not None else get_settings().approvers_path
        try:
            st = path.stat()
        except OSError:
            return cls.load(path)  # the ConfigError naming the missing file
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _CURRENT:
            loaded = cls.load(path)
            _CURRENT.clear()
            _CURRENT[key] = loaded
        return _CURRENT[key]

    def get(self, name: str) -> Approver | None:
        return self._by_name.get(name.strip())

    def by_slack(self, user_id: str) -> Approver | None:
        return self._by_slack.get(user_id)

    def by_os_user(self, login: str) -> Approver | None:
        """The approver whose `os_user` is this operating-system login, if any."""
        return self._by_os_user.get(login)

    def all(self) -> list[Approver]:
        return list(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


def check_can_report(name: str, approvers: Approvers, dataset: str | None = None) -> Approver:
    """The identity `name` if it may report events (on `dataset`, when given); Forbidden (HTTP 403) otherwise."""
    person = approvers.get(name)
    where = approvers.path or "the approvers file"
    add = f"add `{REPORTER_ROLE}` to {name}'s roles in {where}, or report with a reporter's token"
    if person is None:
        raise Forbidden(f"{name!r} is not an identity in {where}; only a {REPORTER_ROLE} may report events",
                        hint=f"add `- {{name: {name}, roles: [{REPORTER_ROLE}], datasets: ['*']}}` to {where}")
    if REPORTER_ROLE not in person.roles:
        raise Forbidden(f"{name} cannot report events: reporting needs the {REPORTER_ROLE} role; {name} has "
                        f"{', '.join(person.roles)} on {', '.join(person.datasets)}", hint=add)
    if dataset is not None and not person.may_report(dataset):
        raise Forbidden(f"{name} cannot report events on {dataset}: {name} reports on {', '.join(person.datasets)}",
                        hint=f"add {dataset} to {name}'s datasets in {where}")
    return person
