"""``portway model``: write, try and serve a model folder (``portway.sdk``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from portway.bootstrap import ADMIN
from portway.private import private_dir
from portway.settings import Settings, clean_public_url

folder_argument = click.argument(
    "folder", type=click.Path(path_type=Path, file_okay=False, exists=True)
)


@click.group("model")
def model() -> None:
    """Your own models: a folder with model.py and portway-model.toml."""


def _segment(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned or "my-model"


@model.command("init")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--user", help="The model's owner [default: the user of the token that serves it].")
@click.option("--app", default="demo", show_default=True, help="The model's app.")
@click.option("--id", "model_id", help="The model's id [default: the folder's name].")
def model_init(folder: Path, user: str | None, app: str, model_id: str | None) -> None:
    """Write a working echo chat model into FOLDER."""
    from portway.sdk.scaffold import write_echo_model

    model_id = model_id or _segment(folder.resolve().name)
    try:
        written = write_echo_model(folder, user=user, app=app, model_id=model_id)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f'try it: portway model predict {folder} "Hello there"')


def _load(folder: Path) -> Any:
    from portway.backends.python.loader import load_model_dir
    from portway.sdk.requirements import MissingRequirements

    try:
        return load_model_dir(folder)
    except (ValueError, MissingRequirements) as exc:
        raise click.ClickException(str(exc)) from exc


@model.command("predict")
@folder_argument
@click.argument("text")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Chat: the most tokens to write.")
@click.option("--system", help="Chat: a system message before TEXT.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Chat: sampling temperature.")
@click.option("--n", type=click.IntRange(1, 10), default=1, help="Images: how many.")
@click.option("--size", default="512x512", show_default=True, help="Images: WIDTHxHEIGHT.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    help="Images: the folder to write PNGs into.",
)
def model_predict(folder: Path, text: str, **options: Any) -> None:
    """Run the model in FOLDER on TEXT, without a server.

    Chat models stream their reply to stdout (usage to stderr); embedding models
    print their vector's dimensions and first values; image models write PNGs.
    """
    from portway.cli_predict import predict, write_images
    from portway.errors import PortwayError

    loaded = _load(folder)
    try:
        images = asyncio.run(predict(loaded, text, options))
    except PortwayError as exc:
        raise click.ClickException(exc.message) from exc
    write_images(images, options["out"])


def model_catalog(folder: Path, config: Any) -> str:
    """A catalogue that serves the folder alone."""
    entry = {
        "user": config.user or ADMIN,
        "app": config.app,
        "model": config.id,
        "backend": "python",
        "path": str(folder.resolve()),
    }
    fields = "\n".join(f"{key} = {json.dumps(value)}" for key, value in entry.items())
    return f"default_model = false\ndefault_embedding_model = false\n\n[[models]]\n{fields}\n"


def _public_url(value: str | None) -> str | None:
    try:
        return None if value is None else clean_public_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@model.command("serve")
@folder_argument
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", type=click.Path(path_type=Path), help="[env PORTWAY_DATA_DIR]")
@click.option("--database-url", help="SQLAlchemy URL [env PORTWAY_DATABASE_URL].")
@click.option("--grace", default=30.0, show_default=True, help="Seconds for in-flight requests.")
@click.option(
    "--public-url",
    envvar="PORTWAY_PUBLIC_URL",
    callback=lambda _ctx, _param, value: _public_url(value),
    help="Where clients reach the server [default: http://HOST:PORT; env PORTWAY_PUBLIC_URL].",
)
@click.pass_context
def model_serve(ctx: click.Context, /, folder: Path, data_dir: Path | None, **options: Any) -> None:
    """Serve the model in FOLDER on a local Portway (default models off).

    The catalogue is written to DATA_DIR/model-serve.toml; on a fresh data
    directory the admin token is printed once.
    """
    from portway.sdk.config import ModelConfigError, load_config
    from portway.sdk.requirements import MissingRequirements, check_requirements

    try:
        config = load_config(folder.resolve())
        check_requirements(config.requirements, str(folder / "portway-model.toml"))
    except (ModelConfigError, MissingRequirements) as exc:
        raise click.ClickException(str(exc)) from exc
    settings = Settings.from_env(data_dir=data_dir)
    private_dir(settings.data_dir)
    os.environ["PORTWAY_DATA_DIR"] = str(settings.data_dir)  # for the model (open_llama)
    catalog = settings.data_dir / "model-serve.toml"
    catalog.write_text(model_catalog(folder, config), encoding="utf-8")
    base = (options["public_url"] or f"http://{options['host']}:{options['port']}") + "/v1"
    click.echo(f"serving {config.owned_by(ADMIN)} at {base} (data in {settings.data_dir})")
    sys.stdout.flush()
    serve = _sibling(ctx, "serve")
    ctx.invoke(serve, data_dir=settings.data_dir, config=catalog, **options)


def _sibling(ctx: click.Context, name: str) -> click.Command:
    """The ``portway`` command ``name``, found through the command line's root
    group (importing ``portway.cli``, which imports this module, would make a cycle)."""
    root = ctx.find_root().command
    command = root.get_command(ctx, name) if isinstance(root, click.Group) else None
    if command is None:
        raise click.UsageError(f"no portway command {name!r}")
    return command
