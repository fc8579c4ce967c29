"""The ``portway`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click

from portway import cli_tokens
from portway.auth.issue import ScopeError, issue_token
from portway.cli_limits import connection_options
from portway.cli_serve import cluster_options
from portway.private import private_dir
from portway.settings import Settings, clean_public_url
from portway.store import Store

T = TypeVar("T")

data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), help="Data directory [env PORTWAY_DATA_DIR]."
)
database_option = click.option("--database-url", help="SQLAlchemy URL [env PORTWAY_DATABASE_URL].")
config_option = click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False), help="Catalogue TOML file."
)


def _settings(**options: Any) -> Settings:
    return Settings.from_env(**options)


def _public_url(value: str | None) -> str | None:
    try:
        return None if value is None else clean_public_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        private_dir(settings.data_dir)
        store = await Store.open(settings.db_url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


@click.group()
@click.version_option(package_name="portway")
def main() -> None:
    """Portway: an OpenAI-compatible door to every model a team runs."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@data_dir_option
@config_option
@database_option
@click.option(
    "--grace", default=30.0, show_default=True, help="Seconds in-flight requests get at shutdown."
)
@click.option(
    "--public-url",
    envvar="PORTWAY_PUBLIC_URL",
    callback=lambda _ctx, _param, value: _public_url(value),
    help="Where clients reach the server; image links use it "
    "[default: http://HOST:PORT; env PORTWAY_PUBLIC_URL].",
)
@connection_options
@cluster_options
def serve(host: str, port: int, grace: float, **options: Any) -> None:
    """Serve the API (SIGTERM or SIGINT: finish in-flight requests, then exit 0)."""
    from portway import cli_serve, logs, workers

    settings = _settings(host=host, port=port, grace_seconds=grace, **options)
    logs.configure()
    cli_serve.check_cluster(settings)
    sys.exit(workers.serve(settings))


@main.group()
def pat() -> None:
    """Personal access tokens."""


@pat.command("create")
@click.option(
    "--user",
    "user_name",
    help="Owner (created if new). Required here; with --server: the token's own user.",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="inference (default), runner or admin; repeat it (or join with commas) for several. "
    "A token has only the scopes named: admin implies no other.",
)
@click.option(
    "--expires-in", type=click.FloatRange(min=0, min_open=True), help="Days until it expires."
)
@click.option("--name", default="", help="A name to tell the token by (shown in the console).")
@click.option("--server", help="Ask this running server (its URL) instead of a local database.")
@click.option(
    "--token",
    envvar="PORTWAY_TOKEN",
    help="With --server: your token (admin scope for another --user) [env PORTWAY_TOKEN].",
)
@click.option("--create", is_flag=True, help="Make a new database if the data dir has none.")
@data_dir_option
@database_option
def pat_create(
    user_name: str | None,
    scopes: tuple[str, ...],
    expires_in: float | None,
    name: str,
    server: str | None,
    token: str | None,
    create: bool,
    **options: Any,
) -> None:
    """Create a token; the token alone is the last line of stdout."""
    if server:
        _pat_create_remote(server, token, user_name, scopes, expires_in, name)
        return
    if not user_name:
        raise click.UsageError("Missing option '--user' (needed without --server).")
    settings = _settings(**options)
    cli_tokens.require_database(settings, create)
    click.echo(cli_tokens.describe_database(settings), err=True)
    try:
        secret, info = _with_store(
            settings,
            lambda store: issue_token(
                store,
                user_name,
                scopes=scopes or ("inference",),
                expires_in_days=expires_in,
                name=name,
            ),
        )
    except ScopeError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from exc
    expiry = info.expires_at.isoformat() if info.expires_at else "never"
    click.echo(
        f"# {info.id} for {info.user.name}, scopes {','.join(info.scopes)}, expires {expiry}"
    )
    click.echo(secret)


def _pat_create_remote(
    server: str,
    token: str | None,
    user_name: str | None,
    scopes: tuple[str, ...],
    expires_in: float | None,
    name: str,
) -> None:
    body: dict[str, Any] = {"scopes": list(scopes) or ["inference"], "name": name}
    if user_name:
        body["user"] = user_name
        body["create_user"] = True  # as `pat create --user` does without --server
    if expires_in is not None:
        body["expires_in_days"] = expires_in
    made = cli_tokens.remote(server, token, "POST", "/v1/tokens", body)
    expiry = cli_tokens.iso(made["expires_at"])
    click.echo(
        f"# {made['id']} for {made['user']}, scopes {','.join(made['scopes'])}, expires {expiry}"
    )
    click.echo(made["token"])


@pat.command("list")
@click.option("--user", "user_name", help="Only this user's tokens.")
@click.option("--server", help="Ask this running server (its URL); your own tokens by default.")
@click.option("--token", envvar="PORTWAY_TOKEN", help="With --server: your token.")
@data_dir_option
@database_option
def pat_list(user_name: str | None, server: str | None, token: str | None, **options: Any) -> None:
    """One token a line, its id first; never the secret."""
    if server:
        query = f"?user={quote(user_name, safe='')}" if user_name else ""
        for item in cli_tokens.remote(server, token, "GET", "/v1/tokens" + query)["data"]:
            click.echo(cli_tokens.token_line(item))
        return
    settings = _settings(**options)
    cli_tokens.require_database(settings, create=False)
    found = _with_store(settings, lambda store: store.list_tokens(user_name))
    for info in found:
        state = "revoked" if info.revoked_at else "active"
        expires = info.expires_at.isoformat() if info.expires_at else "never"
        click.echo(
            f"{info.id}\t{info.user.name}\t{','.join(info.scopes)}\t…{info.last4}\t"
            f"{state}\tcreated={info.created_at.isoformat()}\texpires={expires}"
        )


@pat.command("revoke")
@click.argument("token_id")
@click.option("--server", help="Ask this running server (its URL).")
@click.option("--token", envvar="PORTWAY_TOKEN", help="With --server: your token.")
@data_dir_option
@database_option
def pat_revoke(token_id: str, server: str | None, token: str | None, **options: Any) -> None:
    """Revoke a token by id; servers refuse it within seconds."""
    if server:
        cli_tokens.remote(server, token, "DELETE", f"/v1/tokens/{quote(token_id, safe='')}")
        click.echo(f"revoked {token_id}")
        return
    settings = _settings(**options)
    cli_tokens.require_database(settings, create=False)
    if not _with_store(settings, lambda store: store.revoke_token(token_id)):
        raise click.ClickException(f"no active token with id {token_id}")
    click.echo(f"revoked {token_id}")


@main.command()
@click.option("--user", "user_name", help="Only this user's usage.")
@click.option(
    "--rejected", is_flag=True, help="The usage rows the database refused, set aside, instead."
)
@data_dir_option
@database_option
def usage(user_name: str | None, rejected: bool, **options: Any) -> None:
    """Requests and tokens used, by user and model."""
    if rejected:
        _rejected_usage(_settings(**options))
        return
    rows = _with_store(_settings(**options), lambda store: store.usage_summary(user_name))
    click.echo("user\tmodel\trequests\tprompt_tokens\tcompletion_tokens")
    for row in rows:
        click.echo(
            f"{row.user}\t{row.model}\t{row.requests}\t{row.prompt_tokens}\t{row.completion_tokens}"
        )


def _rejected_usage(settings: Settings) -> None:
    rows = _with_store(settings, lambda store: store.rejected_usage())
    click.echo("rejected_at\trequest_id\treason\trecord")
    for row in rows:
        record = json.dumps(row.record, ensure_ascii=True, separators=(",", ":"))
        click.echo(f"{row.rejected_at.isoformat()}\t{row.request_id}\t{row.reason}\t{record}")


@main.group()
def models() -> None:
    """The models this server serves."""


@models.command("list")
@data_dir_option
@config_option
def models_list(**options: Any) -> None:
    """Print each served model: reference, backend, visibility, aliases."""
    from portway.registry import catalog

    settings = _settings(**options)
    try:
        specs = catalog.specs(catalog.load(settings.catalog_path))
    except catalog.CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    for spec in specs:
        aliases = ",".join(spec.aliases) or "-"
        click.echo(
            f"{spec.user}/{spec.app}/models/{spec.model}\t{spec.backend}\t{spec.visibility}\t{aliases}"
        )


@main.group()
def secret() -> None:
    """Secrets (upstream API keys), stored encrypted with the data dir's key."""


@secret.command("set")
@click.argument("name")
@data_dir_option
@database_option
def secret_set(name: str, **options: Any) -> None:
    """Store a secret: the value is read from stdin (or a hidden prompt), never an argument."""
    from portway.store.secrets import SecretBox, SecretError, set_secret

    if sys.stdin.isatty():
        value = click.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read().strip()
    settings = _settings(**options)
    try:
        box = SecretBox.open(settings.data_dir)
        _with_store(settings, lambda store: set_secret(store, box, name, value))
    except SecretError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"stored secret {name}")


@secret.command("list")
@data_dir_option
@database_option
def secret_list(**options: Any) -> None:
    """One secret a line: name, created, updated; never the value."""
    found = _with_store(_settings(**options), lambda store: store.list_secrets())
    for info in found:
        click.echo(
            f"{info.name}\tcreated={info.created_at.isoformat()}\tupdated={info.updated_at.isoformat()}"
        )


@secret.command("delete")
@click.argument("name")
@data_dir_option
@database_option
def secret_delete(name: str, **options: Any) -> None:
    """Delete a secret; models that use it fail with a 502 until it is set again."""
    if not _with_store(_settings(**options), lambda store: store.delete_secret(name)):
        raise click.ClickException(f"no secret named {name}")
    click.echo(f"deleted secret {name}")


from portway.cli_runner import runner as _runner  # noqa: E402

main.add_command(_runner)


from portway.cli_model import model as _model  # noqa: E402

main.add_command(_model)


from portway.cli_quota import limits as _limits  # noqa: E402

main.add_command(_limits)
