"""Approval policies, identity and Slack: proposal expiry, decision rounds, one version per proposal, personal
API tokens, Slack messages and seen Slack requests, and an append-only audit log (triggers refuse UPDATE and
DELETE on audit_log).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PG_AUDIT_FUNCTION = """
CREATE OR REPLACE FUNCTION pipewarden_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING HINT = 'audit entries are never changed or removed; append a new entry instead';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("proposals") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
        batch.create_index("ix_proposals_expires_at", ["expires_at"])
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("round", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("seq", sa.Integer, nullable=False, server_default="1"))
    # Number the decisions already stored, per proposal in time order, so the unique index below holds.
    decisions = sa.table("decisions", sa.column("id", sa.String), sa.column("proposal_id", sa.String),
                         sa.column("decided_at", sa.DateTime), sa.column("seq", sa.Integer))
    rows = bind.execute(sa.select(decisions.c.id, decisions.c.proposal_id)
                        .order_by(decisions.c.proposal_id, decisions.c.decided_at, decisions.c.id)).all()
    counter: dict[str, int] = {}
    for row in rows:
        counter[row.proposal_id] = counter.get(row.proposal_id, 0) + 1
        bind.execute(decisions.update().where(decisions.c.id == row.id).values(seq=counter[row.proposal_id]))
    op.create_index("uq_decision_seq", "decisions", ["proposal_id", "round", "seq"], unique=True)
    op.create_index("uq_version_proposal", "versions", ["target", "proposal_id"], unique=True)

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_api_tokens_approver", "api_tokens", ["approver"])
    op.create_table(
        "slack_messages",
        sa.Column("proposal_id", sa.String(36), sa.ForeignKey("proposals.id"), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("fault_key", sa.String(256), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_slack_messages_fault_key", "slack_messages", ["fault_key"])
    op.create_table(
        "slack_requests",
        sa.Column("signature", sa.String(128), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_slack_requests_seen_at", "slack_requests", ["seen_at"])

    if bind.dialect.name == "postgresql":
        op.execute(PG_AUDIT_FUNCTION)
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION pipewarden_audit_append_only()")
    else:
        for op_name in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_log_no_{op_name.lower()} BEFORE {op_name} ON audit_log "
                       f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {op_name} refused'); END")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS pipewarden_audit_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    for table in ("slack_requests", "slack_messages", "api_tokens"):
        op.drop_table(table)
    op.drop_index("uq_version_proposal", "versions")
    op.drop_index("uq_decision_seq", "decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("seq")
        batch.drop_column("round")
    with op.batch_alter_table("proposals") as batch:
        batch.drop_index("ix_proposals_expires_at")
        batch.drop_column("expires_at")
