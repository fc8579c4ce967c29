"""``ClusterRunners``: every process's runners serve requests arriving at any process.

A runner attaches to one process (its owner) over its WebSocket, as it does
without a cluster. The owner announces it over NATS; every other process puts
a :class:`~portway.cluster.runners_remote.RemoteLink` for it in the version's
pool, next to its own runners. A request there that picks it is sent to the
owner, which admits it into its own pool (so each runner's concurrency holds
across the cluster), runs it on the runner, and streams the answers back; a
cancel (the client went away, a deadline passed) crosses back the same way.
A process that stops announcing is taken for dead: its runners leave every
pool, and the calls it was running fail as they do when a runner goes away.
The messages are described in :mod:`portway.cluster.runners_wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from portway.aio import cancel_and_wait
from portway.cluster.core import Cluster, SharedCluster
from portway.cluster.runners_remote import RemoteLink
from portway.cluster.runners_serve import PeerCalls
from portway.cluster.runners_wire import (
    HEARTBEAT,
    SILENT_AFTER,
    Announcement,
    Assembler,
    Refusal,
    RemoteRunner,
    pieces,
    subject_token,
)
from portway.errors import PortwayError
from portway.registry.errors import RunnerUnavailable
from portway.runners import wire
from portway.runners.backend import RunnerBackend
from portway.runners.hub import RunnerHub
from portway.runners.link import Call, Event, RunnerLink
from portway.runners.wire import DeltaFrame, ErrorFrame, FrameError, ResultFrame

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger("portway.cluster")

Message = tuple[str, bytes, dict[str, str]]


@asynccontextmanager
async def shared_runners(cluster: Cluster, hub: RunnerHub, grace: float) -> AsyncIterator[None]:
    """Within the block, ``hub``'s runners serve the whole cluster and the other
    processes' runners serve here; on leaving, the calls run for others get
    ``grace`` seconds. One process alone: nothing happens."""
    if not isinstance(cluster, SharedCluster):
        yield
        return
    prefix = cluster.subject("runners")
    runners = await ClusterRunners.start(cluster.nats, prefix, cluster.process, hub)
    try:
        yield
    finally:
        await runners.stop(grace)


@dataclass
class _Held:
    """Another process's runner, as it stands in one of this process's pools."""

    link: RemoteLink
    backend: RunnerBackend
    draining: bool = False


@dataclass
class _Peer:
    """Another process of the cluster and the runners it announced."""

    process: str
    subject: str
    seen: float
    links: dict[str, _Held] = field(default_factory=dict)


@dataclass
class _Pending:
    """A call this process sent to another's runner, awaiting its answers."""

    link: RemoteLink
    call: Call
    seq: int = 0


class ClusterRunners:
    """Shares this process's runners with the cluster, and the cluster's with it."""

    def __init__(self, nats: NATS, prefix: str, process: str, hub: RunnerHub) -> None:
        self.nats = nats
        self.prefix = prefix
        """The subjects' prefix (the cluster's name and ``runners``)."""
        self.process = process
        self.token = subject_token(process)
        self.hub = hub
        self.peers: dict[str, _Peer] = {}
        self.calls: dict[str, _Pending] = {}
        self.serving = PeerCalls(hub, self._send, self._answers, self._local_runner)
        self._ids: dict[RunnerLink, str] = {}
        self._count = itertools.count(1)
        self._outbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._parts = Assembler()
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []

    def subject(self, *parts: str) -> str:
        return ".".join((self.prefix, *parts))

    @classmethod
    async def start(cls, nats: NATS, prefix: str, process: str, hub: RunnerHub) -> ClusterRunners:
        """Join the cluster's runners: subscribe, announce, and keep announcing."""
        self = cls(nats, prefix, process, hub)
        hub.process = process
        hub.listeners.append(self._changed.set)
        for subject, handler in (
            (self.subject("state"), self._on_state),
            (self.subject(self.token, "call"), self._on_call),
            (self.subject(self.token, "cancel"), self._on_cancel),
            (self.subject(self.token, "answer"), self._on_answer),
        ):
            self._subscriptions.append(await nats.subscribe(subject, cb=handler))
        self._tasks = [asyncio.ensure_future(self._pump()), asyncio.ensure_future(self._beat())]
        return self

    async def stop(self, grace: float) -> None:
        """Leave: other processes drop this one's runners at once; the calls this
        process runs for them get ``grace`` seconds to end."""
        if self._changed.set in self.hub.listeners:
            self.hub.listeners.remove(self._changed.set)
        await cancel_and_wait(self._tasks[1])
        self._announce(leaving=True)
        await self.serving.stop(grace)
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        async with self._lock:
            for peer in list(self.peers.values()):
                self._drop(peer)
        self._outbox.put_nowait(None)
        await self._tasks[0]
        with contextlib.suppress(Exception):
            await self.nats.flush(timeout=2)

    # --- sending ---------------------------------------------------------------

    def _send(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        self._outbox.put_nowait((subject, data, headers))

    def _send_pieces(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        parts = pieces(data)
        for index, part in enumerate(parts):
            more = {"more": "1"} if index < len(parts) - 1 else {}
            self._send(subject, part, headers | more)

    async def _pump(self) -> None:
        """Publish queued messages in order (sending never waits on the network)."""
        while (message := await self._outbox.get()) is not None:
            subject, data, headers = message
            try:
                await self.nats.publish(subject, data, headers=headers)
            except Exception as exc:  # a full buffer while NATS is away: the message is lost
                log.warning("publishing on %s failed: %s", subject, exc or type(exc).__name__)

    def _answers(self, caller: str) -> str:
        return self.subject(caller, "answer")

    # --- announcing ------------------------------------------------------------

    async def _beat(self) -> None:
        """Announce now, on each change here and every HEARTBEAT seconds; drop
        the processes that went silent."""
        while True:
            self._changed.clear()
            self._announce()
            await self._reap()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    await self._changed.wait()

    def _announce(self, *, leaving: bool = False) -> None:
        runners = [] if leaving else [self._describe(link) for link in self.hub.links]
        announcement = Announcement(
            process=self.process, subject=self.token, runners=runners, leaving=leaving
        )
        data = announcement.model_dump_json(exclude_defaults=True).encode()
        self._send_pieces(self.subject("state"), data, {"from": self.token})

    def _describe(self, link: RunnerLink) -> RemoteRunner:
        entry = self.hub.links[link]
        return RemoteRunner(
            id=self._runner_id(link),
            name=link.name,
            owner=link.owner,
            model=link.info,
            visibility=entry.visibility,
            concurrency=link.concurrency,
            in_flight=link.in_flight,
            served=link.served,
            failed=link.failed,
            draining=link in self.hub.draining,
        )

    def _runner_id(self, link: RunnerLink) -> str:
        for gone in [known for known in self._ids if known not in self.hub.links]:
            del self._ids[gone]
        return self._ids.setdefault(link, f"r{next(self._count)}")

    def _local_runner(self, runner_id: str) -> RunnerLink | None:
        return next((link for link, known in self._ids.items() if known == runner_id), None)

    # --- other processes' runners ------------------------------------------------

    async def _on_state(self, msg: Msg) -> None:
        headers = msg.headers or {}
        data = self._parts.add(f"state/{headers.get('from')}", msg.data, "more" in headers)
        if data is None:
            return
        try:
            announcement = Announcement.model_validate_json(data)
        except ValidationError as exc:
            log.warning("ignoring a bad runner announcement: %s", exc.errors()[0]["msg"])
            return
        if announcement.subject != self.token:
            async with self._lock:
                await self._apply(announcement)

    async def _apply(self, announcement: Announcement) -> None:
        peer = self.peers.get(announcement.subject)
        if announcement.leaving:
            if peer is not None:
                log.info("process %s left the cluster", peer.process)
                self._drop(peer)
            return
        now = asyncio.get_running_loop().time()
        if peer is None:
            peer = _Peer(announcement.process, announcement.subject, now)
            self.peers[peer.subject] = peer
            log.info("process %s joined the cluster", peer.process)
        peer.seen = now
        current = {runner.id for runner in announcement.runners}
        for runner_id in [known for known in peer.links if known not in current]:
            self._retire(peer, runner_id, lost=True)
        for runner in announcement.runners:
            await self._update(peer, runner)

    async def _update(self, peer: _Peer, runner: RemoteRunner) -> None:
        held = peer.links.get(runner.id)
        if held is not None:
            held.link.reported = runner
            if runner.draining and not held.draining:
                held.draining = True
                held.backend.remove(held.link)  # its calls go on
            return
        if runner.draining:
            return
        try:
            entry = await self.hub.version_entry(runner.model, runner.visibility)
        except PortwayError as exc:
            log.warning("runner %s of %s: %s", runner.name, peer.process, exc.message)
            return
        assert isinstance(entry.backend, RunnerBackend)
        held = _Held(RemoteLink(runner, peer.process, peer.subject, self), entry.backend)
        peer.links[runner.id] = held
        held.backend.add(held.link)
        log.info("runner %s of %s serves %s here", runner.name, peer.process, entry.ref)

    def _retire(self, peer: _Peer, runner_id: str, *, lost: bool) -> None:
        """Take a runner out of its pool; ``lost``: its calls here fail as when a
        runner goes away (they are lost with it)."""
        held = peer.links.pop(runner_id, None)
        if held is not None:
            held.backend.remove(held.link)
            if lost:
                held.link.lose()

    def _drop(self, peer: _Peer) -> None:
        """A process left or went silent: its runners and its calls here go."""
        for runner_id in list(peer.links):
            self._retire(peer, runner_id, lost=True)
        self.peers.pop(peer.subject, None)
        self.serving.drop(peer.subject)

    async def _reap(self) -> None:
        now = asyncio.get_running_loop().time()
        async with self._lock:
            for peer in list(self.peers.values()):
                if now - peer.seen > SILENT_AFTER:
                    log.warning("process %s fell silent; its runners are dropped", peer.process)
                    self._drop(peer)

    # --- calls to other processes' runners ----------------------------------------

    def open_call(self, link: RemoteLink, kind: str, payload: dict[str, Any]) -> Call:
        call = Call(f"x{next(self._count)}")
        self.calls[call.id] = _Pending(link, call)
        body = {
            "reference": link.info.reference,
            "version": link.info.version,
            "runner": link.runner_id,
            "type": kind,
            "payload": wire.to_json(payload),
        }
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"from": self.token, "call": call.id}
        self._send_pieces(self.subject(link.subject, "call"), data, headers)
        return call

    def close_call(self, link: RemoteLink, call: Call, *, cancel: bool) -> None:
        self.calls.pop(call.id, None)
        self._parts.forget(f"answer/{call.id}")
        if cancel:
            headers = {"from": self.token, "call": call.id}
            self._send(self.subject(link.subject, "cancel"), b"", headers)

    async def _on_call(self, msg: Msg) -> None:
        headers = msg.headers or {}
        caller, call_id = headers.get("from", ""), headers.get("call", "")
        data = self._parts.add(f"call/{caller}/{call_id}", msg.data, "more" in headers)
        if data is not None and caller and call_id:
            self.serving.start(caller, call_id, data)

    async def _on_cancel(self, msg: Msg) -> None:
        headers = msg.headers or {}
        caller, call_id = headers.get("from", ""), headers.get("call", "")
        self._parts.forget(f"call/{caller}/{call_id}")
        self.serving.cancel(caller, call_id)

    async def _on_answer(self, msg: Msg) -> None:
        headers = msg.headers or {}
        pending = self.calls.get(headers.get("call", ""))
        if pending is None:
            return
        if headers.get("seq") != str(pending.seq):  # a message was lost: so is the call
            log.warning("call %s lost an answer from %s", pending.call.id, pending.link.process)
            del self.calls[pending.call.id]
            pending.call.events.put_nowait(None)
            return
        pending.seq += 1
        data = self._parts.add(f"answer/{pending.call.id}", msg.data, "more" in headers)
        if data is not None:
            pending.call.events.put_nowait(self._event(pending, headers.get("kind"), data))

    def _event(self, pending: _Pending, kind: str | None, data: bytes) -> Event:
        """A call's next event from an answer (None: its runner went away)."""
        if kind == "frame":
            try:
                frame = wire.parse_runner_frame(data)
            except FrameError as exc:
                log.warning("a bad frame from %s: %s", pending.link.process, exc)
                return None
            return frame if isinstance(frame, DeltaFrame | ResultFrame | ErrorFrame) else None
        if kind == "refused":
            try:
                refusal = Refusal.model_validate_json(data)
            except ValidationError:
                return None
            if refusal.code == RunnerUnavailable.code:  # it left: try another runner
                self._forget_link(pending.link)
                return None
            error = PortwayError(refusal.message, code=refusal.code, headers=refusal.headers)
            error.status, error.type = refusal.status, refusal.type
            return pending.link.refuse(pending.call, error)
        return None

    def _forget_link(self, link: RemoteLink) -> None:
        """Its owner says the runner is gone: take it out of its pool now."""
        peer = self.peers.get(link.subject)
        if peer is not None:
            held = peer.links.get(link.runner_id)
            if held is not None and held.link is link:
                self._retire(peer, link.runner_id, lost=False)
