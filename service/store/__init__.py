"""Typed access to everything Vigil keeps in Redis (except the job queue: ``service.jobs``).

The store is **synchronous** (redis-py ``Redis`` with ``decode_responses=True``) so that one
implementation serves both the worker (plain threads) and the API. The API calls it from sync
route functions, which FastAPI runs in its thread pool, and from ``run_in_threadpool`` in the
few ``async`` routes (uploads), so the event loop never blocks on Redis.

Usage::

    store = Store.from_url("redis://localhost:6379/0", prefix="vigil:")
    store.segments.put(segment); store.events.write(stream_id, events, window=(t0, t1))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from service.keys import Keys
from service.store._base import Client, InvalidCursor
from service.store.admin import (
    ApiKeyRepo,
    AuditRepo,
    IdempotencyRepo,
    LabelRepo,
    ModelRepo,
    hash_key,
    new_id,
)
from service.store.events import EventQuery, EventRepo, WriteResult
from service.store.segments import SegmentRepo, StreamRepo


@dataclass
class Store:
    """One Redis client and the repositories over it."""

    r: Client
    keys: Keys
    segments: SegmentRepo = field(init=False)
    events: EventRepo = field(init=False)
    streams: StreamRepo = field(init=False)
    labels: LabelRepo = field(init=False)
    models: ModelRepo = field(init=False)
    api_keys: ApiKeyRepo = field(init=False)
    audit: AuditRepo = field(init=False)
    idempotency: IdempotencyRepo = field(init=False)

    def __post_init__(self) -> None:
        self.segments = SegmentRepo(self.r, self.keys)
        self.events = EventRepo(self.r, self.keys)
        self.streams = StreamRepo(self.r, self.keys)
        self.labels = LabelRepo(self.r, self.keys)
        self.models = ModelRepo(self.r, self.keys)
        self.api_keys = ApiKeyRepo(self.r, self.keys)
        self.audit = AuditRepo(self.r, self.keys)
        self.idempotency = IdempotencyRepo(self.r, self.keys)

    @classmethod
    def from_url(cls, url: str, prefix: str = "vigil:", **client_kwargs: object) -> Store:
        """Open a client on ``url`` (no I/O until the first command)."""
        client = redis.Redis.from_url(url, decode_responses=True, **client_kwargs)
        return cls(client, Keys(prefix))

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    def add_frames_analysed(self, count: int) -> None:
        """Add to the shared counter of analysed frames (called by workers)."""
        self.r.incrby(self.keys.metrics_counter("frames_analysed"), count)

    def frames_analysed(self) -> int:
        """Frames analysed by all workers since the counter was created."""
        return int(self.r.get(self.keys.metrics_counter("frames_analysed")) or 0)

    def close(self) -> None:
        """Close the client's connections."""
        self.r.close()


__all__ = [
    "EventQuery",
    "InvalidCursor",
    "Store",
    "WriteResult",
    "hash_key",
    "new_id",
]
