"""Which database errors the usage ledger retries later rather than set the row
aside for: those that say nothing about the row."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError

TEMPORARY_SQLSTATES = ("40001", "40P01")
"""PostgreSQL's serialization failure and deadlock: the same insert succeeds later."""
TEMPORARY_SQLSTATE_CLASSES = ("08", "57P")
"""PostgreSQL's connection exceptions and operator interventions (a shutdown)."""


def is_temporary(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot take rows now, not that it refuses
    this one: an OperationalError (SQLite's "database is locked", say), a dropped
    connection, a connection error, or a PostgreSQL serialization failure or
    deadlock (as asyncpg raises it or as SQLAlchemy wraps it)."""
    if isinstance(exc, OperationalError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return any(_temporary_sqlstate(error) for error in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver's error it wraps, and what that one wraps."""
    found: list[BaseException] = [exc]
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        found.append(orig)
    for error in list(found):
        if error.__cause__ is not None:
            found.append(error.__cause__)
    return found


def _temporary_sqlstate(error: BaseException) -> bool:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if not isinstance(state, str):
        return False
    return state in TEMPORARY_SQLSTATES or state.startswith(TEMPORARY_SQLSTATE_CLASSES)
