"""Runs GGUF models in-process with llama-cpp-python.

One ``llama_cpp.Llama`` per backend, one generation at a time on it. The blocking
llama.cpp loop runs on a dedicated worker thread and hands ``Delta``s back to the
event loop through an ``asyncio.Queue``.

Sampling is llama-cpp-python's own (``Llama.generate``, whose sampler chain is
logit bias → presence/frequency penalties → top-p → temperature → seeded draw, or
greedy at temperature 0; as in llama.cpp, top-p is applied before temperature).
The seed is set per request with ``Llama.set_seed`` before the chain is built, so
the same seed and request give the same tokens; no seed draws a random one.
Prompts that share a prefix with the previous one reuse its KV cache
(``Llama.generate`` does that). Once started, the prompt's evaluation cannot be
interrupted; cancellation is checked before every generated token.

Prompts: only the chat template's own markup becomes control tokens; a control
token's text that a client wrote (``<end_of_turn>`` in a message, say) is tokenised
as plain text, so it cannot forge a turn (see ``control_text``).

Constrained decoding (``GenerationRequest.constraint``): the grammar is compiled
with llguidance for this model's tokenizer (built once, on the first constrained
request) before the request waits for its turn, so a grammar that cannot be
compiled fails before the first delta. A logits processor after the logit bias
masks the tokens the grammar forbids; each sampled token advances the grammar,
and the generation ends with ``stop`` as soon as the grammar allows nothing more
(or the model ends its turn where the grammar may end), or with ``length`` when
``max_tokens`` cuts it short.

Tool-call and reasoning markers that are control tokens (``[TOOL_CALLS]``,
``<|python_tag|>``...) are written out as text, since the parsers downstream read
them; other control tokens are not.

The worker thread's loop (token counts, logprobs) is in ``worker``; loading the
GGUF in ``loading``.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import llama_cpp

from portway.backends.base import (
    Capabilities,
    ChatBackend,
    Delta,
    GenerationRequest,
    Grammar,
    Message,
    ToolSpec,
)
from portway.backends.llamacpp.control_text import ControlTexts
from portway.backends.llamacpp.loading import control_tokens, cpu_advertises_amx, load_llama
from portway.backends.llamacpp.templates import ChatTemplate, template_for
from portway.backends.llamacpp.worker import Job, LoadedModel, QueueItem, emitter, run
from portway.constrain.llamacpp import llama_tokenizer
from portway.constrain.runtime import GrammarCompiler, GrammarMask
from portway.errors import (
    BackendError,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    PortwayError,
)
from portway.toolcalls import TOOL_CALL_MARKERS, family_from_template
from portway.toolcalls.reasoning import REASONING_MARKERS, prompt_opens_think, reasoning_family

log = logging.getLogger(__name__)

VISIBLE_MARKERS = TOOL_CALL_MARKERS + REASONING_MARKERS
"""Control tokens written out as text (see the module's docstring)."""


class LlamaCppBackend(ChatBackend):
    """A GGUF chat model run by llama.cpp on this machine.

    ``chat_template`` overrides the prompt format (Jinja source or ``"gemma"``; see
    ``template_for``). At most ``max_queue`` requests wait for the model; more are
    refused with ``Overloaded``. ``extra_buffer_types`` (llama.cpp weight repacking /
    AMX) defaults to off on CPUs advertising AMX, on elsewhere. ``model_name`` is
    the name used in error messages (default: the file's stem).
    """

    capabilities = Capabilities(
        tools=True,
        json_schema=True,
        vision=False,
        reasoning=False,
        logprobs=True,
        logit_bias=True,
        seed=True,
    )

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        chat_template: str | None = None,
        max_queue: int = 32,
        extra_buffer_types: bool | None = None,
        model_name: str | None = None,
    ) -> None:
        self.model_path = model_path
        self.model_name = model_name or model_path.stem
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._chat_template = chat_template
        self._max_queue = max_queue
        self._extra_buffer_types = (
            not cpu_advertises_amx() if extra_buffer_types is None else extra_buffer_types
        )
        self._llama: Any = None
        self._template: ChatTemplate | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        self._turn = asyncio.Lock()
        self._waiting = 0
        self._active: Job | None = None
        self._vocab: Any = None
        self._n_vocab = 0
        self._bos_text = ""
        self._stop_token_ids: frozenset[int] = frozenset()
        self._piece_cache: dict[tuple[int, bool], bytes] = {}
        self._marker_ids: frozenset[int] = frozenset()
        self._controls = ControlTexts()
        self._grammars: GrammarCompiler | None = None
        self._grammars_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Loads the model on a worker thread and picks its chat template."""
        llama = await asyncio.to_thread(
            load_llama,
            self.model_path,
            n_ctx=self._n_ctx,
            n_threads=self._n_threads,
            extra_buffer_types=self._extra_buffer_types,
            model_name=self.model_name,
        )
        self._llama = llama
        self.context_length = int(llama.n_ctx())
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._n_vocab = int(llama.n_vocab())
        self._marker_ids = frozenset(self._single_token_ids(VISIBLE_MARKERS))
        self._controls = ControlTexts(control_tokens(llama))
        metadata: dict[str, str] = dict(llama.metadata)
        self._bos_text = self._special_text(int(llama.token_bos()))
        self._template = template_for(
            metadata,
            self._chat_template,
            family_hint=None,
            bos_token=self._bos_text,
            eos_token=self._special_text(int(llama.token_eos())),
        )
        self._stop_token_ids = frozenset(self._single_token_ids(self._template.stop_strings))
        self._learn_output_format(self._template)

    def _learn_output_format(self, template: ChatTemplate) -> None:
        """How this model writes tool calls and whether it reasons, from its template."""
        source = getattr(template, "source", None)
        self.tool_family = family_from_template(source, self.model_name)
        self.reasons = reasoning_family(source, self.model_name)
        if self.reasons:
            probe = template.render([Message("user", "?")])
            self.reasoning_opened_by_template = prompt_opens_think(probe)
            self.capabilities = replace(self.capabilities, reasoning=True)

    async def close(self) -> None:
        """Stops the running generation, then frees the model."""
        if self._active is not None:
            self._active.cancel.set()
        async with self._turn:
            llama, self._llama = self._llama, None
            self._grammars = None
            if llama is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, llama.close)
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ tokens

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        """The token ids of plain ``text`` (no BOS; special-token texts are not parsed)."""
        return [
            int(t) for t in self._loaded().tokenize(text.encode(), add_bos=False, special=False)
        ]

    def _tokenize_prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
    ) -> list[int]:
        """The prompt's tokens. BOS is added unless the template already wrote it.

        Only the template's markup becomes control tokens: a control token's text in
        what the client wrote is tokenised as plain text (see ``control_text``).
        """
        masked = self._controls.mask(messages, tools)
        prompt = self._loaded_template().render(masked.messages, masked.tools)
        add_bos = not (self._bos_text and prompt.startswith(self._bos_text))
        llama = self._loaded()
        if not masked.originals:  # nothing to keep apart: llama.cpp cuts the same way
            return [int(t) for t in llama.tokenize(prompt.encode(), add_bos=add_bos, special=True)]
        head = [int(t) for t in llama.tokenize(b"", add_bos=add_bos, special=False)]
        return head + self._controls.tokenize(prompt, masked.originals, self.tokenize)

    def _piece(self, token: int, *, special: bool) -> bytes:
        """The bytes of one token (``special``: control tokens as their text, else empty;
        the ``VISIBLE_MARKERS`` always as their text)."""
        special = special or token in self._marker_ids
        key = (token, special)
        cached = self._piece_cache.get(key)
        if cached is None:
            cached = self._piece_cache[key] = self._token_to_piece(token, special)
        return cached

    def _token_to_piece(self, token: int, special: bool) -> bytes:
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, special)
            if length >= 0:
                return buffer.raw[:length]
            size = -length

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def _single_token_ids(self, texts: Iterable[str]) -> Iterator[int]:
        """Ids of the texts that are one token each (such as ``<end_of_turn>``)."""
        for text in texts:
            ids = self._loaded().tokenize(text.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                yield int(ids[0])

    def _is_end_token(self, token: int) -> bool:
        return token in self._stop_token_ids or bool(
            llama_cpp.llama_vocab_is_eog(self._vocab, token)
        )

    # ------------------------------------------------------------------ generate

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        """Streams one completion; see ``Delta`` for the order of what it yields.

        Raises before the first delta: ``ContextLengthExceeded``, ``InvalidRequest``
        (template refusal, bad ``logit_bias``, a ``constraint`` that cannot be
        compiled: ``SchemaError``), ``Overloaded`` (queue full).
        """
        prompt = await asyncio.to_thread(self._tokenize_prompt, request.messages, request.tools)
        budget = self._completion_budget(len(prompt), request.sampling.max_tokens)
        self._check_logit_bias(request.sampling.logit_bias)
        constraint = None
        if request.constraint is not None:
            constraint = await asyncio.to_thread(self._grammar_mask, request.constraint)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        emit = emitter(loop, queue)
        job = Job(prompt, budget, request.sampling, emit=emit, constraint=constraint)
        await self._wait_for_turn()
        worker: asyncio.Future[None] | None = None
        try:
            yield Delta(prompt_tokens=len(prompt))
            self._active = job
            worker = loop.run_in_executor(self._executor, run, job, self._loaded_model)
            while True:
                item = await queue.get()
                if isinstance(item, PortwayError):
                    raise item
                if isinstance(item, BaseException):
                    raise BackendError("The model failed while generating.") from item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancel.set()
            self._end_turn_after(worker)

    def _completion_budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """Tokens the completion may use; raises when the request does not fit."""
        requested = max_tokens or 0
        if prompt_tokens + requested > self.context_length or prompt_tokens >= self.context_length:
            raise ContextLengthExceeded(prompt_tokens, requested, self.context_length)
        return self.context_length - prompt_tokens if max_tokens is None else max_tokens

    def _grammar_mask(self, grammar: Grammar) -> GrammarMask:
        """A mask following ``grammar`` for one generation (blocking: compiles)."""
        return GrammarMask(self._grammar_compiler().matcher(grammar), self._n_vocab)

    def _grammar_compiler(self) -> GrammarCompiler:
        """The compiler for this model's tokenizer, built on first use (about a second)."""
        with self._grammars_lock:
            if self._grammars is None:
                self._loaded()
                tokenizer = llama_tokenizer(
                    self._vocab,
                    self._n_vocab,
                    end_tokens=self._stop_token_ids,
                    text_tokens=self._marker_ids,
                )
                self._grammars = GrammarCompiler(tokenizer)
            return self._grammars

    def _check_logit_bias(self, bias: Mapping[int, float]) -> None:
        invalid = sorted(token for token in bias if not 0 <= token < self._n_vocab)
        if invalid:
            raise InvalidRequest(
                f"Invalid token ids in logit_bias: {invalid[:5]}.", param="logit_bias"
            )

    async def _wait_for_turn(self) -> None:
        """Takes the model, or raises ``Overloaded`` if ``max_queue`` already wait."""
        must_wait = self._turn.locked() or self._waiting > 0
        if must_wait and self._waiting >= self._max_queue:
            raise Overloaded(self.model_name)
        self._waiting += 1
        try:
            await self._turn.acquire()
        finally:
            self._waiting -= 1

    def _end_turn_after(self, worker: asyncio.Future[None] | None) -> None:
        """Releases the model once the worker thread has stopped (at once if none ran)."""

        def release(done: asyncio.Future[None] | None) -> None:
            if done is not None and not done.cancelled() and done.exception() is not None:
                log.error("llama.cpp worker failed", exc_info=done.exception())
            self._active = None
            self._turn.release()

        if worker is None or worker.done():
            release(worker)
        else:
            worker.add_done_callback(release)

    # ------------------------------------------------------------------ state

    def _loaded(self) -> Any:
        if self._llama is None:
            raise BackendError(f"The model '{self.model_name}' is not loaded.")
        return self._llama

    def _loaded_template(self) -> ChatTemplate:
        if self._template is None:
            raise BackendError(f"The model '{self.model_name}' is not loaded.")
        return self._template

    def _loaded_model(self) -> LoadedModel:
        return LoadedModel(
            llama=self._loaded(),
            n_vocab=self._n_vocab,
            stop_strings=self._loaded_template().stop_strings,
            piece=self._piece,
            is_end_token=self._is_end_token,
        )
