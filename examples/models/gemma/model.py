"""Gemma 3 270M (the GGUF Portway embeds) run by llama-cpp-python.

The prompt uses Gemma's turn format; tokens stream as llama.cpp samples them. Only
the turn markup becomes control tokens: a user who writes ``<end_of_turn>`` gets it
read as plain text, not a new turn.
Gemma 3 270M is a small base model: it rarely ends its turn, so set max_tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from portway import ModelClass
from portway.backends.base import Message
from portway.llama import control_texts, open_llama
from portway.sdk import GenerateParams, Output, Usage

END_OF_TURN = "<end_of_turn>"


class Gemma(ModelClass):
    def load_model(self) -> None:
        self.llama = open_llama(n_ctx=self.config.context_length)
        self.controls = control_texts(self.llama)

    def count_tokens(self, text: str) -> int:
        return len(self.plain_tokens(text))

    def plain_tokens(self, text: str) -> list[int]:
        """``text``'s tokens, control-token texts included as plain text."""
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, messages: list[dict[str, Any]], params: GenerateParams) -> Iterator[Output]:
        prompt = self.prompt_tokens(messages)
        prompt_tokens = len(prompt)
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

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        """The prompt's tokens: control texts in what the client wrote stay plain text."""
        masked = self.controls.mask(
            [Message(m["role"], m.get("content") or "") for m in messages], []
        )
        prompt = gemma_prompt([{"role": m.role, "content": m.content} for m in masked.messages])
        body = self.controls.tokenize(prompt, masked.originals, self.plain_tokens)
        return [self.llama.token_bos(), *body]  # a token list gets no <bos> added


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
    return "".join(turns) + "<start_of_turn>model\n"
