"""Personal API tokens: how a clear token is made and hashed. Only the hash is ever stored.

Public names: `new_token()`, `hash_token(token)`, `same_hash(a, b)` (constant-time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "pw_"


def new_token() -> str:
    """A fresh personal token (256 bits of randomness), shown to its owner once."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The sha256 hex digest of a token: what the state DB keeps."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
