"""Who decides from the command line, proven: a personal token, or the operating-system login mapped in
approvers.yaml. A name alone (`--as`, `PIPEWARDEN_USER`) proves nothing.

Two proofs are accepted, each naming exactly one approver:
- a personal token (`pipewarden approvers token NAME` prints one; the state DB keeps its hash): from
  `--token-file PATH` (the file holds the token; it must not be readable by group or others) or else the
  `PIPEWARDEN_TOKEN` environment variable. A revoked or unknown token is refused, not ignored;
- the login the process runs as, taken from its real uid (`pwd.getpwuid(os.getuid())`, never `$USER` or
  `$LOGNAME`, which anyone can set), mapped to a person by `os_user:` in approvers.yaml. One login maps to at most
  one approver (`policies.approvers` refuses a file that gives one login to two people).

`--as NAME` (or `PIPEWARDEN_USER`) only selects among the identities proven this way; naming anyone else is
refused (Forbidden, exit 4) before anything is read or stored. So one operating-system user, without another
person's token, can decide as one person only, and cannot satisfy a two-person rule alone.

Public names: `cli_identity`, `ProvenIdentity`, `os_login`, `read_token_file`, `TOKEN_ENV`, `USER_ENV`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pipewarden.errors import Forbidden, UserError

if TYPE_CHECKING:
    from pipewarden.policies.approvers import Approvers
    from pipewarden.store import StateStore

TOKEN_ENV = "PIPEWARDEN_TOKEN"
USER_ENV = "PIPEWARDEN_USER"
Proof = Literal["token", "os_user"]


@dataclass(frozen=True)
class ProvenIdentity:
    """An approver the caller proved, and how."""

    name: str
    proof: Proof
    detail: str  # where the token came from, or the login


def os_login() -> str | None:
    """The login of the process's real uid, or None where there is none (no passwd entry, not POSIX)."""
    try:
        import pwd
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (a bare container)
        return None


def read_token_file(path: Path) -> str:
    """The token in `path`; UserError when it is missing, empty, or readable by group or others."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the token file: {exc.strerror}",
                        hint="pass the file that holds your personal token (`pipewarden approvers token NAME` "
                             "prints one)") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"{path}: the token file can be read by others (mode {stat.S_IMODE(mode):o})",
                        hint=f"make it private: chmod 600 {path}")
    if not text:
        raise UserError(f"{path}: the token file is empty", hint="write your personal token into it")
    return text


def cli_identity(store: StateStore, approvers: Approvers, *, claimed: str | None = None,
                 token_file: Path | None = None, env: dict[str, str] | None = None,
                 login: str | None = None) -> ProvenIdentity:
    """The approver a command-line decision is made as, proven by a token or the OS login (see the module doc).

    `claimed` is `--as` (else `PIPEWARDEN_USER`): it must be one of the proven identities. `env` and `login`
    default to the process's own (tests pass them). Raises Forbidden when the claim is not proven, UserError
    when nothing proves anyone, or a token is refused.
    """
    env = dict(os.environ) if env is None else env
    login = os_login() if login is None else login
    proven: list[ProvenIdentity] = []
    if token_file is not None:
        token, source = read_token_file(token_file), f"--token-file {token_file}"
    else:
        token, source = env.get(TOKEN_ENV, "").strip(), f"${TOKEN_ENV}"
    if token:
        name = store.approver_for_token(token)
        if name is None:
            raise UserError(f"the personal token in {source} is unknown or has been revoked; nothing was decided",
                            hint="ask for a new one (`pipewarden approvers token NAME`), or unset it to be known by "
                                 "your login")
        proven.append(ProvenIdentity(name, "token", source))
    mapped = approvers.by_os_user(login) if login else None
    if mapped is not None and all(p.name != mapped.name for p in proven):
        proven.append(ProvenIdentity(mapped.name, "os_user", login or ""))
    claim = (claimed if claimed is not None else env.get(USER_ENV, "")).strip() or None
    where = approvers.path or "approvers.yaml"
    if not proven:
        raise UserError(
            "cannot tell who is deciding: no personal token and no approver for your login "
            f"{login!r}" + (f" (a name alone, {claim!r}, proves nothing)" if claim else ""),
            hint=f"set {TOKEN_ENV} (or pass --token-file) with your personal token (`pipewarden approvers token "
                 f"NAME` prints one), or add `os_user: {login or 'LOGIN'}` to your entry in {where}")
    if claim is None:
        return proven[0]  # a token first: it was given on purpose
    for p in proven:
        if p.name == claim:
            return p
    shown = ", ".join(f"{p.name} (by {'token' if p.proof == 'token' else 'login ' + p.detail})" for p in proven)
    raise Forbidden(
        f"you cannot decide as {claim!r}: you proved {shown}; --as and {USER_ENV} only choose among those",
        hint=f"{claim} decides with their own token ({TOKEN_ENV} or --token-file) or from their own login")
