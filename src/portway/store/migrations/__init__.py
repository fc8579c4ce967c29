"""Alembic migrations for Portway's database, applied by ``Store.open``.

``env.py`` expects the caller to pass an open connection in
``config.attributes["connection"]`` (see :mod:`portway.store.engine`). For developer
use with the ``alembic`` command line (e.g. ``alembic revision --autogenerate``),
it falls back to ``sqlalchemy.url`` from the Alembic config.
"""
