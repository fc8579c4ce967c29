"""Embeddings: the wire request to texts, the model's vectors to OpenAI's body.

An input longer than the model takes is refused (400 ``context_length_exceeded``),
never truncated: OpenAI's API has no parameter by which a client could ask for
truncation. Token-id inputs are decoded with the model's own tokenizer. Vectors go
out as float32 values in both encodings, so base64 decodes to exactly the floats.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from typing import Any

from portway.backends.base import EmbeddingBackend
from portway.errors import InvalidRequest, UnsupportedParameter
from portway.protocol.embeddings import (
    Embedding,
    EmbeddingInput,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from portway.registry.models import ModelEntry, Registry
from portway.serving.context import RequestContext
from portway.serving.metering import Recorder, ledger_row


def _token_lists(value: list[str] | list[int] | list[list[int]]) -> list[list[int]]:
    ids = [item for item in value if isinstance(item, int)]
    if len(ids) == len(value):
        return [ids]
    return [item for item in value if isinstance(item, list)]


def _check_vocabulary(lists: list[list[int]], vocab_size: int) -> None:
    for index, ids in enumerate(lists):
        if min(ids) < 0 or max(ids) >= vocab_size:
            token = next(token for token in ids if not 0 <= token < vocab_size)
            raise InvalidRequest(
                f"'input[{index}]' holds the token id {token}, which is outside this "
                f"model's vocabulary (0 to {vocab_size - 1}).",
                param="input",
                code="invalid_value",
            )


async def _texts(value: EmbeddingInput, backend: EmbeddingBackend) -> list[str]:
    """The inputs as texts: token ids are decoded by the model's tokenizer."""
    if isinstance(value, str):
        return [value]
    texts = [item for item in value if isinstance(item, str)]
    if len(texts) == len(value):
        return texts
    lists = _token_lists(value)
    if not backend.vocab_size:
        raise UnsupportedParameter("input", "cannot hold token ids for this model; send text")
    _check_vocabulary(lists, backend.vocab_size)
    return await backend.decode(lists)


def _check_lengths(counts: list[int], limit: int) -> None:
    for index, count in enumerate(counts):
        if count > limit:
            raise InvalidRequest(
                f"This model's maximum input length is {limit} tokens, but input[{index}] "
                f"holds {count} tokens. Please shorten it: Portway does not truncate inputs.",
                param="input",
                code="context_length_exceeded",
            )


def _dimensions(request: EmbeddingRequest, backend: EmbeddingBackend) -> int:
    full = backend.dimensions
    wanted = request.dimensions or full
    if wanted > full:
        raise InvalidRequest(
            f"'dimensions' is {wanted}, but this model's vectors have {full}.",
            param="dimensions",
            code="invalid_value",
        )
    if wanted < full and not backend.shortening:
        raise UnsupportedParameter(
            "dimensions", f"is not supported by this model: its vectors keep all {full}"
        )
    return wanted


def shorten(vector: list[float], dimensions: int) -> list[float]:
    """The first ``dimensions`` values, re-normalised to unit length (as float32)."""
    head = vector[:dimensions]
    norm = math.sqrt(math.fsum(value * value for value in head))
    scaled = [value / norm for value in head] if norm else head
    return array("f", scaled).tolist()


def encode_base64(vector: list[float]) -> str:
    """Little-endian float32 bytes, base64: what OpenAI's clients decode."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


class EmbeddingService:
    def __init__(self, registry: Registry, recorder: Recorder) -> None:
        self.registry = registry
        self.recorder = recorder

    async def create(
        self, ctx: RequestContext, request: EmbeddingRequest, entry: ModelEntry | None = None
    ) -> dict[str, Any]:
        """OpenAI's ``CreateEmbeddingResponse`` body; refusals raise before any row is
        written. ``entry`` is the model ``request`` names, if the caller resolved it."""
        entry = entry or self.registry.resolve(request.model, ctx.principal)
        ctx.log_fields["model"] = entry.name
        backend = entry.embedding_backend()
        dimensions = _dimensions(request, backend)
        texts = await _texts(request.input, backend)
        counts = await backend.count_tokens(texts)
        _check_lengths(counts, backend.max_input_tokens)
        meter = ctx.meter(request.user)
        meter.model, meter.version_id = entry.name, entry.version_id
        meter.prompt_tokens = sum(counts)
        with ledger_row(self.recorder, meter, ctx):
            vectors = await backend.embed(texts)
        if dimensions < backend.dimensions:
            vectors = [shorten(vector, dimensions) for vector in vectors]
        encoded: list[list[float] | str]
        if request.encoding_format == "base64":
            encoded = [encode_base64(vector) for vector in vectors]
        else:
            encoded = [array("f", vector).tolist() for vector in vectors]
        return EmbeddingResponse(
            data=[Embedding(index=index, embedding=item) for index, item in enumerate(encoded)],
            model=entry.name,
            usage=EmbeddingUsage(
                prompt_tokens=meter.prompt_tokens, total_tokens=meter.prompt_tokens
            ),
        ).model_dump(mode="json")
