"""A server killed right after answering: every answered request is on record
after the restart, once."""

from __future__ import annotations

import signal
from pathlib import Path

import openai

from tests.e2e.conftest import SCRIPTED
from tests.e2e.ledger import usage_rows
from tests.e2e.server import SCRIPTED_CATALOG, Server

ANSWERED = 5
HELLO = [{"role": "user", "content": "Say something."}]


def test_answered_requests_are_on_record_after_a_kill(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", catalog="default_model = false\n" + SCRIPTED_CATALOG)
    server.start()
    try:
        token = server.token("kim")
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
        for index in range(ANSWERED):
            reply = client.chat.completions.create(model=SCRIPTED, messages=HELLO, user=f"u{index}")
            assert reply.choices[0].message.content
            stream = client.chat.completions.create(model=SCRIPTED, messages=HELLO, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        server.start()
        rows = usage_rows(server, "kim")
    finally:
        server.stop()
    assert len(rows) == 2 * ANSWERED
    assert len({row.entry_id for row in rows}) == 2 * ANSWERED
    assert {row.status for row in rows} == {"completed"}
    assert sorted(row.end_user or "" for row in rows) == sorted(
        [f"u{index}" for index in range(ANSWERED)] + [""] * ANSWERED
    )
