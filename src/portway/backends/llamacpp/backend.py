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

Token counts include every sampled token: an end-of-turn token counts (it has no
text and no logprob), and so do the tokens of a stop string (they keep their
logprobs) although their text is not emitted.

Logprobs do not need ``logits_all=True`` (which would hold a context-sized copy of
the logits; with Gemma's 262k vocabulary that is gigabytes): when a token is
yielded, llama.cpp's output buffer still holds the logits of the step that chose
it, so they are read there with ``llama_get_logits_ith(ctx, -1)``. They are the
model's own, before logit bias and any grammar mask.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from portway.backends.base import (
    Capabilities,
    ChatBackend,
    Delta,
    FinishReason,
    GenerationRequest,
    Grammar,
    Message,
    SamplingParams,
    TokenLogprob,
    ToolSpec,
    TopLogprob,
)
from portway.backends.llamacpp.control_text import ControlTexts
from portway.backends.llamacpp.loading import (
    control_tokens,
    cpu_advertises_amx,
    model_params,
    trained_context,
)
from portway.backends.llamacpp.sampling import (
    free_sampler,
    llama_seed,
    logits_processors,
    sampler_settings,
    top_ids,
)
from portway.backends.llamacpp.templates import ChatTemplate, template_for
from portway.backends.textstream import StopMatcher, Utf8StreamDecoder
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

DEFAULT_MAX_CONTEXT = 8192
"""Without an explicit ``n_ctx``: the model's trained context, but at most this."""

VISIBLE_MARKERS = TOOL_CALL_MARKERS + REASONING_MARKERS
"""Control tokens written out as text (see the module's docstring)."""


@dataclass
class _PendingDelta:
    """Tokens produced since the last delta was sent, with their text and logprobs."""

    text: str = ""
    tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def add(self, text: str = "", logprob: TokenLogprob | None = None, tokens: int = 1) -> None:
        self.text += text
        self.tokens += tokens
        if logprob is not None:
            self.logprobs.append(logprob)

    def take(self, finish_reason: FinishReason | None = None) -> Delta:
        delta = Delta(
            text=self.text,
            tokens=self.tokens,
            logprobs=tuple(self.logprobs),
            finish_reason=finish_reason,
        )
        self.text, self.tokens, self.logprobs = "", 0, []
        return delta


def _remaining_text(decoder: Utf8StreamDecoder, stops: StopMatcher) -> str:
    """What is still held back when generation ends without a stop string."""
    text, stopped = stops.feed(decoder.flush())
    return text if stopped else text + stops.flush()


_QueueItem = Delta | BaseException


@dataclass
class _Job:
    """One generation, as the worker thread sees it."""

    prompt: list[int]
    budget: int
    sampling: SamplingParams
    emit: Callable[[_QueueItem], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    constraint: GrammarMask | None = None


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
        self._active: _Job | None = None
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
        llama = await asyncio.to_thread(self._load)
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

    def _load(self) -> Any:
        n_ctx = self._n_ctx or DEFAULT_MAX_CONTEXT
        llama = self._open(n_ctx)
        trained = trained_context(llama.metadata)
        if self._n_ctx is None and trained is not None and trained < n_ctx:
            llama.close()
            llama = self._open(trained)
        return llama

    def _open(self, n_ctx: int) -> Any:
        try:
            with model_params(extra_buffer_types=self._extra_buffer_types):
                return llama_cpp.Llama(
                    str(self.model_path),
                    n_ctx=n_ctx,
                    n_threads=self._n_threads,
                    verbose=False,
                    logits_all=False,
                    # Presence/frequency penalties count every generated token.
                    last_n_tokens_size=n_ctx,
                )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"Could not load the model '{self.model_name}'.") from exc

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
        queue: asyncio.Queue[_QueueItem] = asyncio.Queue()
        emit = self._emitter(loop, queue)
        job = _Job(prompt, budget, request.sampling, emit=emit, constraint=constraint)
        await self._wait_for_turn()
        worker: asyncio.Future[None] | None = None
        try:
            yield Delta(prompt_tokens=len(prompt))
            self._active = job
            worker = loop.run_in_executor(self._executor, self._run, job)
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

    @staticmethod
    def _emitter(
        loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[_QueueItem]
    ) -> Callable[[_QueueItem], None]:
        def emit(item: _QueueItem) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

        return emit

    # ------------------------------------------------------------------ worker thread

    def _run(self, job: _Job) -> None:
        """The worker: generates ``job`` and emits its deltas; errors are emitted too."""
        try:
            self._generate_blocking(job)
        except Exception as exc:
            log.exception("llama.cpp generation failed")
            job.emit(exc)

    def _generate_blocking(self, job: _Job) -> None:
        if job.cancel.is_set():
            return
        if job.budget <= 0:
            job.emit(Delta(finish_reason="length"))
            return
        llama = self._loaded()
        llama.set_seed(llama_seed(job.sampling.seed))
        # llama-cpp-python's prompt-prefix reuse gives wrong logits after a prompt that
        # was wholly cached (seen on Gemma 3's sliding-window cache): same seed, other
        # text. Evaluate every prompt from the start; the 0.3.36 reuse is not trusted.
        llama.n_tokens = 0
        tokens = llama.generate(
            job.prompt,
            **sampler_settings(job.sampling),
            logits_processor=logits_processors(job.sampling.logit_bias, job.constraint),
        )
        try:
            self._stream_tokens(tokens, job)
        finally:
            tokens.close()
            free_sampler(llama)

    def _stream_tokens(self, tokens: Iterator[int], job: _Job) -> None:
        """Turns sampled tokens into deltas until a stop, the budget, or cancellation."""
        decoder = Utf8StreamDecoder()
        stops = StopMatcher((*self._loaded_template().stop_strings, *job.sampling.stop))
        pending = _PendingDelta()
        finish: FinishReason = "length"
        cut_at_stop_string = False
        for produced, token in enumerate(tokens, start=1):
            if job.cancel.is_set():
                return
            if self._is_end_token(token):
                pending.add()
                finish = "stop"
                break
            text, cut_at_stop_string = stops.feed(decoder.feed(self._piece(token, special=False)))
            pending.add(text, self._logprob(token, job.sampling))
            if cut_at_stop_string:
                finish = "stop"
                break
            if job.constraint is not None and job.constraint.accept(token):
                finish = "stop"  # the grammar is complete and allows nothing more
                break
            if produced >= job.budget:
                break
            if pending.text:
                job.emit(pending.take())
        if not cut_at_stop_string:
            pending.add(_remaining_text(decoder, stops), tokens=0)
        job.emit(pending.take(finish))

    def _logprob(self, token: int, sampling: SamplingParams) -> TokenLogprob | None:
        """The chosen token's logprob and the top alternatives, from the logits of the
        step that chose it (still in llama.cpp's output buffer)."""
        if not sampling.logprobs:
            return None
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self._loaded().ctx, -1), shape=(self._n_vocab,)
        )
        logprobs = llama_cpp.Llama.logits_to_logprobs(logits)
        top = tuple(
            TopLogprob(*self._token_fields(i), float(logprobs[i]))
            for i in top_ids(logprobs, sampling.top_logprobs)
        )
        return TokenLogprob(*self._token_fields(token), float(logprobs[token]), top)

    def _token_fields(self, token: int) -> tuple[str, tuple[int, ...]]:
        raw = self._piece(token, special=True)
        return raw.decode("utf-8", errors="replace"), tuple(raw)

    # ------------------------------------------------------------------ state

    def _loaded(self) -> Any:
        if self._llama is None:
            raise BackendError(f"The model '{self.model_name}' is not loaded.")
        return self._llama

    def _loaded_template(self) -> ChatTemplate:
        if self._template is None:
            raise BackendError(f"The model '{self.model_name}' is not loaded.")
        return self._template
