"""Unauthenticated operational endpoints: ``/healthz``, ``/readyz``, ``/metrics``.

They carry no patient data: liveness, readiness (Redis and worker heartbeats) and aggregate
Prometheus figures, so probes and scrapers need no key.
"""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import QueueDep, StoreDep
from service.routing import VigilRoute
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"], route_class=VigilRoute)


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}},
    summary="Readiness: Redis reachable and at least one live worker",
)
def readyz(store: StoreDep, queue: QueueDep) -> JSONResponse:
    redis_ok = store.ping()
    workers = 0
    if redis_ok:
        try:
            workers = len(queue.live_workers())
        except redis.RedisError:
            redis_ok = False
    ready = redis_ok and workers > 0
    body = Readiness(status="ready" if ready else "not_ready", redis=redis_ok, live_workers=workers)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {}},
            "description": "Prometheus text format.",
        }
    },
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    data = generate_latest(request.app.state.metrics.registry)
    return Response(content=data, media_type=CONTENT_TYPE_LATEST)
