"""The FastAPI app factory: ``create_app(settings)``; Redis is opened in the lifespan.

Run with ``vigil serve`` (embedded Redis, worker) or, given ``VIGIL_REDIS_URL``,
``uvicorn --factory service.main:app_from_env``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from service.audit import AuditMiddleware
from service.auth import ensure_admin_key
from service.config import Settings
from service.errors import install_error_handlers, install_store_error_handlers
from service.ingest import sweep_stale_uploads
from service.jobs import JobQueue
from service.metrics import LatencyMiddleware, Metrics
from service.routes import (
    audit,
    events,
    health,
    jobs,
    keys,
    labels,
    models,
    segments,
    streams,
    training,
)
from service.store import Store

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
ROUTERS = (health, segments, jobs, streams, events, labels, training, models, audit, keys)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if not settings.redis_url:
        raise RuntimeError("VIGIL_REDIS_URL is not set (`vigil serve` starts an embedded Redis)")
    store = Store.from_url(settings.redis_url, settings.redis_prefix)
    queue = JobQueue.from_settings(store.r, settings)
    store.audit.retention_days = settings.audit_retention_days
    app.state.store, app.state.queue = store, queue
    app.state.metrics.attach(store, queue)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.bootstrap_admin_key is not None:
        ensure_admin_key(store, settings.bootstrap_admin_key)
    sweep_stale_uploads(settings.data_dir, settings.stale_upload_age_s)
    sweeper = asyncio.create_task(_sweep_uploads(settings))
    logger.info("API ready (redis prefix %s)", settings.redis_prefix)
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        app.state.metrics.detach()
        store.close()


async def _sweep_uploads(settings: Settings) -> None:
    """After the sweep at start-up, remove ``.part`` files of dead uploads every while:
    another API process sharing ``DATA_DIR`` may have died since."""
    every_s = min(600.0, max(1.0, settings.stale_upload_age_s / 2))
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(
                sweep_stale_uploads, settings.data_dir, settings.stale_upload_age_s
            )
        except OSError as exc:
            logger.warning("sweeping stale uploads failed: %s", exc)


def create_app(settings: Settings) -> FastAPI:
    """A new app for ``settings`` (no I/O until the lifespan starts)."""
    app = FastAPI(
        title="Vigil",
        version="1",
        summary="Clinical video event detection with Grad-CAM explanations.",
        description="See docs/api.md: auth (Bearer keys; viewer < ingest < admin), errors "
        "(application/problem+json with a stable `code`), pagination (`next_cursor`).",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    install_store_error_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    _mount_viewer(app)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    return app


def _mount_viewer(app: FastAPI) -> None:
    """``GET /`` and ``/static`` serve the web viewer (``service/static``) when it is shipped."""
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        return
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def viewer() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the environment."""
    return create_app(Settings())
