"""Alembic migrations of the state DB; run by `pipewarden.db.upgrade` (and `pipewarden db upgrade`)."""
