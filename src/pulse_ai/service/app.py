"""The app factory: ``create_app(settings)`` (or ``create_app(settings, ai=...)`` to serve a facade
you built, as the tests do).

At start-up the service opens the database (a SQLite default is created and migrated) and the
vector store: the service process owns an embedded store (its lock names this process to any
other opener, the CLI included). Several uvicorn workers are refused with an embedded store, or
qdrant-client's local mode: they need a Qdrant server (``vector_store: {backend: qdrant, url: ...}``).
At shutdown ``ai.aclose()`` flushes the ledger and closes the store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pulse_ai.client import PulseAI
from pulse_ai.config import LoadedConfig
from pulse_ai.errors import ConfigError
from pulse_ai.service.errors import install_error_handlers
from pulse_ai.service.middleware import ServiceMiddleware
from pulse_ai.service.routes_admin import router as admin_router
from pulse_ai.service.routes_openai import router as openai_router
from pulse_ai.service.routes_ops import router as ops_router
from pulse_ai.service.routes_tenant import router as tenant_router
from pulse_ai.service.settings import ServiceSettings
from pulse_ai.service.state import ServiceState

__all__ = ["app_from_env", "check_workers", "create_app"]

log = logging.getLogger("pulse_ai.service")


def check_workers(loaded: LoadedConfig, workers: int) -> None:
    """Several processes cannot share an embedded store (one owner) or a local-mode Qdrant."""
    store = loaded.config.vector_store
    if workers > 1 and (store.backend == "embedded" or store.url is None):
        where = "the embedded store" if store.backend == "embedded" else "qdrant-client's local mode"
        raise ConfigError(
            f"{workers} workers cannot share {where} ({store.path or store.location}): it has one owner process. "
            "Run one worker, or use a Qdrant server: vector_store: {backend: qdrant, url: http://host:6333}",
            source=loaded.source,
            key_path="vector_store",
        )


def create_app(settings: ServiceSettings | None = None, *, ai: PulseAI | None = None) -> FastAPI:
    """The service over ``ai`` (else the facade of ``settings.config``, else the offline default).
    The app owns the facade from then on: it opens it at start-up and closes it at shutdown."""
    settings = settings or ServiceSettings.from_env()
    facade = ai or (PulseAI.from_config(settings.config) if settings.config else PulseAI.default())
    check_workers(facade.loaded, settings.workers)
    state = ServiceState(facade, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await facade.platform()  # the database, opened (and a SQLite default migrated) now
        facade.vector_store()  # the embedded store's lock: this process is its owner from now on
        try:
            yield
        finally:
            await facade.aclose()  # the ledger's queued rows are committed, the store closed

    app = FastAPI(
        title="pulse-ai",
        summary="OpenAI-compatible embeddings and chat, and per-tenant index and search, behind tenant API keys.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.pulse = state
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(tenant_router)
    app.include_router(admin_router)
    app.include_router(ops_router)
    app.add_middleware(ServiceMiddleware, max_body_bytes=settings.max_body_bytes, metrics=state.metrics)
    return app


def app_from_env() -> FastAPI:
    """For uvicorn's workers (``--factory``): settings from ``PULSE_AI_SERVICE_*`` and the admin key."""
    return create_app(ServiceSettings.from_env())
