"""``create_app(settings)``: the ASGI application and its lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from portway import __version__, gc_tuning
from portway.api import chat, deps, embeddings, errors, health, images, media, models, responses
from portway.api import runners as runners_api
from portway.api import tokens as tokens_api
from portway.api import usage as usage_api
from portway.api.fast import FastRoutes, fast_routes
from portway.auth.principal import Authenticator
from portway.bootstrap import ensure_first_admin
from portway.builders import build_registry
from portway.cluster import open_cluster
from portway.cluster.revocation import share_revocations
from portway.cluster.runners import shared_runners
from portway.console import pages as console_pages
from portway.limits.limiter import Limiter, enforcer_for
from portway.malloc_tuning import MemoryTrimmer
from portway.metrics import Metrics
from portway.metrics import http as metrics_http
from portway.metrics.lifecycle import metrics_running
from portway.middleware import BodyLimit, RequestLog
from portway.private import private_dir
from portway.registry import catalog
from portway.registry.models import Registry
from portway.runners.hub import RunnerHub
from portway.serving.chat import ChatService
from portway.serving.embeddings import EmbeddingService
from portway.serving.images import ImageService
from portway.serving.media import MediaStore
from portway.serving.relay.service import RelayService
from portway.serving.usage import UsageRecorder
from portway.settings import Settings
from portway.store import Store

log = logging.getLogger("portway")

API_PREFIXES = ("/v1", "/v2/ext/openai/v1")


def api_router() -> APIRouter:
    router = APIRouter()
    for module in (chat, embeddings, images, models, health, responses):
        router.include_router(module.router)
    return router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    cluster = await open_cluster(app.state.settings)
    app.state.cluster = cluster  # Redis and NATS when shared by several processes
    try:
        async with _serving(app):
            yield
    finally:
        await cluster.close()


@asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    private_dir(settings.data_dir)
    store = await Store.open(settings.db_url)
    app.state.store = store  # the Responses API reads and writes stored responses
    try:
        registry = await build_registry(
            catalog.load(settings.catalog_path), settings.data_dir, store
        )
        await ensure_first_admin(store, settings, _example_model(registry))
        for entry in registry.entries():
            await entry.backend.start()
        recorder = UsageRecorder(store, settings.data_dir / "ledger", settings.usage_flush_seconds)
        media_store = MediaStore.open(settings.data_dir)
        relay = await RelayService.open(registry, recorder, store, settings.data_dir, media_store)
        await recorder.start()
        await media_store.start()
        runner_hub = RunnerHub(registry, store)
        await runner_hub.restore()
        app.state.runner_hub = runner_hub
        limiter = Limiter(store, enforcer_for(app.state.cluster))
        app.state.services = deps.Services(
            settings=settings,
            authenticator=Authenticator(store),
            registry=registry,
            chat=ChatService(registry, recorder),
            embeddings=EmbeddingService(registry, recorder),
            images=ImageService(registry, recorder, media_store),
            media=media_store,
            relay=relay,
            on_usage=app.state.metrics.usage_ended,
            limiter=limiter,
        )
        await share_revocations(app.state.cluster, app.state.services.authenticator)
        log.info("serving %d models at %s/v1", len(registry.entries()), settings.public_base_url)
        gc_tuning.after_startup()
        trimmer = MemoryTrimmer()
        trimmer.start()
        try:
            async with (
                metrics_running(app.state.metrics, settings, registry),
                shared_runners(app.state.cluster, runner_hub, settings.grace_seconds),
            ):
                yield
        finally:
            await trimmer.stop()
            await limiter.close()
            runner_hub.close()
            await media_store.stop()
            await recorder.stop()
            await relay.close()
            for entry in registry.entries():
                await entry.backend.close()
    finally:
        await store.close()


def _example_model(registry: Registry) -> str | None:
    """The chat model the first-start snippet uses: the embedded one if served."""
    chat = [entry.name for entry in registry.entries() if entry.kind == "chat"]
    default = catalog.default_model_spec().reference
    return default if default in chat else next(iter(chat), None)


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="Portway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    direct = fast_routes(API_PREFIXES)
    app.state.metrics = Metrics(settings.data_dir / "ledger", direct, API_PREFIXES)
    errors.install(app)
    router = api_router()
    for prefix in API_PREFIXES:
        app.include_router(router, prefix=prefix)
    app.include_router(runners_api.router, prefix="/v1")
    app.include_router(tokens_api.router, prefix="/v1")
    app.include_router(usage_api.router, prefix="/v1")
    app.include_router(health.router)
    app.include_router(media.router)
    app.include_router(metrics_http.router)
    app.include_router(console_pages.router)  # last: its model URLs match widely
    app.add_middleware(FastRoutes, routes=direct)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(RequestLog, metrics=app.state.metrics)
    return app
