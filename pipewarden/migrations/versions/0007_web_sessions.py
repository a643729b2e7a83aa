"""Server-side web sessions and sign-in attempts.

Reserved in the migration chain so the three changes of this wave can land in any order; the change that owns
this revision fills in upgrade() and downgrade() and this docstring.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
