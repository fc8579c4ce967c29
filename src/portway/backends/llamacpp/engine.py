"""Continuous batching for one llama.cpp model: many generations, one context.

One engine thread owns the context, made with ``parallel`` sequence slots, each
with a KV cache of its own (see ``loading``). Each step it:

1. drops cancelled sequences (their slot is free at once) and admits waiting
   requests into free slots, round-robin over users (``admission.FairQueue``);
2. runs one ``llama_decode`` holding the next token of every generating sequence;
3. samples each of them and hands what it produced to the request's asyncio
   queue (``emit``: ``loop.call_soon_threadsafe``). The engine never waits for
   a reader;
4. evaluates prompt chunks, at most ``n_batch`` tokens of them: while others
   generate, one chunk of each prompt (so a long prompt holds running streams
   back by one chunk per step, and requests arriving together all start at once),
   else as many chunks as fit.

Exact prefix reuse
------------------
On llama.cpp's CPU kernels a token's keys, values and logits depend on the shape
of the micro-batch it was evaluated in (how many rows, which other rows; see
``prefix``), so reusing a cache is exact only when the kept cells were computed
as a fresh evaluation would compute them. The engine therefore evaluates every
prompt the same way: in chunks of ``prefill_chunk`` tokens aligned at multiples
of it from position 0, each chunk alone in its own ``llama_decode`` (never mixed
with other sequences' rows), in a slot whose cache is its own (so where its cells
lie does not depend on other slots). A slot records how many of its tokens were
computed that way (whole chunks: ``Slot.canonical``); a new request takes the
free slot sharing the longest such prefix with its prompt and keeps it, cut down
to a multiple of the chunk, and below the prompt's last token. The rest, including
the previous answer of a conversation (generated one row at a time), is evaluated
again in the same chunks a fresh evaluation uses, so the logits that start the
generation are bit-identical with and without reuse, and a request run alone gives
the same tokens whatever ran before it. Tokens generated while batched with other
sequences can differ from those generated alone (like llama.cpp's server, and
OpenAI's own ``seed``, batching is best effort there).

``n`` choices of one prompt form a group admitted together: the first evaluates
the prompt, its cache is copied whole to the others' slots
(``llama_memory_seq_cp``) and every choice samples from the same logits of the
last prompt token, each with its own sampler and seed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from portway.backends.base import Delta, SamplingParams
from portway.backends.llamacpp.admission import FairQueue
from portway.backends.llamacpp.seq_sampling import SequenceSampler
from portway.backends.llamacpp.slots import Slot, SlotTable
from portway.backends.llamacpp.worker import OutputModel, TokenOutput
from portway.constrain.runtime import GrammarMask
from portway.errors import BackendError, Overloaded

log = logging.getLogger(__name__)

QueueItem = Delta | BaseException
TokenFields = Callable[[int], tuple[str, tuple[int, ...]]]

DEFAULT_PREFILL_CHUNK = 64
"""Prompt tokens per chunk: the most a prompt evaluates per step while other
sequences generate, and the unit of prefix reuse (a reused prefix is a whole
number of chunks, so up to ``DEFAULT_PREFILL_CHUNK - 1`` cached tokens are
evaluated again)."""


@dataclass(eq=False)
class Job:
    """One generation, as the engine sees it. Setting ``cancel`` (then ``wake``)
    drops it at the next step."""

    prompt: list[int]
    budget: int
    sampling: SamplingParams
    emit: Callable[[QueueItem], None]
    user: str = ""
    request_id: str = ""
    constraint: GrammarMask | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class EngineModel:
    """What the engine reads of the loaded model."""

    llama: Any
    n_vocab: int
    output: OutputModel
    token_fields: TokenFields


@dataclass
class EngineStats:
    """Counters since start (read them from any thread; they only grow)."""

    steps: int = 0
    prompt_tokens_evaluated: int = 0
    prompt_tokens_reused: int = 0
    generated_tokens: int = 0
    admitted: deque[str] = field(default_factory=lambda: deque(maxlen=1024))
    """Request ids in the order they were admitted (the latest 1024)."""


class _Sequence:
    """A job in a slot: the tokens it has yet to evaluate, its sampler and output."""

    def __init__(self, job: Job, slot: Slot, model: EngineModel) -> None:
        self.job = job
        self.slot = slot
        self.pending: list[int] = []
        self.in_prompt = True
        self.followers: list[_Sequence] = []
        self.leader: _Sequence | None = None
        self.sampler = SequenceSampler(
            job.sampling,
            n_vocab=model.n_vocab,
            constraint=job.constraint,
            token_fields=model.token_fields,
        )
        self.output = TokenOutput(
            model.output, budget=job.budget, stop=job.sampling.stop, constraint=job.constraint
        )


@dataclass
class _Fed:
    sequence: _Sequence
    count: int
    row: int
    """The batch row whose logits it samples, or -1."""


class Engine:
    """Runs the jobs submitted to it on ``model``'s context, in its own thread."""

    def __init__(
        self,
        model: EngineModel,
        *,
        parallel: int,
        max_queue: int,
        name: str,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        prefix_reuse: bool = True,
    ) -> None:
        self._model = model
        self._ctx = model.llama.ctx
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_batch = int(llama_cpp.llama_n_batch(self._ctx))
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._slots = SlotTable(parallel)
        self._queue: FairQueue[list[Job]] = FairQueue()
        self._running: list[_Sequence] = []
        self._max_queue = max_queue
        self._name = name
        self._prefill_chunk = max(1, prefill_chunk)
        self._prefix_reuse = prefix_reuse
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="llama-engine", daemon=True)
        self.stats = EngineStats()

    @property
    def parallel(self) -> int:
        return len(self._slots.slots)

    @property
    def waiting(self) -> int:
        """Groups of jobs queued, not yet admitted."""
        with self._lock:
            return len(self._queue)

    @property
    def running(self) -> int:
        """Sequences holding a slot."""
        with self._lock:
            return len(self._running)

    def start(self) -> None:
        self._thread.start()

    def submit(self, jobs: list[Job]) -> None:
        """Queues jobs sharing one prompt (at most ``parallel``); raises
        ``Overloaded`` when ``max_queue`` requests already wait beyond the free slots."""
        if not 1 <= len(jobs) <= self.parallel:
            raise ValueError(f"a group holds 1 to {self.parallel} jobs, not {len(jobs)}")
        with self._lock:
            if self._stopping:
                raise BackendError(f"The model '{self._name}' is not loaded.")
            if len(self._queue) >= self._max_queue + self._slots.free_count():
                raise Overloaded(self._name)
            self._queue.push(jobs[0].user, jobs)
        self._wake.set()

    def wake(self) -> None:
        """Makes the engine look at its jobs (after a cancel)."""
        self._wake.set()

    def stop(self) -> None:
        """Ends every job with an error and stops the thread (blocking: joins it)."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        batch, self._batch = self._batch, None
        if batch is not None:
            llama_cpp.llama_batch_free(batch)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        try:
            while self._step():
                pass
        except Exception:
            log.exception("the llama.cpp engine failed")
        finally:
            self._shutdown()

    def _step(self) -> bool:
        self._wake.clear()
        with self._lock:
            if self._stopping:
                return False
            self._drop_cancelled()
            self._admit()
        generating = [s for s in self._running if s.pending and not s.in_prompt]
        prompting = [s for s in self._running if s.pending and s.in_prompt]
        if not generating and not prompting:
            self._wake.wait()
            return True
        self.stats.steps += 1
        if generating:
            self._decode([self._put(sequence, row, 1) for row, sequence in enumerate(generating)])
        self._evaluate_prompts(prompting, one_chunk_each=bool(generating))
        return True

    def _evaluate_prompts(self, prompting: list[_Sequence], *, one_chunk_each: bool) -> None:
        """Prompt chunks, each alone in a decode, ``n_batch`` tokens at most."""
        budget = self._n_batch
        for sequence in prompting:
            while budget > 0 and sequence.in_prompt and sequence.pending:
                count = min(len(sequence.pending), self._prefill_chunk)
                self._decode([self._put(sequence, 0, count)])
                budget -= count
                if one_chunk_each or sequence not in self._running:
                    break

    def _decode(self, fed: list[_Fed]) -> None:
        """One ``llama_decode`` of the rows ``fed`` wrote, then their sampling."""
        self._batch.n_tokens = sum(item.count for item in fed)
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            self._fail([item.sequence for item in fed], status)
            return
        self._after_decode(fed)

    def _shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            error = BackendError(f"The model '{self._name}' was unloaded.")
            while self._queue:
                for job in self._queue.pop():
                    job.emit(error)
            for sequence in list(self._running):
                if sequence in self._running:
                    sequence.job.emit(error)
                    self._end(sequence)

    # ------------------------------------------------------------------ admission

    def _drop_cancelled(self) -> None:
        self._queue.remove_if(lambda jobs: all(job.cancel.is_set() for job in jobs))
        cancelled = [s for s in self._running if s.job.cancel.is_set()]
        for sequence in cancelled:
            if sequence.leader is not None:
                self._end(sequence)
        for sequence in cancelled:
            if not sequence.followers and sequence in self._running:
                self._end(sequence)

    def _admit(self) -> None:
        while self._queue:
            jobs = self._queue.peek()
            if jobs is None or len(jobs) > self._slots.free_count():
                return
            self._queue.pop()
            if not all(job.cancel.is_set() for job in jobs):
                self._start_or_fail(jobs)

    def _start_or_fail(self, jobs: list[Job]) -> None:
        try:
            self._start(jobs)
        except Exception as exc:
            log.exception("could not start a generation")
            for sequence in [s for s in self._running if s.job in jobs]:
                if sequence in self._running:
                    self._end(sequence)
            for job in jobs:
                job.emit(exc)

    def _start(self, jobs: list[Job]) -> None:
        prompt = jobs[0].prompt
        if self._prefix_reuse:
            slot, shared = self._slots.take_best(prompt)
        else:
            slot, shared = self._slots.take_least_useful(), 0
        kept = self._keep_prefix(slot, self._whole_chunks(min(shared, len(prompt) - 1)))
        self.stats.prompt_tokens_reused += kept
        self.stats.admitted.append(jobs[0].request_id)
        leader = self._add(jobs[0], slot)
        leader.pending = prompt[kept:]
        for job in jobs[1:]:
            follower = self._add(job, self._slots.take_least_useful())
            self._keep_prefix(follower.slot, 0)
            follower.leader = leader
            leader.followers.append(follower)

    def _whole_chunks(self, length: int) -> int:
        return length - length % self._prefill_chunk

    def _keep_prefix(self, slot: Slot, length: int) -> int:
        """Cuts the slot's cache to its first ``length`` tokens; the length kept
        (0 when llama.cpp refuses the cut or the cache does not hold them all)."""
        seq = slot.seq_id
        if length < len(slot.tokens):
            cut = llama_cpp.llama_memory_seq_rm(self._memory, seq, length, -1)
            held = length == 0 or (
                llama_cpp.llama_memory_seq_pos_min(self._memory, seq) == 0
                and llama_cpp.llama_memory_seq_pos_max(self._memory, seq) == length - 1
            )
            if not (cut and held):
                llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
                length = 0
        slot.cut(length)
        return length

    def _add(self, job: Job, slot: Slot) -> _Sequence:
        try:
            sequence = _Sequence(job, slot, self._model)
        except Exception:
            self._slots.release(slot)
            raise
        self._running.append(sequence)
        return sequence

    def _fork_to(self, leader: _Sequence, followers: list[_Sequence]) -> None:
        """Copies the leader's evaluated prompt to its followers' slots (whole
        caches: each slot's cache is its own)."""
        for follower in followers:
            llama_cpp.llama_memory_seq_rm(self._memory, follower.slot.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(
                self._memory, leader.slot.seq_id, follower.slot.seq_id, -1, -1
            )
            follower.slot.tokens = list(leader.slot.tokens)
            follower.slot.canonical = leader.slot.canonical
            follower.leader = None

    def _end(self, sequence: _Sequence) -> None:
        """Frees the sequence's slot (its cache stays for reuse) and sampler; a
        group's first sequence ending early takes its waiting followers along."""
        with self._lock:
            for follower in list(sequence.followers):
                follower.job.emit(BackendError("The model failed while generating."))
                self._end(follower)
            sequence.sampler.close()
            self._running.remove(sequence)
            self._slots.release(sequence.slot)
            if sequence.leader is not None:
                sequence.leader.followers.remove(sequence)
                sequence.leader = None

    # ------------------------------------------------------------------ a step

    def _put(self, sequence: _Sequence, start: int, count: int) -> _Fed:
        """Writes ``count`` pending tokens of ``sequence`` at batch row ``start``."""
        batch, position = self._batch, len(sequence.slot.tokens)
        wants_logits = count == len(sequence.pending)
        for offset in range(count):
            row = start + offset
            batch.token[row] = sequence.pending[offset]
            batch.pos[row] = position + offset
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = sequence.slot.seq_id
            batch.logits[row] = wants_logits and offset == count - 1
        return _Fed(sequence, count, start + count - 1 if wants_logits else -1)

    def _after_decode(self, fed: list[_Fed]) -> None:
        for item in fed:
            sequence, slot = item.sequence, item.sequence.slot
            if sequence.in_prompt:
                self.stats.prompt_tokens_evaluated += item.count
                if item.count == self._prefill_chunk and slot.canonical == len(slot.tokens):
                    slot.canonical += item.count  # a whole chunk, evaluated alone
            slot.tokens.extend(sequence.pending[: item.count])
            del sequence.pending[: item.count]
        for item in fed:
            if item.row < 0:
                continue
            if item.sequence.followers:
                self._sample_group(item.sequence, item.row)
            else:
                self._sample(item.sequence, item.row)

    def _sample_group(self, leader: _Sequence, row: int) -> None:
        """The choices of one prompt each sample from its last token's logits
        (restored before each: a sampler may change them in place)."""
        followers, leader.followers = leader.followers, []
        self._fork_to(leader, followers)
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self._ctx, row), shape=(self._model.n_vocab,)
        )
        original = logits.copy()
        for index, sequence in enumerate([leader, *followers]):
            if index:
                logits[:] = original
            self._sample(sequence, row)

    def _sample(self, sequence: _Sequence, row: int) -> None:
        job = sequence.job
        try:
            token, logprob = sequence.sampler.sample(self._ctx, row)
            sequence.in_prompt = False
            self.stats.generated_tokens += 1
            delta = sequence.output.feed(token, logprob)
        except Exception as exc:
            job.emit(exc)
            self._end(sequence)
            return
        if delta is not None:
            job.emit(delta)
        if sequence.output.finished:
            self._end(sequence)
        else:
            sequence.pending = [token]

    def _fail(self, sequences: list[_Sequence], status: int) -> None:
        """A decode failed: its sequences end with an error and lose their cache."""
        log.error("llama_decode failed with status %d", status)
        for sequence in sequences:
            sequence.job.emit(BackendError("The model failed while generating."))
            llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot.seq_id, -1, -1)
            sequence.slot.tokens.clear()
            self._end(sequence)
