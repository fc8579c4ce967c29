"""``portway pat``'s two ways to a token store: a running server's API
(``--server URL --token TOKEN``), or the database of a data dir on this machine,
which is never created by mistake: a missing SQLite file is an error unless
``--create`` says to make one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
from sqlalchemy.engine import make_url

from portway.settings import Settings
from portway.store.engine import normalise_url

NO_DATABASE = (
    "There is no database at {path}, so no server uses this data dir ({data_dir}).\n"
    "Name the server's data dir with --data-dir (or PORTWAY_DATA_DIR), or ask the running "
    "server: --server URL --token ADMIN_TOKEN. To start a new, empty database here, add --create."
)


def describe_database(settings: Settings) -> str:
    """Which data dir and database a local command uses (no password shown)."""
    url = make_url(settings.db_url).render_as_string(hide_password=True)
    return f"# data dir {settings.data_dir}, database {url}"


def require_database(settings: Settings, create: bool) -> None:
    """Refuse to go on if the SQLite file is missing and ``create`` is false."""
    url = normalise_url(settings.db_url)
    if create or url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(str(url.database))
    if not path.exists():
        raise click.ClickException(NO_DATABASE.format(path=path, data_dir=settings.data_dir))


def _error_message(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"{response.status_code} from the server: {message}"


def remote(server: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    """Call a running server's API with ``token``; a refusal becomes a ClickException."""
    if not token:
        raise click.UsageError("--server needs --token (or PORTWAY_TOKEN).")
    url = server.rstrip("/") + path
    try:
        response = httpx.request(
            method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"Could not reach {url}: {exc}") from exc
    if response.status_code != 200:
        raise click.ClickException(_error_message(response))
    return response.json()


def iso(seconds: int | None) -> str:
    """A Unix time of the API as ISO 8601 UTC; None: ``never``."""
    return "never" if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def token_line(item: dict[str, Any]) -> str:
    """One token as ``pat list`` prints it (from the API's token object)."""
    state = "revoked" if item["revoked_at"] else "active"
    return (
        f"{item['id']}\t{item['user']}\t{','.join(item['scopes'])}\t…{item['last4']}\t"
        f"{state}\tcreated={iso(item['created_at'])}\texpires={iso(item['expires_at'])}"
    )
