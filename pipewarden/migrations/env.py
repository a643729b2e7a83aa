"""Alembic environment: run migrations on the connection `pipewarden.db.upgrade` hands over (already inside a
locked transaction), or on `PIPEWARDEN_DATABASE_URL` when alembic is run from the command line."""

from __future__ import annotations

from alembic import context

from pipewarden.db import metadata

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    from pipewarden.db import make_engine
    from pipewarden.settings import get_settings

    make_engine(get_settings().state_url)  # make_engine upgrades under its lock


def run_migrations_offline() -> None:
    from pipewarden.settings import get_settings

    context.configure(url=get_settings().state_url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
