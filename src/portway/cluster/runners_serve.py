"""``PeerCalls``: other processes' calls, run on this process's runners."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable

from pydantic import ValidationError

from portway.cluster.runners_wire import CallRequest, Refusal, pieces
from portway.errors import PortwayError
from portway.registry import refs
from portway.registry.errors import RunnerUnavailable
from portway.runners import wire
from portway.runners.backend import RunnerBackend
from portway.runners.hub import RunnerHub
from portway.runners.link import Call, RunnerLink
from portway.runners.wire import Answer, DeltaFrame, ErrorFrame

log = logging.getLogger("portway.cluster")

Send = Callable[[str, bytes, dict[str, str]], None]
"""Publishes a payload with headers on a subject (queued, in order)."""


class Reply:
    """The answers to one call, numbered, on the caller's answer subject."""

    def __init__(self, send: Send, subject: str, call_id: str) -> None:
        self.send = send
        self.subject = subject
        self.call_id = call_id
        self._seq = itertools.count()

    def __call__(self, kind: str, data: bytes = b"") -> None:
        parts = pieces(data)
        for index, part in enumerate(parts):
            headers = {"call": self.call_id, "seq": str(next(self._seq)), "kind": kind}
            if index < len(parts) - 1:
                headers["more"] = "1"
            self.send(self.subject, part, headers)

    def frame(self, event: Answer) -> None:
        self("frame", frame_bytes(event))

    def refuse(self, error: PortwayError) -> None:
        refusal = Refusal(
            status=error.status,
            type=error.type,
            message=error.message,
            code=error.code,
            headers=error.headers,
        )
        self("refused", refusal.model_dump_json().encode())


def frame_bytes(event: Answer) -> bytes:
    """A runner's frame as the runner wrote it (what ``parse_runner_frame`` reads)."""
    if isinstance(event, DeltaFrame):
        frame = wire.delta_frame(event.id, event.delta)
        return json.dumps(frame, separators=(",", ":")).encode()
    return event.model_dump_json(exclude_none=True).encode()


def ends(event: Answer) -> bool:
    return not isinstance(event, DeltaFrame) or event.delta.finish_reason is not None


class PeerCalls:
    """Calls that other processes send to this process's runners. Each is admitted
    by its version's pool, like a local request, but on this process's own
    runners only (the chosen one if it has a free slot): it waits in the queue,
    or is refused (no runner left, queue full); then the runner's answers stream
    back. Cancelling it (the caller's cancel, or the caller's death) cancels it
    on the runner."""

    def __init__(
        self,
        hub: RunnerHub,
        send: Send,
        answers: Callable[[str], str],
        find: Callable[[str], RunnerLink | None],
    ) -> None:
        self.hub = hub
        self.send = send
        self.answers = answers
        """A caller's subject token -> its answer subject."""
        self.find = find
        """A runner id -> this process's runner, if still attached."""
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def start(self, caller: str, call_id: str, body: bytes) -> None:
        key = (caller, call_id)
        if key in self.tasks:
            return
        task = asyncio.ensure_future(self._run(caller, call_id, body))
        self.tasks[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))

    def cancel(self, caller: str, call_id: str) -> None:
        task = self.tasks.get((caller, call_id))
        if task is not None:
            task.cancel()

    def drop(self, caller: str) -> None:
        """The caller is gone: stop its calls."""
        for (who, _), task in list(self.tasks.items()):
            if who == caller:
                task.cancel()

    async def stop(self, grace: float) -> None:
        """Let the calls run for at most ``grace`` seconds, then cancel them."""
        if self.tasks and grace > 0:
            await asyncio.wait(list(self.tasks.values()), timeout=grace)
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]

    async def _run(self, caller: str, call_id: str, body: bytes) -> None:
        reply = Reply(self.send, self.answers(caller), call_id)
        try:
            request = CallRequest.model_validate_json(body)
            backend = self._backend(request)
            link = await backend.pool.acquire(
                prefer=self.find(request.runner), among=self.hub.links
            )
        except ValidationError as exc:
            log.warning("a bad call from %s: %s", caller, exc.errors(include_url=False)[0])
            reply.refuse(PortwayError("The process holding the runner got a bad call."))
            return
        except PortwayError as exc:
            reply.refuse(exc)
            return
        try:
            await _relay(link, link.open(request.type, request.payload), reply)
        finally:
            backend.pool.release(link)

    def _backend(self, request: CallRequest) -> RunnerBackend:
        ref = refs.parse(request.reference).ref
        entry = self.hub.registry.runner_version(ref, request.version)
        if entry is None or not isinstance(entry.backend, RunnerBackend):
            raise RunnerUnavailable(request.reference)
        return entry.backend


async def _relay(link: RunnerLink, call: Call, reply: Reply) -> None:
    """Pass the call's answers on until it ends or its runner goes away."""
    try:
        while (event := await call.events.get()) is not None:
            reply.frame(event)
            if ends(event):
                call.done = True
                if isinstance(event, ErrorFrame):
                    link.failed += 1
                else:
                    link.served += 1
                return
        reply("gone")
    finally:
        link.finish(call)
