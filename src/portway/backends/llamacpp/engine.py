"""Continuous batching for one llama.cpp model: many generations, one context.

One engine thread owns the context, made with ``parallel`` sequence slots (see
``loading``). Each step it:

1. drops cancelled sequences (their slot is free at once) and admits waiting
   requests into free slots, round-robin over users (``admission.FairQueue``);
2. builds one ``llama_batch``: the next token of every generating sequence, then
   prompt tokens of the sequences still evaluating their prompt, at most
   ``prefill_chunk`` each while others generate (so a long prompt holds running
   streams back by one chunk per step), at most ``n_batch`` in all;
3. runs one ``llama_decode``;
4. samples every sequence whose batch row got logits and hands what it produced
   to the request's asyncio queue (``emit``: ``loop.call_soon_threadsafe``). The
   engine never waits for a reader.

A slot keeps its tokens after its request ends: a new request takes the free slot
sharing the longest prefix with its prompt, the rest of that slot's cache is
removed, and only the new tokens are evaluated (always at least the last prompt
token, whose logits start the generation). A cut that llama.cpp refuses, or a
cache that does not hold the prefix from position 0, is not trusted: the slot is
emptied and the whole prompt evaluated.

``n`` choices of one prompt form a group admitted together: the first evaluates
the prompt but its last token, its cache is copied to the others' slots
(``llama_memory_seq_cp``: in a unified cache the cells are shared, not copied),
and each then evaluates the last prompt token on its own row, so each choice
samples from logits of its own.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

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

DEFAULT_PREFILL_CHUNK = 128
"""Prompt tokens a sequence evaluates per step while other sequences generate."""


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
        self.samples = True
        """Whether it samples once ``pending`` is evaluated (a group's first
        sequence does not: its last prompt token waits for the copies)."""
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
        fed = self._fill_batch()
        if not fed:
            self._wake.wait()
            return True
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        self.stats.steps += 1
        if status != 0:
            self._fail([item.sequence for item in fed], status)
            return True
        self._after_decode(fed)
        return True

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
        if not self._running and not self._prefix_reuse:
            self._clear_cache()
        if self._prefix_reuse:
            slot, shared = self._slots.take_best(prompt)
        else:
            slot, shared = self._slots.take_least_useful(), 0
        kept = self._keep_prefix(slot, min(shared, len(prompt) - 1))
        self.stats.prompt_tokens_reused += kept
        self.stats.admitted.append(jobs[0].request_id)
        leader = self._add(jobs[0], slot)
        if len(jobs) == 1:
            leader.pending = prompt[kept:]
            return
        leader.pending, leader.samples = prompt[kept:-1], False
        for job in jobs[1:]:
            follower = self._add(job, self._slots.take_least_useful())
            self._keep_prefix(follower.slot, 0)
            follower.leader = leader
            leader.followers.append(follower)
        if not leader.pending:
            self._fork(leader)

    def _clear_cache(self) -> None:
        """Empties the whole cache, so a request admitted alone finds the cells it
        would find after a restart: where its keys and values lie changes how
        llama.cpp sums attention, so the same seed could otherwise write other text."""
        llama_cpp.llama_memory_clear(self._memory, False)
        for slot in self._slots.slots:
            slot.tokens.clear()

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
        del slot.tokens[length:]
        return length

    def _add(self, job: Job, slot: Slot) -> _Sequence:
        try:
            sequence = _Sequence(job, slot, self._model)
        except Exception:
            self._slots.release(slot)
            raise
        self._running.append(sequence)
        return sequence

    def _fork(self, leader: _Sequence) -> None:
        """Copies the leader's evaluated prompt to its followers; each then
        evaluates the last prompt token itself."""
        last = leader.job.prompt[-1]
        for follower in leader.followers:
            llama_cpp.llama_memory_seq_cp(
                self._memory, leader.slot.seq_id, follower.slot.seq_id, -1, -1
            )
            follower.slot.tokens = list(leader.slot.tokens)
            follower.pending, follower.leader = [last], None
        leader.pending, leader.samples, leader.followers = [last], True, []

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

    def _fill_batch(self) -> list[_Fed]:
        batch, fed, used = self._batch, [], 0
        generating = [s for s in self._running if s.pending and not s.in_prompt]
        prompting = [s for s in self._running if s.pending and s.in_prompt]
        for sequence in generating:
            fed.append(self._put(sequence, used, 1))
            used += 1
        limit = self._prefill_chunk if generating else self._n_batch
        for sequence in prompting:
            count = min(len(sequence.pending), limit, self._n_batch - used)
            if count <= 0:
                break
            fed.append(self._put(sequence, used, count))
            used += count
        batch.n_tokens = used
        return fed

    def _put(self, sequence: _Sequence, start: int, count: int) -> _Fed:
        """Writes ``count`` pending tokens of ``sequence`` at batch row ``start``."""
        batch, position = self._batch, len(sequence.slot.tokens)
        wants_logits = sequence.samples and count == len(sequence.pending)
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
            sequence = item.sequence
            if sequence.in_prompt:
                self.stats.prompt_tokens_evaluated += item.count
            sequence.slot.tokens.extend(sequence.pending[: item.count])
            del sequence.pending[: item.count]
            if not sequence.pending and not sequence.samples:
                self._fork(sequence)
        for item in fed:
            if item.row >= 0:
                self._sample(item.sequence, item.row)

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
