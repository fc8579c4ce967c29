"""Runs GGUF models in-process with llama-cpp-python, many requests at once.

One model load and one llama.cpp context with ``parallel`` sequence slots per
backend; the ``engine`` thread batches every running generation into one decode
per step (continuous batching: requests join and leave between steps), reuses a
slot's cached prompt prefix, and admits waiting requests fairly across users
(``GenerationRequest.user``). At most ``max_queue`` requests wait beyond the free
slots; more are refused with ``Overloaded`` (503 with ``Retry-After``).

``context_length`` is per slot: each request may use that many tokens (prompt and
completion); the context holds ``parallel`` times as many. ``default_max_tokens``
bounds a completion whose request sets no ``max_tokens`` (else the rest of the
context).

Sampling is per sequence (``SequenceSampler``): logit bias → presence/frequency
penalties → top-p → temperature → seeded draw, or greedy at temperature 0. The
same seed and request give the same tokens when run alone; no seed draws a
random one. llama.cpp is not batch-invariant: a sequence decoding alone and the
same sequence decoding beside others go through different matrix kernels (one
row or several), so greedy output can differ with the load after some tokens. A
prompt's evaluation does not depend on the batch, unless weight repacking
(``extra_buffer_types``) is on: its kernels take rows in blocks.

Prompts: only the chat template's own markup becomes control tokens; a control
token's text that a client wrote (``<end_of_turn>`` in a message, say) is tokenised
as plain text, so it cannot forge a turn (see ``control_text``).

Constrained decoding (``GenerationRequest.constraint``): the grammar is compiled
with llguidance for this model's tokenizer (built once, on the first constrained
request) before the request is queued, so a grammar that cannot be compiled fails
before the first delta. The sampler masks the tokens the grammar forbids; each
sampled token advances the grammar, and the generation ends with ``stop`` as soon
as the grammar allows nothing more (or the model ends its turn where the grammar
may end), or with ``length`` when ``max_tokens`` cuts it short.

Tool-call and reasoning markers that are control tokens (``[TOOL_CALLS]``,
``<|python_tag|>``...) are written out as text, since the parsers downstream read
them; other control tokens are not.

Tokens to deltas: ``worker``; loading the GGUF: ``loading``.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
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
    choice_request,
)
from portway.backends.llamacpp.control_text import ControlTexts
from portway.backends.llamacpp.engine import Engine, EngineModel, Job, QueueItem
from portway.backends.llamacpp.loading import control_tokens, cpu_advertises_amx, load_llama
from portway.backends.llamacpp.streams import JobStream, emitter
from portway.backends.llamacpp.templates import ChatTemplate, template_for
from portway.backends.llamacpp.worker import OutputModel
from portway.constrain.llamacpp import llama_tokenizer
from portway.constrain.runtime import GrammarCompiler, GrammarMask
from portway.errors import BackendError, ContextLengthExceeded, InvalidRequest
from portway.toolcalls import TOOL_CALL_MARKERS, family_from_template
from portway.toolcalls.reasoning import REASONING_MARKERS, prompt_opens_think, reasoning_family

log = logging.getLogger(__name__)

VISIBLE_MARKERS = TOOL_CALL_MARKERS + REASONING_MARKERS
"""Control tokens written out as text (see the module's docstring)."""


def default_parallel(n_gpu_layers: int) -> int:
    """Slots when none are configured: 16 with layers on a GPU; on a CPU, half its
    cores between 4 and 8 (decode steps there are bound by memory bandwidth, so a
    few streams share a step almost for free, and each slot holds
    ``context_length`` tokens of KV cache)."""
    if n_gpu_layers != 0:
        return 16
    return min(8, max(4, (os.cpu_count() or 1) // 2))


class LlamaCppBackend(ChatBackend):
    """A GGUF chat model run by llama.cpp on this machine.

    ``n_ctx`` is the context of one slot; ``parallel`` slots run at once.
    ``chat_template`` overrides the prompt format (Jinja source or ``"gemma"``; see
    ``template_for``). At most ``max_queue`` requests wait beyond the free slots;
    more are refused with ``Overloaded``. ``default_max_tokens`` bounds completions
    of requests without ``max_tokens``. ``extra_buffer_types`` (llama.cpp weight
    repacking / AMX) defaults to off on CPUs advertising AMX, on elsewhere.
    ``prefix_reuse`` (on by default) lets a request reuse the whole prompt chunks a
    slot has cached: bit-exact, see ``engine``. ``prefill_chunk`` is the size of
    those chunks: the most prompt tokens one request evaluates per step while
    others generate. ``n_gpu_layers`` offloads layers on a GPU build.
    ``model_name`` is the name used in error messages (default: the file's stem).
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
        parallel: int | None = None,
        default_max_tokens: int | None = None,
        prefix_reuse: bool = True,
        prefill_chunk: int | None = None,
        n_gpu_layers: int = 0,
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
        self.parallel = parallel or default_parallel(n_gpu_layers)
        self.default_max_tokens = default_max_tokens
        self._prefix_reuse = prefix_reuse
        self._prefill_chunk = prefill_chunk
        self._n_gpu_layers = n_gpu_layers
        self._llama: Any = None
        self._template: ChatTemplate | None = None
        self._engine: Engine | None = None
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
            parallel=self.parallel,
            n_gpu_layers=self._n_gpu_layers,
        )
        self._llama = llama
        self.context_length = int(llama.n_ctx()) // self.parallel
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
        self._engine = self._new_engine()
        self._engine.start()

    def _new_engine(self) -> Engine:
        model = EngineModel(
            llama=self._loaded(),
            n_vocab=self._n_vocab,
            output=OutputModel(
                stop_strings=self._loaded_template().stop_strings,
                piece=self._piece,
                is_end_token=self._is_end_token,
            ),
            token_fields=self._token_fields,
        )
        extra = {} if self._prefill_chunk is None else {"prefill_chunk": self._prefill_chunk}
        return Engine(
            model,
            parallel=self.parallel,
            max_queue=self._max_queue,
            name=self.model_name,
            prefix_reuse=self._prefix_reuse,
            **extra,
        )

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
        """Ends every generation (with an error) and frees the model."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        llama, self._llama = self._llama, None
        self._grammars = None
        if llama is not None:
            await asyncio.to_thread(llama.close)

    @property
    def engine(self) -> Engine:
        """The running engine (its ``stats`` say what it did)."""
        if self._engine is None:
            raise BackendError(f"The model '{self.model_name}' is not loaded.")
        return self._engine

    def load(self) -> tuple[int, int]:
        """Requests waiting for a slot and sequences generating (read by /metrics)."""
        engine = self._engine
        return (engine.waiting, engine.running) if engine is not None else (0, 0)

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
        [stream] = await self.generate_choices(request, 1)
        try:
            async for delta in stream:
                yield delta
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def generate_choices(
        self, request: GenerationRequest, n: int
    ) -> list[AsyncIterator[Delta]]:
        """``n`` completions of one prompt, evaluated once (per ``parallel`` choices)
        and generated together; choice ``i`` samples with ``seed + i``. Raises as
        ``generate`` does, before any stream exists; close every stream."""
        prompt = await asyncio.to_thread(self._tokenize_prompt, request.messages, request.tools)
        budget = self._completion_budget(len(prompt), request.sampling.max_tokens)
        self._check_logit_bias(request.sampling.logit_bias)
        first = Delta(prompt_tokens=len(prompt))
        streams: list[AsyncIterator[Delta]] = []
        try:
            for start in range(0, n, self.parallel):
                count = min(self.parallel, n - start)
                streams += await self._submit(request, prompt, budget, first, start, count)
        except BaseException:
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]
            raise
        return streams

    async def _submit(
        self,
        request: GenerationRequest,
        prompt: list[int],
        budget: int,
        first: Delta,
        start: int,
        count: int,
    ) -> list[JobStream]:
        """Queues choices ``start`` to ``start + count - 1`` as one group."""
        loop, engine = asyncio.get_running_loop(), self.engine
        jobs, streams = [], []
        for index in range(start, start + count):
            queue: asyncio.Queue[QueueItem] = asyncio.Queue()
            job = Job(
                prompt,
                budget,
                choice_request(request, index).sampling,
                emit=emitter(loop, queue),
                user=request.user,
                request_id=request.request_id,
                constraint=await self._constraint(request),
            )
            jobs.append(job)
            streams.append(JobStream(first, queue, _canceller(job, engine)))
        if budget <= 0:
            for job in jobs:
                job.emit(Delta(finish_reason="length"))
        else:
            engine.submit(jobs)
        return streams

    async def _constraint(self, request: GenerationRequest) -> GrammarMask | None:
        if request.constraint is None:
            return None
        return await asyncio.to_thread(self._grammar_mask, request.constraint)

    def _completion_budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """Tokens the completion may use; raises when the request does not fit."""
        requested = max_tokens or 0
        if prompt_tokens + requested > self.context_length or prompt_tokens >= self.context_length:
            raise ContextLengthExceeded(prompt_tokens, requested, self.context_length)
        if max_tokens is not None:
            return max_tokens
        room = self.context_length - prompt_tokens
        return room if self.default_max_tokens is None else min(room, self.default_max_tokens)

    def _token_fields(self, token: int) -> tuple[str, tuple[int, ...]]:
        """A token's text and bytes, as logprobs report them."""
        raw = self._piece(token, special=True)
        return raw.decode("utf-8", errors="replace"), tuple(raw)

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

    # ------------------------------------------------------------------ state

    def _loaded(self) -> Any:
        if self._llama is None:
            raise BackendError(f"The model '{self.model_name}' is not loaded.")
        return self._llama

    def _loaded_template(self) -> ChatTemplate:
        if self._template is None:
            raise BackendError(f"The model '{self.model_name}' is not loaded.")
        return self._template


def _canceller(job: Job, engine: Engine) -> Callable[[], None]:
    def cancel() -> None:
        job.cancel.set()
        engine.wake()

    return cancel
