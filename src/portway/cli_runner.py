"""``portway runner DIR``: serve a model folder to a Portway server from this machine."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from portway.backends.base import ModelBackend
from portway.registry.runner_spec import RunnerTimeouts


@click.command("runner")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--server", required=True, help="The server's URL, e.g. https://portway.example.")
@click.option(
    "--token",
    envvar="PORTWAY_TOKEN",
    required=True,
    help="A token with the 'runner' scope, of the model's owner [env PORTWAY_TOKEN].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    help="Requests served at once [default: the model's own concurrency].",
)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds in-flight requests get to finish at SIGTERM or SIGINT.",
)
@click.option(
    "--private",
    is_flag=True,
    help="Only the model's owner (and admins) may use it; a catalogue declaration wins.",
)
def runner(
    directory: Path, server: str, token: str, concurrency: int | None, grace: float, private: bool
) -> None:
    """Serve the model in DIRECTORY over one outbound connection to SERVER.

    Prints 'serving REFERENCE version ID' once attached; reconnects when the
    connection drops; exits 1 if the server refuses it. SIGTERM or SIGINT: no
    new requests, those in flight finish (up to --grace seconds), exit 0; a
    second signal stops at once.
    """
    from portway import logs
    from portway.runners.client import connect_url
    from portway.sdk import load_model_dir

    logs.configure()
    try:
        connect_url(server)
        loaded = load_model_dir(directory)
    except Exception as exc:
        raise click.ClickException(str(exc)) from exc
    slots = concurrency or loaded.config.concurrency
    served = Served(
        loaded.backend,
        loaded.reference,
        loaded.version,
        slots,
        private,
        grace,
        loaded.config.timeouts,
    )
    sys.exit(asyncio.run(_serve(served, server, token)))


@dataclass(frozen=True)
class Served:
    """What the runner serves, and how."""

    backend: ModelBackend
    reference: str
    version: str
    concurrency: int
    private: bool
    grace: float
    timeouts: RunnerTimeouts | None = None


async def _serve(served: Served, server: str, token: str) -> int:
    from portway.runners.client import Refused, RunnerClient

    backend = served.backend
    try:
        await backend.start()
    except Exception as exc:
        click.echo(f"loading the model failed: {type(exc).__name__}: {exc}", err=True)
        return 1
    client = RunnerClient(
        backend,
        reference=served.reference,
        version=served.version,
        server=server,
        token=token,
        concurrency=served.concurrency,
        private=served.private,
        timeouts=served.timeouts,
        say=click.echo,
    )
    task = asyncio.ensure_future(client.run())
    stopping: list[asyncio.Future[None]] = []

    def stop() -> None:
        if stopping:  # a second signal: at once
            task.cancel()
            return
        stopping.append(asyncio.ensure_future(client.drain(served.grace)))
        stopping[0].add_done_callback(lambda _: task.cancel())

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await task
    except asyncio.CancelledError:
        return 0
    except Refused as exc:
        click.echo(f"refused: {exc}", err=True)
        return 1
    finally:
        await backend.close()
    return 0
