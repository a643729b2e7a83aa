"""Idempotency keys for events reported from outside a flow (POST /api/events, `pipewarden emit`).

A reporter that retries a report with the same key must not put a second event in the outbox: the key, per
reporter, points at the event its first report stored. A table of its own leaves the outbox's rows as flows write
them, and the primary key (reporter, key) is what makes two concurrent reports with one key store one event.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("reporter", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("event_id", sa.String(36), sa.ForeignKey("events.id"), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
