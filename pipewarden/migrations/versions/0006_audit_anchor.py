"""The audit chain's anchor: what makes truncation and state edits visible to `audit verify`.

One row (`chain` = 'main') holding the chain's head (last seq and hash) and entry count, signed with HMAC under a
key kept in the home, never in the state DB (pipewarden/audit.py). It is moved by every append, in the append's
transaction, so it cannot carry the audit log's append-only triggers. A log written before this revision has no
anchor until its next audited action; `audit verify` says so meanwhile.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_anchor",
        sa.Column("chain", sa.String(16), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("since_seq", sa.Integer, nullable=False),
        sa.Column("alarm", sa.Text),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_anchor")
