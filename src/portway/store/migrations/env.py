"""Alembic environment for Portway.

``Store.open`` runs migrations in-process and hands over its connection through
``config.attributes["connection"]``; this file then runs inside that connection's
transaction (which holds the migration lock). When no connection is given, for
instance when a developer runs the ``alembic`` command line with a config that
sets ``sqlalchemy.url``, an engine is created from that URL instead.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from portway.store.tables import metadata


def _configure(connection: Connection) -> None:
    """Run the pending migrations on ``connection``."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    """Connect to ``url`` (an async driver URL) and migrate it."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


def run_offline() -> None:
    """Emit the migration SQL for ``sqlalchemy.url`` instead of running it."""
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate the connection passed in by ``Store.open``, or ``sqlalchemy.url``."""
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _configure(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "Portway migrations need a connection (Store.open passes one) "
            "or sqlalchemy.url in the Alembic config"
        )
    asyncio.run(_run_from_url(url))


if context.is_offline_mode():
    run_offline()
else:
    run_online()
