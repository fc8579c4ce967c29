"""The relay: requests for hosted models go to their upstream as the client sent
them (model renamed), and the answer comes back as the upstream sent it (model
renamed back), metered in the usage ledger.

Order of attempts: the model's endpoints with retries (exponential backoff with
jitter, at least ``Retry-After``) within the model's ``total`` deadline, then each
fallback model the same way. A fallback may be a local model: when the chain
reaches it, the relay raises :class:`LocalFallback` and the API layer serves the
request with that model through the serving layer (which writes its ledger row);
the chain ends there. All of that happens before the client has received
a byte: a stream is only handed to the client once its first event is in. After
that a failure ends the stream with an error event, and the usage so far is
written. Every relayed request writes one ledger row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from pydantic_core import from_json

from portway.backends.base import RelayBackend
from portway.backends.upstream.backend import UpstreamBackend
from portway.backends.upstream.errors import UpstreamFailure, UpstreamUnavailable
from portway.backends.upstream.http_client import open_session
from portway.backends.upstream.pool import Outcome
from portway.backends.upstream.sse import ModelRewriter, parse_json
from portway.errors import PortwayError
from portway.registry.catalog import CatalogError
from portway.registry.models import ModelEntry, Registry
from portway.serving.context import RequestContext
from portway.serving.media import MediaStore
from portway.serving.metering import Recorder, log_tokens, record_row
from portway.serving.relay.address_guard import AddressPolicy
from portway.serving.relay.call import RelayCall, meter_usage, upstream_of
from portway.serving.relay.endpoints import RelayEndpoint, StreamState
from portway.serving.relay.rehost import Rehoster
from portway.serving.relay.stream import RelayStream, open_stream, stream_frames
from portway.store import Store

log = logging.getLogger("portway.relay")

T = TypeVar("T")


class LocalFallback(Exception):
    """The hosted models of the chain failed before their first byte and the next
    fallback, ``entry``, is served locally. ``error`` is the last upstream failure
    (the answer if the API layer cannot serve ``entry``). No ledger row was written."""

    def __init__(self, entry: ModelEntry, error: PortwayError) -> None:
        super().__init__(entry.name)
        self.entry = entry
        self.error = error


class RelayService:
    def __init__(
        self,
        registry: Registry,
        recorder: Recorder,
        session: aiohttp.ClientSession,
        media: MediaStore | None = None,
    ) -> None:
        """``session`` carries every upstream call; ``media`` keeps the images of
        models that re-host them (none without it)."""
        self.registry = registry
        self.recorder = recorder
        self.session = session
        self.rehoster = Rehoster(media) if media is not None else None
        self._by_name = _names(registry)

    @classmethod
    async def open(
        cls,
        registry: Registry,
        recorder: Recorder,
        store: Store,
        data_dir: Path,
        media: MediaStore,
    ) -> RelayService:
        """The relay and its HTTP session (shared by every upstream model, each of
        which gets it and its API key). CatalogError if a fallback is not an
        upstream model of the same kind."""
        service = cls(registry, recorder, open_session(), media)
        try:
            for entry in registry.entries():
                if isinstance(entry.backend, UpstreamBackend):
                    service._check_fallbacks(entry)
                    key = await _api_key(entry.backend, store, data_dir)
                    entry.backend.attach(service.session, key)
                    if entry.backend.missing_key:
                        log.warning(
                            "model %s has no API key: set its %s",
                            entry.name,
                            entry.backend.missing_key,
                        )
        except BaseException:
            await service.close()
            raise
        return service

    async def close(self) -> None:
        await self.session.close()
        if self.rehoster is not None:
            await self.rehoster.close()

    def _check_fallbacks(self, entry: ModelEntry) -> None:
        """Each fallback is a hosted (``openai``) or local model of the same kind."""
        for name in upstream_of(entry).fallbacks:
            found = self._by_name.get(name)
            if found is None:
                raise CatalogError(f"{entry.name}: fallback {name!r} is not in the catalogue")
            relayed = isinstance(found.backend, RelayBackend)
            if relayed and not isinstance(found.backend, UpstreamBackend):
                raise CatalogError(f"{entry.name}: fallback {name!r} cannot be a fallback")
            if found.kind != entry.kind:
                raise CatalogError(f"{entry.name}: fallback {name!r} is a {found.kind} model")

    # ------------------------------------------------------------------ accept

    def accept(
        self,
        ctx: RequestContext,
        entry: ModelEntry,
        raw: bytes,
        endpoint: RelayEndpoint,
        base_url: str = "",
    ) -> RelayCall:
        """Check the model serves ``endpoint``; nothing is sent yet. ``raw`` is the
        client's body, already validated by the endpoint's request model;
        ``base_url`` is Portway's public URL, which re-hosted image links use."""
        if entry.kind != endpoint.kind:
            raise entry.wrong_kind(endpoint.path)
        body = from_json(raw)  # valid JSON: the endpoint's request model has read it
        end_user = body.get("user") or body.get("safety_identifier")
        meter = ctx.meter(end_user if isinstance(end_user, str) else None)
        ctx.log_fields["model"] = entry.name
        chain = [entry]
        for name in upstream_of(entry).fallbacks:
            fallback = self._by_name[name]
            if fallback.visible_to(ctx.principal):
                chain.append(fallback)
        endpoint.check(body)
        meter.model, meter.version_id = entry.name, entry.version_id
        return RelayCall(ctx, entry, endpoint, body, meter, chain, base_url)

    # ------------------------------------------------------------------- unary

    async def complete(self, call: RelayCall) -> bytes:
        """The upstream's JSON body, model renamed; one ledger row however it ends."""
        with _ledger(self.recorder, call):
            return await self._attempts(call, lambda entry, until: self._unary(call, entry, until))

    async def _unary(self, call: RelayCall, entry: ModelEntry, deadline: float) -> bytes:
        backend = upstream_of(entry)
        body = call.endpoint.upstream_body(call.body, backend.upstream_model)
        first = backend.first_byte_deadline(deadline)
        exchange = await backend.open(call.endpoint.path, body, stream=False, until=first)
        outcome = Outcome.FAILED
        try:
            raw = await exchange.read_all(deadline)
            reply = _reply(raw, call.endpoint, entry.name)
            outcome = Outcome.OK
        except asyncio.CancelledError:
            outcome = Outcome.NEUTRAL
            raise
        finally:
            await exchange.finish(outcome)
        meter_usage(
            call.meter,
            entry,
            call.endpoint.unary_usage(reply) or call.endpoint.estimate(call.body, reply),
        )
        if backend.rehost_images and call.endpoint.kind == "image":
            reply = await self._rehost(call, entry, reply, deadline)
            raw = json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return ModelRewriter(entry.name).rewrite(raw, reply, reply)

    async def _rehost(
        self, call: RelayCall, entry: ModelEntry, reply: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        """The images ``reply`` with its URLs on Portway (a 502, not retried, if one
        cannot be fetched: the upstream has made and charged for the images)."""
        if self.rehoster is None:
            raise RuntimeError("the relay has no media store to re-host images in")
        backend = upstream_of(entry)
        return await self.rehoster.rehost(
            reply,
            model=entry.name,
            base_url=call.base_url,
            ttl=backend.url_ttl,
            until=deadline,
            policy=AddressPolicy(backend.rehost_networks),
        )

    # ------------------------------------------------------------------ stream

    async def stream(self, call: RelayCall) -> RelayStream:
        """The relayed stream, its first event already in (so that every failure
        up to then could still be retried, or answered with a plain error)."""
        state = StreamState(call.client_usage)
        try:
            opened = await self._attempts(
                call, lambda entry, until: open_stream(call, entry, until, state)
            )
        except LocalFallback:
            raise
        except BaseException as exc:
            record_row(self.recorder, call.meter, exc)
            raise
        return RelayStream(stream_frames(call, opened, self.recorder), state, call.endpoint)

    # ---------------------------------------------------------------- attempts

    async def _attempts(
        self, call: RelayCall, attempt: Callable[[ModelEntry, float], Awaitable[T]]
    ) -> T:
        """``attempt`` on each model of the chain, with retries, until one succeeds."""
        last: PortwayError | None = None
        for entry in call.chain:
            if not isinstance(entry.backend, UpstreamBackend):
                assert last is not None  # the chain starts with the hosted model
                raise LocalFallback(entry, last)
            deadline = entry.backend.deadline()
            log_failure = partial(_log_failure, call, entry)
            try:
                return await entry.backend.retrying(
                    partial(attempt, entry, deadline), deadline, log_failure
                )
            except PortwayError as exc:
                if not isinstance(exc, UpstreamFailure):
                    raise
                last = exc
            if not (isinstance(last, UpstreamFailure) and last.fallback):
                break
        assert last is not None
        raise last


def _log_failure(call: RelayCall, entry: ModelEntry, tries: int, exc: PortwayError) -> None:
    log.info("%s: %s (attempt %d) %s", call.ctx.request_id, entry.name, tries, exc.message)


def _names(registry: Registry) -> dict[str, ModelEntry]:
    """Each entry by its reference and its aliases (for fallbacks)."""
    found: dict[str, ModelEntry] = {}
    for entry in registry.entries():
        found[entry.name] = entry
        for alias in entry.aliases:
            found.setdefault(alias, entry)
    return found


async def _api_key(backend: UpstreamBackend, store: Store, data_dir: Path) -> str | None:
    if backend.key_env:
        return os.environ.get(backend.key_env) or None
    if backend.key_secret:
        from portway.store.secrets import SecretBox, read_secret

        return await read_secret(store, SecretBox.open(data_dir), backend.key_secret)
    return None


def _reply(raw: bytes, endpoint: RelayEndpoint, name: str) -> dict[str, Any]:
    """The upstream's unary body as an object, or a 502 if it is not one."""
    try:
        reply = parse_json(raw)
    except PortwayError as exc:
        raise UpstreamUnavailable(
            f"The upstream of '{name}' answered with a body that is not JSON."
        ) from exc
    if endpoint.required not in reply:
        raise UpstreamUnavailable(
            f"The upstream of '{name}' answered without '{endpoint.required}'."
        )
    return reply


class _ledger:
    """Writes the call's ledger row when a unary relay ends, however it ends."""

    def __init__(self, recorder: Recorder, call: RelayCall) -> None:
        self.recorder, self.call = recorder, call

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, LocalFallback):
            return  # the local model's serving layer writes the row
        record_row(self.recorder, self.call.meter, exc)
        log_tokens(self.call.ctx, self.call.meter)
