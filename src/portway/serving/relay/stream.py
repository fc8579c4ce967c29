"""A relayed stream: opening it (its first event in, so that a failure up to then
can still be retried) and relaying its events as they come, rewritten for the
client, with its ledger row written before the frames that end it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from portway.backends.upstream.errors import UpstreamUnavailable
from portway.backends.upstream.exchange import Exchange
from portway.backends.upstream.pool import Outcome
from portway.backends.upstream.sse import EventSplitter, MalformedStream, ModelRewriter, parse_event
from portway.registry.models import ModelEntry
from portway.serving.metering import CUT_SHORT, Recorder, log_tokens, record_row
from portway.serving.relay.call import RelayCall, meter_usage, upstream_of
from portway.serving.relay.endpoints import RelayEndpoint, StreamState


@dataclass
class RelayStream:
    """A relayed stream whose first frames are in: iterate for the framed bytes;
    a failure raises, and :meth:`error_frame` gives the event that reports it."""

    frames: AsyncIterator[bytes]
    state: StreamState
    endpoint: RelayEndpoint

    def error_frame(self, error: BaseException) -> bytes:
        return self.endpoint.error_frame(error, self.state)


@dataclass
class OpenedStream:
    """An upstream stream whose first frames are in."""

    entry: ModelEntry
    exchange: Exchange
    deadline: float
    state: StreamState
    splitter: EventSplitter = field(default_factory=EventSplitter)
    head: bytes = b""
    broken: MalformedStream | None = None
    """A bad event that followed good ones in the same read: raised once they are sent."""

    def __post_init__(self) -> None:
        self.rewriter = ModelRewriter(self.entry.name)


async def open_stream(
    call: RelayCall, entry: ModelEntry, deadline: float, state: StreamState
) -> OpenedStream:
    """One attempt at ``entry``'s stream, until its first frames are in; a bad first
    event or a body that is no stream is an ``UpstreamUnavailable`` (retried)."""
    backend = upstream_of(entry)
    body = call.endpoint.upstream_body(call.body, backend.upstream_model)
    first = backend.first_byte_deadline(deadline)
    exchange = await backend.open(call.endpoint.path, body, stream=True, until=first)
    opened = OpenedStream(entry, exchange, deadline, state, EventSplitter(backend.max_event_bytes))
    outcome = Outcome.FAILED
    try:
        if "text/event-stream" not in exchange.content_type:
            raise UpstreamUnavailable(
                f"The upstream of '{entry.name}' did not answer with a stream."
            )
        while not opened.head and not state.finished:
            piece = await exchange.next_piece(first)
            if piece is None:
                opened.head = call.endpoint.stream_end(state)
                break
            opened.head = _relay(call, opened, piece)
        call.meter.first_token()  # the upstream's first event: as near as a relay sees
        outcome = Outcome.OK
        return opened
    except MalformedStream as exc:  # nothing was sent yet: worth another attempt
        raise UpstreamUnavailable(f"The upstream of '{entry.name}': {exc.message}") from exc
    except asyncio.CancelledError:
        outcome = Outcome.NEUTRAL
        raise
    finally:
        if outcome is not Outcome.OK:
            await exchange.finish(outcome)


def _relay(call: RelayCall, opened: OpenedStream, piece: bytes) -> bytes:
    """The frames to send for ``piece`` of the upstream's stream. A bad event after
    good ones in the same piece is kept in ``opened.broken``: the good ones go out
    first, as they would have had they arrived in reads of their own."""
    out = []
    for raw in opened.splitter.feed(piece):
        try:
            event = parse_event(raw)
            if event is not None and not opened.state.finished:
                out.append(call.endpoint.stream_event(event, opened.state, opened.rewriter))
        except MalformedStream as exc:
            if not out:
                raise
            opened.broken = exc
            break
    return b"".join(out)


async def stream_frames(
    call: RelayCall, opened: OpenedStream, recorder: Recorder
) -> AsyncIterator[bytes]:
    """The stream's frames. Its ledger row is recorded before the frames that
    end it are handed on: a client that got the whole stream is on record."""
    state, exchange = opened.state, opened.exchange
    ended: BaseException | None = CUT_SHORT
    outcome = Outcome.NEUTRAL
    recorded = False
    try:
        frames = opened.head
        while not state.finished:
            if frames:
                yield frames
            if opened.broken is not None:
                raise opened.broken
            piece = await exchange.next_piece(opened.deadline)
            if piece is None:
                frames = _relay(call, opened, b"\n\n") if opened.splitter.pending else b""
                if frames and not state.finished:
                    yield frames
                    frames = b""
                if opened.broken is not None:
                    raise opened.broken
                break
            frames = _relay(call, opened, piece)
        frames += call.endpoint.stream_end(state)
        ended, outcome = None, Outcome.OK
        recorded = _record_stream(recorder, call, opened, ended)
        yield frames
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
            ended, outcome = exc, Outcome.FAILED
        raise
    finally:
        if not recorded:
            _record_stream(recorder, call, opened, ended)
        await exchange.finish(outcome)


def _record_stream(
    recorder: Recorder, call: RelayCall, opened: OpenedStream, ended: BaseException | None
) -> bool:
    """Write the stream's ledger row (estimated where the upstream gave no usage)."""
    estimate = (call.endpoint.estimate(call.body, None)[0], opened.state.estimated)
    meter_usage(call.meter, opened.entry, opened.state.usage or estimate)
    record_row(recorder, call.meter, ended)
    log_tokens(call.ctx, call.meter)
    return True
