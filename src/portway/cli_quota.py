"""``portway limits``: set and list limits per user and per token, in the database
every server of a data dir (or a ``--database-url``) reads them from. Servers
apply a change within 2 seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from portway import cli_tokens
from portway.settings import Settings
from portway.store import Store
from portway.store.limits import LimitRow

UNLIMITED = "none"

_FLAGS = (
    ("--rpm", "rpm", "Requests per minute."),
    ("--tpm", "tpm", "Tokens per minute (prompt and completion)."),
    ("--concurrent", "concurrent", "Requests at once."),
    ("--daily-tokens", "tokens_per_day", "Tokens per UTC day."),
    ("--monthly-tokens", "tokens_per_month", "Tokens per UTC month."),
)


class LimitValue(click.ParamType[Any, Any]):
    """A whole number from 0, or ``none`` (unlimited)."""

    name = "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) or value is None:
            return value
        text = str(value).strip().lower()
        if text == UNLIMITED:
            return UNLIMITED
        if not (text.isascii() and text.isdigit()) or len(text) > 15:
            self.fail(f"{value!r} is not a whole number from 0, or 'none'", param, ctx)
        return int(text)


def _run(settings: Settings, work: Any) -> Any:
    async def run() -> Any:
        store = await Store.open(settings.db_url)
        try:
            return await work(store)
        finally:
            await store.close()

    cli_tokens.require_database(settings, create=False)
    return asyncio.run(run())


def _options(function: Any) -> Any:
    for flag, name, text in reversed(_FLAGS):
        function = click.option(flag, name, type=LimitValue(), help=f"{text} 'none': unlimited.")(
            function
        )
    return function


@click.group("limits")
def limits() -> None:
    """Limits per user and per token (requests, tokens, concurrency, budgets)."""


@limits.command("set")
@click.option("--user", "user_name", help="Limit this user (every token of it, together).")
@click.option("--token", "token_id", help="Limit this token (its id, tok_...).")
@_options
@click.option("--clear", is_flag=True, help="Remove every limit of the user or token.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="[env PORTWAY_DATA_DIR]")
@click.option("--database-url", help="[env PORTWAY_DATABASE_URL]")
def limits_set(user_name: str | None, token_id: str | None, clear: bool, **options: Any) -> None:
    """Set some limits of one user or one token; the others are kept."""
    if (user_name is None) == (token_id is None):
        raise click.UsageError("Name exactly one of --user and --token.")
    values = {
        name: (None if options[name] == UNLIMITED else options[name])
        for _flag, name, _text in _FLAGS
        if options[name] is not None
    }
    if not values and not clear:
        raise click.UsageError("Give a limit to set (--rpm, --tpm, ...) or --clear.")
    if values and clear:
        raise click.UsageError("--clear removes every limit; give no others with it.")
    settings = Settings.from_env(data_dir=options["data_dir"], database_url=options["database_url"])
    click.echo(cli_tokens.describe_database(settings), err=True)
    _run(settings, lambda store: _set(store, user_name, token_id, values, clear))
    click.echo(f"{'cleared' if clear else 'set'} limits of {user_name or token_id}")


async def _set(
    store: Store,
    user_name: str | None,
    token_id: str | None,
    values: dict[str, int | None],
    clear: bool,
) -> None:
    subject: dict[str, Any]
    if user_name is not None:
        user = await store.get_user(user_name)
        if user is None:
            raise click.ClickException(f"no user named {user_name}")
        subject = {"user_id": user.id}
    else:
        if await store.get_token(str(token_id)) is None:
            raise click.ClickException(f"no token with id {token_id}")
        subject = {"token_id": token_id}
    if clear:
        await store.clear_limits(**subject)
    else:
        await store.set_limits(values, **subject)


def limit_line(row: LimitRow) -> str:
    """One subject's limits as ``limits list`` prints them."""
    subject = f"token {row.token_id} of {row.user}" if row.token_id else f"user {row.user}"
    values = "\t".join(
        f"{flag.removeprefix('--')}={getattr(row, name) if getattr(row, name) is not None else '-'}"
        for flag, name, _text in _FLAGS
    )
    return f"{subject}\t{values}"


@limits.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path), help="[env PORTWAY_DATA_DIR]")
@click.option("--database-url", help="[env PORTWAY_DATABASE_URL]")
def limits_list(data_dir: Path | None, database_url: str | None) -> None:
    """Every user's and token's limits, one a line ('-': unlimited)."""
    settings = Settings.from_env(data_dir=data_dir, database_url=database_url)
    click.echo(cli_tokens.describe_database(settings), err=True)
    for row in _run(settings, lambda store: store.list_limits()):
        click.echo(limit_line(row))
