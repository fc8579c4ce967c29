"""Gemma 3 270M (the GGUF Portway embeds) run by llama-cpp-python.

The prompt uses Gemma's turn format; tokens stream as llama.cpp samples them.
Gemma 3 270M is a small base model: it rarely ends its turn, so set max_tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from portway import ModelClass
from portway.llama import open_llama
from portway.sdk import GenerateParams, Output, Usage

END_OF_TURN = "<end_of_turn>"


class Gemma(ModelClass):
    def load_model(self) -> None:
        self.llama = open_llama(n_ctx=self.config.context_length)

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, messages: list[dict[str, Any]], params: GenerateParams) -> Iterator[Output]:
        prompt = gemma_prompt(messages)
        prompt_tokens = len(self.llama.tokenize(prompt.encode("utf-8"), special=True))
        limit = params.max_tokens or self.config.context_length - prompt_tokens
        completion = self.llama.create_completion(
            prompt,
            max_tokens=limit,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            stop=[END_OF_TURN, *params.stop],
            stream=True,
        )
        tokens = 0
        for chunk in completion:
            tokens += 1
            yield chunk["choices"][0]["text"]
        yield Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens)


def gemma_prompt(messages: list[dict[str, Any]]) -> str:
    """Gemma's turns; system and developer text opens the first user turn."""
    turns: list[str] = []
    preamble = ""
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role in ("system", "developer"):
            preamble += content + "\n\n"
            continue
        speaker = "model" if role == "assistant" else "user"
        turns.append(f"<start_of_turn>{speaker}\n{preamble}{content}{END_OF_TURN}\n")
        preamble = ""
    return "".join(turns) + "<start_of_turn>model\n"  # llama.cpp adds <bos>
