"""The first start on a fresh database: one admin and one token, printed once,
even when several servers (one pool each) start together on it."""

from __future__ import annotations

import asyncio

import pytest

from portway.bootstrap import ensure_first_admin
from portway.settings import Settings
from portway.store import Store
from tests.e2e.server import TOKEN_LINE


async def test_servers_starting_together_make_one_first_admin(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = [await Store.open(db_url) for _ in range(4)]
    try:
        await asyncio.gather(*(ensure_first_admin(store, Settings()) for store in stores))
        printed = TOKEN_LINE.findall(capsys.readouterr().out)
        assert len(printed) == 1
        assert await stores[0].count_users() == 1
        [token] = await stores[0].list_tokens()
        assert (token.user.name, token.user.is_admin) == ("admin", True)
        assert token.scopes == ("inference", "admin")
        assert token.last4 == printed[0][-4:]
        await ensure_first_admin(stores[1], Settings())  # a restart prints nothing
        assert capsys.readouterr().out == ""
    finally:
        for store in stores:
            await store.close()
