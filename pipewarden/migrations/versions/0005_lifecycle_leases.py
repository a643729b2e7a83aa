"""Leases, attempts and dead letters for events and proposals (crash recovery).

Reserved in the migration chain so the three changes of this wave can land in any order; the change that owns
this revision fills in upgrade() and downgrade() and this docstring.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
