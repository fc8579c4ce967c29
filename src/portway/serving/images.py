"""Image generation: check the request against the model, run it, store or inline
the PNGs.

The ledger row of an image request holds the prompt's tokens (as the model's
text encoder counts them) in ``prompt_tokens`` and the number of images made in
``completion_tokens``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any

from portway.backends.base import GeneratedImage, ImageBackend, ImageCapabilities, ImageRequest
from portway.errors import InvalidRequest, UnsupportedParameter
from portway.protocol.images import (
    Image,
    ImageGenerationRequest,
    ImageInputTokensDetails,
    ImagesResponse,
    ImageUsage,
)
from portway.registry.models import ModelEntry, Registry
from portway.serving.context import RequestContext
from portway.serving.media import MediaStore
from portway.serving.metering import Recorder, ledger_row

SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


def _options(request: ImageGenerationRequest, caps: ImageCapabilities) -> dict[str, Any]:
    """Parameters that are set to a value the model does not take, with what it takes."""
    checks = {
        "quality": (request.quality, caps.qualities),
        "style": (request.style, caps.styles),
        "background": (request.background, caps.backgrounds),
        "output_format": (request.output_format, caps.output_formats),
    }
    return {
        name: accepted
        for name, (value, accepted) in checks.items()
        if value is not None and value not in accepted
    }


def check_supported(request: ImageGenerationRequest, caps: ImageCapabilities) -> None:
    """Raise UnsupportedParameter for the first parameter the model cannot honour."""
    for name, accepted in _options(request, caps).items():
        takes = ", ".join(f"'{value}'" for value in accepted) or "no value"
        raise UnsupportedParameter(name, f"is not supported by this model (it takes {takes})")
    if request.output_compression is not None and (request.output_format or "png") == "png":
        raise UnsupportedParameter("output_compression", "applies only to jpeg and webp output")
    if request.stream:
        raise UnsupportedParameter(
            "stream", "is not supported by local image models (hosted image models stream)"
        )
    if request.partial_images is not None:
        raise UnsupportedParameter("partial_images", "needs 'stream', which is not supported")


def parse_size(size: str | None, caps: ImageCapabilities) -> tuple[int, int]:
    """``(width, height)`` for ``size`` (``auto`` or none: the model's default)."""
    if size is None or size == "auto":
        return caps.default_size
    found = SIZE.fullmatch(size)
    if not found:
        raise InvalidRequest(
            f"Invalid value for 'size': '{size[:32]}' is not 'auto' or WIDTHxHEIGHT.",
            param="size",
            code="invalid_value",
        )
    width, height = int(found[1]), int(found[2])
    for side in (width, height):
        if side % caps.side_multiple or not caps.min_side <= side <= caps.max_side:
            raise InvalidRequest(
                f"The size '{size}' is not supported by this model: width and height must be "
                f"multiples of {caps.side_multiple} from {caps.min_side} to {caps.max_side}.",
                param="size",
                code="unsupported_value",
            )
    return width, height


class ImageService:
    def __init__(self, registry: Registry, recorder: Recorder, media: MediaStore) -> None:
        self.registry = registry
        self.recorder = recorder
        self.media = media

    async def generate(
        self,
        ctx: RequestContext,
        request: ImageGenerationRequest,
        base_url: str,
        entry: ModelEntry | None = None,
    ) -> dict[str, Any]:
        """OpenAI's ``ImagesResponse`` body; ``url`` results are links under ``base_url``.
        ``entry`` is the model ``request`` names, if the caller resolved it."""
        entry = entry or self.registry.resolve(request.model, ctx.principal)
        ctx.log_fields["model"] = entry.name
        backend = entry.image_backend()
        check_supported(request, backend.capabilities)
        width, height = parse_size(request.size, backend.capabilities)
        meter = ctx.meter(request.user)
        meter.model, meter.version_id = entry.name, entry.version_id
        meter.prompt_tokens = backend.prompt_tokens(request.prompt)
        work = ImageRequest(request.prompt, request.n or 1, width, height, ctx.request_id)
        with ledger_row(self.recorder, meter, ctx):
            images = await backend.generate(work)
            meter.completion_tokens = len(images)
            data = [
                await self._wire(image, request.response_format or "url", backend, base_url)
                for image in images
            ]
        usage = ImageUsage(
            input_tokens=meter.prompt_tokens,
            output_tokens=0,
            total_tokens=meter.prompt_tokens,
            input_tokens_details=ImageInputTokensDetails(text_tokens=meter.prompt_tokens),
        )
        body = ImagesResponse(created=int(time.time()), data=data, output_format="png", usage=usage)
        return body.model_dump(mode="json", exclude_none=True)

    async def _wire(
        self, image: GeneratedImage, response_format: str, backend: ImageBackend, base_url: str
    ) -> Image:
        if response_format == "b64_json":
            encoded = base64.b64encode(image.png).decode("ascii")
            return Image(b64_json=encoded, revised_prompt=image.revised_prompt)
        link = await asyncio.to_thread(self.media.put, image.png, "png", backend.url_ttl)
        return Image(url=base_url.rstrip("/") + link, revised_prompt=image.revised_prompt)
