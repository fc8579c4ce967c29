"""``portway model predict``: one request to a loaded model folder, printed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from portway.backends.base import (
    ChatBackend,
    EmbeddingBackend,
    GeneratedImage,
    GenerationRequest,
    ImageBackend,
    ImageRequest,
    Message,
    SamplingParams,
)
from portway.digits import ascii_decimal


async def predict(loaded: Any, text: str, options: dict[str, Any]) -> list[GeneratedImage]:
    """Start the model's backend, run ``text`` through it, close it; an image
    model's images are returned to be written."""
    backend = loaded.backend
    await backend.start()
    try:
        if isinstance(backend, ChatBackend):
            await _chat(backend, text, options)
        elif isinstance(backend, EmbeddingBackend):
            await _embed(backend, text)
        elif isinstance(backend, ImageBackend):
            return await _images(backend, text, options)
        return []
    finally:
        await backend.close()


async def _chat(backend: ChatBackend, text: str, options: dict[str, Any]) -> None:
    messages = [Message("user", text)]
    if options.get("system"):
        messages.insert(0, Message("system", options["system"]))
    temperature = options.get("temperature")
    sampling = SamplingParams(
        max_tokens=options.get("max_tokens"),
        temperature=1.0 if temperature is None else temperature,
    )
    prompt = completion = 0
    finish = None
    async for delta in backend.generate(GenerationRequest(tuple(messages), sampling)):
        prompt = delta.prompt_tokens if delta.prompt_tokens is not None else prompt
        completion += delta.tokens
        if delta.reasoning:
            click.secho(delta.reasoning, nl=False, dim=True, err=True)
        for call in delta.calls:
            if call.name:
                click.echo(f"\n[tool call {call.index}] {call.name}(", nl=False)
            click.echo(call.arguments, nl=False)
        click.echo(delta.text, nl=False)
        sys.stdout.flush()
        finish = delta.finish_reason or finish
    click.echo()
    click.echo(
        f"[finish_reason={finish} prompt_tokens={prompt} completion_tokens={completion}]",
        err=True,
    )


async def _embed(backend: EmbeddingBackend, text: str) -> None:
    counts = await backend.count_tokens([text])
    vector = (await backend.embed([text]))[0]
    head = ", ".join(f"{value:.6f}" for value in vector[:8])
    click.echo(f"dimensions: {len(vector)}")
    click.echo(f"first values: [{head}{', ...' if len(vector) > 8 else ''}]")
    click.echo(f"[prompt_tokens={counts[0]}]", err=True)


async def _images(
    backend: ImageBackend, text: str, options: dict[str, Any]
) -> list[GeneratedImage]:
    width_text, _, height_text = str(options["size"]).partition("x")
    width, height = ascii_decimal(width_text, 5), ascii_decimal(height_text, 5)
    if width is None or height is None:
        raise click.BadParameter("expected WIDTHxHEIGHT", param_hint="--size")
    request = ImageRequest(text, n=options["n"], width=width, height=height)
    return await backend.generate(request)


def write_images(images: list[GeneratedImage], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images, start=1):
        path = out / f"image-{index}.png"
        path.write_bytes(image.png)
        click.echo(f"wrote {path}")
