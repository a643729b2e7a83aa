"""Time-ordered identifiers (uuid7, as Prefect's events use) and the clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

try:  # uuid_utils ships with prefect; fall back to uuid4 if it is absent.
    from uuid_utils import uuid7 as _uuid7

    def new_id() -> uuid.UUID:
        return uuid.UUID(str(_uuid7()))

except ImportError:  # pragma: no cover - depends on the environment
    def new_id() -> uuid.UUID:
        return uuid.uuid4()


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; every stored time is UTC, so say so."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
