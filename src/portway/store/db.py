"""Portway's storage layer: the only code in the project that talks SQL.

:class:`Store` is one object over the database, made of one part per concern:
the engine and migrations (:mod:`~portway.store.engine`), users and tokens
(:mod:`~portway.store.accounts`), the usage ledger (:mod:`~portway.store.ledger`),
stored responses (:mod:`~portway.store.responses`), model versions and runner
models (:mod:`~portway.store.models`), secrets (:mod:`~portway.store.secret_rows`)
and limits (:mod:`~portway.store.limits`).
"""

from __future__ import annotations

from portway.store.accounts import Accounts
from portway.store.ledger import UsageLedger
from portway.store.limits import LimitRows
from portway.store.models import ModelRows
from portway.store.responses import StoredResponses
from portway.store.secret_rows import SecretRows


class Store(Accounts, UsageLedger, StoredResponses, ModelRows, SecretRows, LimitRows):
    """Async access to Portway's database. Create with :meth:`open`."""
