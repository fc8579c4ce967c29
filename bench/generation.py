"""Part (a): streamed generation through Portway, llama-cpp-python in-process, and
llama-cpp-python's server, on the same GGUF with the same llama.cpp settings.

Every contender gets the same prompt, seed and sampling (temperature, top-p, no
top-k / min-p / typical-p / repeat penalty, as Portway maps OpenAI's parameters)
and exactly ``tokens`` tokens: ``max_tokens`` plus a -100 ``logit_bias`` on every
end-of-generation token. With identical settings the sampled text is identical
too, which the report checks as evidence that the comparison is like for like.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from common import CpuWatch, median, wait_for_quiet

from portway.backends.llamacpp.loading import cpu_advertises_amx, model_params

PROMPT = (
    "Request {index}. Write a long, detailed story about a lighthouse keeper who finds "
    "a message in a bottle. Describe the sea, the weather and the keeper's thoughts."
)


def prompt(index: int) -> str:
    """A prompt that differs per run early on, so no run reuses the last one's KV cache."""
    return PROMPT.format(index=index)


def gemma_chat_prompt(user: str) -> str:
    """Gemma's chat format for one user turn (BOS is added by the tokenizer)."""
    return f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


@dataclass(frozen=True)
class GenerationSettings:
    model: Path
    threads: int
    n_ctx: int
    tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 1234
    end_tokens: tuple[int, ...] = ()

    @property
    def logit_bias(self) -> dict[int, float]:
        return dict.fromkeys(self.end_tokens, -100.0)


@dataclass(frozen=True)
class Sample:
    """One streamed completion, timed on the client side."""

    ttft: float
    """Seconds from sending the request to the first non-empty text."""
    decode_rate: float
    """Tokens per second from the first token's text to the last one's."""
    tokens: int
    prompt_tokens: int | None
    finish_reason: str | None
    text: str


def timed_sample(
    start: float,
    stamps: Sequence[float],
    pieces: Iterable[str],
    *,
    tokens: int,
    prompt_tokens: int | None,
    finish_reason: str | None,
) -> Sample:
    if len(stamps) < 2:
        raise RuntimeError("the stream produced fewer than two pieces of text")
    return Sample(
        ttft=stamps[0] - start,
        decode_rate=(tokens - 1) / (stamps[-1] - stamps[0]),
        tokens=tokens,
        prompt_tokens=prompt_tokens,
        finish_reason=finish_reason,
        text="".join(pieces),
    )


class Noisy(Exception):
    """Other processes used too much CPU during a run; it was stopped early."""

    def __init__(self, load: float) -> None:
        super().__init__(f"other processes used {load:.2f} CPUs")
        self.load = load


@dataclass
class NoiseGuard:
    """Stops a run (raises ``Noisy``) once processes other than ``pids`` have used
    over ``limit`` CPUs on average since it started; checked every ``interval`` s.

    On two cores llama.cpp's threads wait for each other at every step, so a
    neighbour's load slows a run down many times over; stopping it early keeps a
    repeat cheap. ``load`` is the last average seen.
    """

    pids: Sequence[int]
    limit: float = math.inf
    interval: float = 0.5
    load: float = 0.0
    _watch: CpuWatch | None = field(default=None, repr=False)
    _next: float = 0.0

    def start(self) -> None:
        self._watch = CpuWatch(self.pids).start()
        self._next = time.perf_counter() + self.interval
        self.load = 0.0

    def check(self) -> None:
        now = time.perf_counter()
        if self._watch is None or now < self._next:
            return
        self._next = now + self.interval
        self.load = self._watch.foreign_cores()
        if self.load > self.limit:
            raise Noisy(self.load)

    def finish(self) -> float:
        if self._watch is not None:
            self.load = self._watch.foreign_cores()
        return self.load


UNGUARDED = NoiseGuard(pids=())


class Contender(Protocol):
    name: str

    def generate(self, index: int, guard: NoiseGuard = UNGUARDED) -> Sample: ...


# --------------------------------------------------------------------------- direct


def load_llama(settings: GenerationSettings) -> Any:
    """``llama_cpp.Llama`` loaded exactly as Portway's backend loads it."""
    import llama_cpp

    with model_params(extra_buffer_types=not cpu_advertises_amx()):
        return llama_cpp.Llama(
            str(settings.model),
            n_ctx=settings.n_ctx,
            n_threads=settings.threads,
            verbose=False,
            logits_all=False,
            last_n_tokens_size=settings.n_ctx,
        )


def end_of_generation_tokens(llama: Any) -> tuple[int, ...]:
    """Every token llama.cpp treats as end of generation, plus ``<end_of_turn>``."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    eog = {i for i in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    eog.update(llama.tokenize(b"<end_of_turn>", add_bos=False, special=True))
    return tuple(sorted(int(token) for token in eog))


@dataclass
class DirectLlama:
    """``Llama.create_completion(stream=True)`` in this process: no server at all."""

    settings: GenerationSettings
    llama: Any
    name: str = "llama-cpp-python (in-process)"

    def generate(self, index: int, guard: NoiseGuard = UNGUARDED) -> Sample:
        s = self.settings
        text_prompt = gemma_chat_prompt(prompt(index))
        prompt_tokens = len(self.llama.tokenize(text_prompt.encode(), special=True))
        stamps: list[float] = []
        pieces: list[str] = []
        finish = None
        start = time.perf_counter()
        chunks = self.llama.create_completion(
            text_prompt,
            max_tokens=s.tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=0,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
            seed=s.seed + index,
            logit_bias=s.logit_bias,
            stream=True,
        )
        with contextlib.closing(chunks):
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice["text"]:
                    stamps.append(time.perf_counter())
                    pieces.append(choice["text"])
                finish = choice["finish_reason"] or finish
                guard.check()
        return timed_sample(
            start,
            stamps,
            pieces,
            tokens=s.tokens,
            prompt_tokens=prompt_tokens,
            finish_reason=finish,
        )


# --------------------------------------------------------------------------- over HTTP


@dataclass
class OpenAIStream:
    """A server driven by the ``openai`` client with ``stream=True``.

    ``usage``: ask for the usage chunk (``stream_options.include_usage``) and take
    the token counts from it; otherwise the completion is taken to be ``tokens``
    long when it finished by length.
    """

    name: str
    settings: GenerationSettings
    base_url: str
    api_key: str
    model: str
    usage: bool = False
    extra_body: dict[str, Any] = field(default_factory=dict)
    client: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from openai import OpenAI

        self.client = OpenAI(
            base_url=self.base_url + "/v1", api_key=self.api_key, max_retries=0, timeout=600
        )

    def _request(self, index: int) -> dict[str, Any]:
        s = self.settings
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt(index)}],
            "stream": True,
            "max_tokens": s.tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed + index,
            "logit_bias": {str(token): -100 for token in s.end_tokens},
        }
        if self.usage:
            request["stream_options"] = {"include_usage": True}
        if self.extra_body:
            request["extra_body"] = self.extra_body
        return request

    def generate(self, index: int, guard: NoiseGuard = UNGUARDED) -> Sample:
        request = self._request(index)
        stamps: list[float] = []
        pieces: list[str] = []
        finish = None
        tokens, prompt_tokens = self.settings.tokens, None
        start = time.perf_counter()
        with self.client.chat.completions.create(**request) as chunks:
            for chunk in chunks:
                for choice in chunk.choices:
                    if choice.delta.content:
                        stamps.append(time.perf_counter())
                        pieces.append(choice.delta.content)
                    finish = choice.finish_reason or finish
                if chunk.usage is not None:
                    usage = chunk.usage
                    tokens, prompt_tokens = usage.completion_tokens, usage.prompt_tokens
                guard.check()
        return timed_sample(
            start,
            stamps,
            pieces,
            tokens=tokens,
            prompt_tokens=prompt_tokens,
            finish_reason=finish,
        )


# --------------------------------------------------------------------------- runs


MAX_FOREIGN_CORES = 0.15
"""A run during which other processes use more CPU than this is stopped and its
round run again (while repeats and time remain)."""
QUIET_WAIT = 60.0
"""Seconds to wait, before each round, for other processes to go quiet."""


@dataclass
class Rounds:
    """The kept runs of every contender, and the machine's other load meanwhile."""

    samples: dict[str, list[Sample]]
    foreign: list[float] = field(default_factory=list)
    """Other processes' load (CPUs) during each kept round: its noisiest run's."""
    repeated: list[float] = field(default_factory=list)
    """Their load in the runs that stopped a round, which was then run again."""


def _round(
    contenders: Sequence[Contender], index: int, guard: NoiseGuard, log: Any
) -> tuple[list[Sample], float]:
    """One run of each contender, the first one rotating from round to round (each
    round starts after an idle wait, which would favour or handicap whoever always
    came first); the samples in ``contenders`` order and the highest other load."""
    start = index % len(contenders)
    order = list(range(start, len(contenders))) + list(range(start))
    samples: dict[int, Sample] = {}
    loads = []
    for position in order:
        contender = contenders[position]
        guard.start()
        samples[position] = contender.generate(index, guard)
        loads.append(guard.finish())
        log(
            f"  run {index + 1} {contender.name}: {samples[position].decode_rate:.1f} tok/s, "
            f"TTFT {samples[position].ttft * 1000:.0f} ms, other load {loads[-1]:.2f} CPUs"
        )
    return [samples[position] for position in range(len(contenders))], max(loads)


def run_interleaved(
    contenders: Sequence[Contender],
    runs: int,
    pids: Sequence[int],
    *,
    budget: float,
    log: Any = print,
) -> Rounds:
    """One warm-up each, then ``runs`` rounds of one completion per contender in turn.

    Each round first waits for the machine to go quiet. A run during which
    processes other than ``pids`` use over ``MAX_FOREIGN_CORES`` stops its round,
    which is run again with the same prompt and seed, for at most ``3 * runs``
    repeats and ``budget`` seconds; after that, rounds are kept however noisy.
    """
    for contender in contenders:
        contender.generate(-1)
    rounds = Rounds({c.name: [] for c in contenders})
    deadline = time.monotonic() + budget
    index = 0
    while index < runs:
        may_repeat = len(rounds.repeated) < 3 * runs and time.monotonic() < deadline
        guard = NoiseGuard(pids, limit=MAX_FOREIGN_CORES if may_repeat else math.inf)
        wait_for_quiet(pids, threshold=MAX_FOREIGN_CORES / 2, limit=QUIET_WAIT)
        try:
            samples, foreign = _round(contenders, index, guard, log)
        except Noisy as noisy:
            log(f"  run {index + 1}: stopped, {noisy}; running the round again")
            rounds.repeated.append(noisy.load)
            continue
        rounds.foreign.append(foreign)
        for contender, sample in zip(contenders, samples, strict=True):
            rounds.samples[contender.name].append(sample)
        index += 1
    return rounds


@dataclass
class GenerationResult:
    settings: GenerationSettings
    rounds: Rounds
    reference: str
    """Name of the contender the others are compared to (the in-process one)."""

    @property
    def samples(self) -> dict[str, list[Sample]]:
        return self.rounds.samples

    def median_rate(self, name: str) -> float:
        return median([s.decode_rate for s in self.samples[name]])

    def median_ttft(self, name: str) -> float:
        return median([s.ttft for s in self.samples[name]])

    def rate_ratio(self, name: str) -> float:
        return self.median_rate(name) / self.median_rate(self.reference)

    def paired_rate_ratio(self, name: str) -> float:
        """The median over rounds of the rate ratio within each round."""
        pairs = zip(self.samples[name], self.samples[self.reference], strict=True)
        return median([a.decode_rate / b.decode_rate for a, b in pairs])

    def added_ttft_ms(self, name: str) -> float:
        return (self.median_ttft(name) - self.median_ttft(self.reference)) * 1000

    def same_text(self, name: str) -> int:
        """How many runs produced exactly the reference's text."""
        pairs = zip(self.samples[name], self.samples[self.reference], strict=True)
        return sum(a.text == b.text for a, b in pairs)

    def problems(self) -> list[str]:
        """Runs that did not generate exactly the requested tokens."""
        found = []
        for name, samples in self.samples.items():
            for run, sample in enumerate(samples):
                if sample.finish_reason != "length" or sample.tokens != self.settings.tokens:
                    found.append(
                        f"{name} run {run + 1}: {sample.tokens} tokens, "
                        f"finish_reason={sample.finish_reason}"
                    )
        return found
