"""First start on a fresh data dir: an admin user and a token, printed once (by
one process, when several start together on a fresh database)."""

from __future__ import annotations

import sys

from portway.auth import tokens
from portway.auth.issue import check_scopes
from portway.registry.catalog import DEFAULT_APP, DEFAULT_MODEL, DEFAULT_USER
from portway.settings import Settings
from portway.store import Store

ADMIN = "admin"

SNIPPET = """\
Portway created the first user, '{user}' (an admin). Its personal access token,
shown only this once:

    {token}

Use it from Python:

    from openai import OpenAI
    client = OpenAI(base_url="{base}/v1", api_key="{token}")
    reply = client.chat.completions.create(
        model="{base}/{model}",
        messages=[{{"role": "user", "content": "Write a haiku about ports."}}],
    )
    print(reply.choices[0].message.content)

Or open {base}/ in a browser and sign in with it: every model, a playground,
tokens and usage.
"""


async def ensure_first_admin(store: Store, settings: Settings, model: str | None = None) -> None:
    """On a fresh database: create the admin, print its token and a snippet that
    uses ``model`` (a chat model the server serves; default: the embedded one)."""
    if await store.count_users():
        return  # the usual start: no lock taken
    token = tokens.generate()
    made = await store.create_first_admin(
        ADMIN,
        token_hash=tokens.digest(token),
        last4=token[-4:],
        scopes=check_scopes(("inference", "admin")),
        token_name="first start",
    )
    if made is None:
        return  # another process starting with this one made it
    model = model or f"{DEFAULT_USER}/{DEFAULT_APP}/models/{DEFAULT_MODEL}"
    text = SNIPPET.format(user=ADMIN, token=token, base=settings.public_base_url, model=model)
    sys.stdout.write(text)
    sys.stdout.flush()
