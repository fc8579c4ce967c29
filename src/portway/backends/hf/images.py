"""Image models run by a diffusers pipeline from a local directory (``portway[images]``).

Any pipeline ``DiffusionPipeline.from_pretrained`` loads and that takes ``prompt``,
``width``, ``height``, ``num_images_per_prompt``, ``num_inference_steps``,
``guidance_scale`` and ``callback_on_step_end`` (Stable Diffusion 1.x/2.x, SDXL,
...) will do. Generations run one at a time in the backend's own thread; a
cancelled call stops its generation at the next denoising step. Prompts are
counted with a copy of the pipeline's tokenizer: a fast tokenizer keeps padding
and truncation settings in itself, so it must not serve two threads at once.
"""

from __future__ import annotations

import asyncio
import copy
import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from portway.backends.base import GeneratedImage, ImageBackend, ImageCapabilities, ImageRequest
from portway.backends.offline import go_offline
from portway.errors import BackendError, Overloaded

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """Raised from the step callback to end a generation nobody waits for."""


def _load(path: Path, device: str) -> Any:
    go_offline()
    try:
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:
        raise BackendError("diffusers is not installed: pip install 'portway[images]'") from exc
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BackendError(f"Could not load the diffusers pipeline in {path}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class DiffusersBackend(ImageBackend):
    def __init__(
        self,
        path: Path,
        *,
        capabilities: ImageCapabilities,
        device: str = "cpu",
        steps: int = 25,
        guidance: float = 7.5,
        url_ttl: int = 3600,
        max_queue: int = 8,
        model_name: str = "",
    ) -> None:
        self.path = path
        self.capabilities = capabilities
        self.device = device
        self.steps = steps
        self.guidance = guidance
        self.url_ttl = url_ttl
        self.model_name = model_name
        self.steps_done = 0
        """Denoising steps run since start, all generations together."""
        self._max_queue = max_queue
        self._active = 0
        self._pipe: Any = None
        self._tokenizer: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffusers")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._pipe = await loop.run_in_executor(self._executor, _load, self.path, self.device)
        tokenizer = getattr(self._pipe, "tokenizer", None)
        if tokenizer is not None:
            self._tokenizer = copy.deepcopy(tokenizer)
            self.max_prompt_tokens = int(tokenizer.model_max_length)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._pipe = None

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return 0
        return len(self._tokenizer(text, verbose=False)["input_ids"])

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        """Raises ``Overloaded`` when ``max_queue`` generations already wait."""
        if self._active > self._max_queue:
            raise Overloaded(self.model_name)
        stop = threading.Event()
        self._active += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._run, request, stop)
        except asyncio.CancelledError:
            stop.set()
            raise
        finally:
            self._active -= 1

    def _run(self, request: ImageRequest, stop: threading.Event) -> list[GeneratedImage]:
        done = [0]

        def on_step(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            self.steps_done += 1
            done[0] += 1
            if stop.is_set():
                raise _Stopped()
            return tensors

        try:
            return self._pipeline(request, on_step)
        except _Stopped:
            log.info(
                "%s: generation stopped after %d of %d steps: its client left",
                request.request_id,
                done[0],
                self.steps,
            )
            raise

    def _pipeline(self, request: ImageRequest, on_step: Any) -> list[GeneratedImage]:
        try:
            output = self._pipe(
                prompt=request.prompt,
                num_images_per_prompt=request.n,
                width=request.width,
                height=request.height,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                callback_on_step_end=on_step,
            )
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"The image model failed: {type(exc).__name__}") from exc
        return [GeneratedImage(png=_png(image)) for image in output.images]
