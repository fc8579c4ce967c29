"""Read the usage ledger of a test server straight from its database."""

from __future__ import annotations

import asyncio
import time

from portway.settings import Settings
from portway.store import Store, UsageRecord
from tests.e2e.server import Server


def usage_rows(server: Server, user: str) -> list[UsageRecord]:
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)

    async def read() -> list[UsageRecord]:
        store = await Store.open(settings.db_url)
        try:
            return await store.list_usage(user)
        finally:
            await store.close()

    return asyncio.run(read())


def wait_for_rows(server: Server, user: str, count: int, timeout: float = 10) -> list[UsageRecord]:
    """The user's rows once there are ``count`` of them (the ledger is written in batches)."""
    deadline = time.monotonic() + timeout
    rows = usage_rows(server, user)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = usage_rows(server, user)
    return rows
