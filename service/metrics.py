"""Prometheus metrics of one app, in a registry of its own (tests create many apps).

* ``vigil_http_request_duration_seconds{method,route,status}``: request latency (ASGI middleware;
  ``route`` is the path template, so ids do not explode the label space).
* Read from Redis at scrape time (shared by every API and worker process):
  ``vigil_queue_depth``, ``vigil_jobs{status}``, ``vigil_frames_analysed_total``,
  ``vigil_active_model_info{version}``, ``vigil_live_workers``, ``vigil_redis_up``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.jobs import JobQueue, JobStatus
from service.store import Store

logger = logging.getLogger(__name__)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RedisCollector(Collector):
    """Collects the shared figures from Redis on each scrape."""

    def __init__(self, store: Store, queue: JobQueue) -> None:
        self.store = store
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("vigil_redis_up", "Whether Redis answered this scrape.")
        try:
            figures = list(self._figures())
        except redis.RedisError as exc:
            logger.warning("metrics scrape without Redis: %s", type(exc).__name__)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from figures

    def _figures(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("vigil_queue_depth", "Jobs waiting to run.")
        depth.add_metric([], float(self.queue.depth()))
        yield depth
        jobs = GaugeMetricFamily("vigil_jobs", "Jobs by status.", labels=["status"])
        counts = self.queue.counts()
        for status in JobStatus:
            jobs.add_metric([status.value], float(counts.get(status, 0)))
        yield jobs
        frames = CounterMetricFamily("vigil_frames_analysed", "Frames analysed by all workers.")
        frames.add_metric([], float(self.store.frames_analysed()))
        yield frames
        active = GaugeMetricFamily(
            "vigil_active_model_info", "The active model version (value 1).", labels=["version"]
        )
        version = self.store.models.active_version()
        if version:
            active.add_metric([version], 1.0)
        yield active
        workers = GaugeMetricFamily("vigil_live_workers", "Workers with a recent heartbeat.")
        workers.add_metric([], float(len(self.queue.live_workers())))
        yield workers


class Metrics:
    """The registry of one app and its request-latency histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "vigil_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._redis: RedisCollector | None = None

    def attach(self, store: Store, queue: JobQueue) -> None:
        """Start collecting the Redis figures (called in the lifespan once Redis is open)."""
        self.detach()
        self._redis = RedisCollector(store, queue)
        self.registry.register(self._redis)

    def detach(self) -> None:
        """Stop collecting from Redis (lifespan shutdown)."""
        if self._redis is not None:
            self.registry.unregister(self._redis)
            self._redis = None


class LatencyMiddleware:
    """Pure ASGI middleware timing every HTTP request into ``Metrics.latency``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )
