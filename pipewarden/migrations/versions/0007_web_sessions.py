"""Server-side web sessions and sign-in throttling.

`web_sessions`: one row per signed-in browser. The session cookie carries only a random session key; the row
(keyed by the key's sha256) names the approver and the personal token they signed in with, and says when the
session expires and whether it ended (signed out). A session is believed only while its row is live and its token
is not revoked, so signing out and revoking a token take effect on the very next request.

`sign_in_failures`: failed sign-ins counted per client address and per account (`address:...`, `account:...`) in
a window, and the time until which further attempts are refused (429) once the count passes the limit.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("token_id", sa.String(36), sa.ForeignKey("api_tokens.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_web_sessions_approver", "web_sessions", ["approver"])
    op.create_index("ix_web_sessions_token_id", "web_sessions", ["token_id"])
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_table(
        "sign_in_failures",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("sign_in_failures")
    op.drop_index("ix_web_sessions_expires_at", "web_sessions")
    op.drop_index("ix_web_sessions_token_id", "web_sessions")
    op.drop_index("ix_web_sessions_approver", "web_sessions")
    op.drop_table("web_sessions")
