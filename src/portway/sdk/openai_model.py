"""``OpenAIModelClass``: a model that forwards to an OpenAI-compatible server
(vLLM, SGLang, llama.cpp's server, Ollama...), which it starts or points at.

Settings are class attributes, overridden by the ``[openai]`` table of
``portway-model.toml``: ``base_url`` (with ``/v1``), or ``command`` (started with
``{port}`` replaced by a free port, in the model folder; ``base_url`` then
defaults to ``http://127.0.0.1:{port}/v1``), ``model`` (the upstream's model
name), ``api_key_env``, ``health_path`` (on the server's origin) and
``startup_timeout``. Requests go out through Portway's upstream client code
(timeouts, retries before the first byte, error mapping).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from portway.sdk.model import ModelClass
from portway.sdk.openai_server import ServerProcess, origin, wait_healthy
from portway.sdk.types import GenerateParams, Output, Reasoning, Text, ToolCallDelta, Usage


class OpenAIModelClass(ModelClass):
    """Forwards ``generate`` as a streamed chat completion; yields the upstream's
    content, reasoning, tool-call pieces and usage. A server that does not report
    usage in streams is taken to send one token per chunk."""

    base_url: ClassVar[str | None] = None
    command: ClassVar[list[str] | None] = None
    model: ClassVar[str] = ""
    api_key_env: ClassVar[str | None] = None
    health_path: ClassVar[str] = "/v1/models"
    startup_timeout: ClassVar[float] = 120.0
    stops_at_max_tokens = True

    _server: ServerProcess | None = None
    _upstream: Any = None
    _session: Any = None
    _loop: asyncio.AbstractEventLoop | None = None

    def setting(self, name: str) -> Any:
        """``[openai] name`` from the toml if set, else the class attribute."""
        table = self.config.openai
        value = getattr(table, name, None) if table is not None else None
        return value if value is not None else getattr(self, name)

    def load_model(self) -> None:
        """Start the server (if ``command``) and wait for its health probe."""
        base_url, command = self.setting("base_url"), self.setting("command")
        if not base_url and not command:
            raise ValueError("OpenAIModelClass needs 'base_url' or 'command' ([openai] table)")
        if command:
            self._server = ServerProcess(list(command), self.path)
            atexit.register(self._server.stop)
            port = str(self._server.port)
            base_url = (base_url or "http://127.0.0.1:{port}/v1").replace("{port}", port)
        self.resolved_base_url = str(base_url).rstrip("/")
        url = origin(self.resolved_base_url) + str(self.setting("health_path"))
        try:
            wait_healthy(
                url,
                float(self.setting("startup_timeout")),
                headers=self._key_headers(),
                process=self._server,
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the HTTP session and stop the server this model started."""
        session, loop, self._session = self._session, self._loop, None
        if session is not None and loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(5)
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _key(self) -> str | None:
        name = self.setting("api_key_env")
        if not name:
            return None
        if name not in os.environ:
            raise ValueError(f"the environment variable {name} (api_key_env) is not set")
        return os.environ[name]

    def _key_headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request_body(
        self, messages: list[dict[str, Any]], params: GenerateParams
    ) -> dict[str, Any]:
        """The chat completion request sent upstream."""
        body: dict[str, Any] = {
            "model": self.setting("model") or self.config.id,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        optional = {
            "max_tokens": params.max_tokens,
            "stop": params.stop or None,
            "seed": params.seed,
            "presence_penalty": params.presence_penalty or None,
            "frequency_penalty": params.frequency_penalty or None,
            "response_format": params.response_format,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        if params.tools:
            body["tools"] = params.tools
            body["tool_choice"] = params.tool_choice
            body["parallel_tool_calls"] = params.parallel_tool_calls
        return body

    async def generate(
        self, messages: list[dict[str, Any]], params: GenerateParams
    ) -> AsyncIterator[Output]:
        from portway.sdk.openai_stream import stream_chunks

        body = json.dumps(self.request_body(messages, params)).encode("utf-8")
        pieces, counted = 0, False
        async for chunk in stream_chunks(self._upstream_backend(), body):
            outputs = chunk_outputs(chunk)
            pieces += any(not isinstance(item, Usage) for item in outputs)
            for item in outputs:
                counted = counted or isinstance(item, Usage)
                yield item
        if not counted:  # servers without include_usage: one token per chunk
            yield Usage(completion_tokens=pieces)

    def _upstream_backend(self) -> Any:
        """Portway's upstream client for this server, made once per event loop."""
        loop = asyncio.get_running_loop()
        if self._upstream is None or self._loop is not loop:
            from portway.backends.upstream.backend import UpstreamChat
            from portway.registry.catalog import OpenAISpec

            spec = OpenAISpec(
                user=self.config.user or "local",  # a name for logs only
                app=self.config.app,
                model=self.config.id,
                backend="openai",
                base_url=self.resolved_base_url,
                upstream_model=self.setting("model") or self.config.id,
            )
            from portway.backends.upstream.http_client import open_session

            upstream = UpstreamChat(spec)
            self._session = open_session()
            upstream.attach(self._session, self._key())
            self._upstream, self._loop = upstream, loop
        return self._upstream


def chunk_outputs(chunk: dict[str, Any]) -> list[Output]:
    """The typed outputs in one chat completion chunk."""
    if isinstance(chunk.get("error"), dict):
        raise RuntimeError(f"the upstream failed: {chunk['error'].get('message')}")
    found: list[Output] = []
    for choice in (chunk.get("choices") or [])[:1]:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            found.append(Reasoning(str(reasoning)))
        if delta.get("content"):
            found.append(Text(str(delta["content"])))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            found.append(
                ToolCallDelta(
                    index=int(call.get("index", 0)),
                    id=call.get("id"),
                    name=function.get("name"),
                    arguments=function.get("arguments") or "",
                )
            )
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        found.append(Usage(usage.get("prompt_tokens"), usage.get("completion_tokens")))
    return found
