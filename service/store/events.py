"""Events of a stream: idempotent writes with supersession, filtered keyset listing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import redis
from pydantic import BaseModel, ConfigDict, Field

from service.schemas import Event, to_epoch, utcnow
from service.store._base import Cursor, Repo, paginate, scan_zset

logger = logging.getLogger(__name__)

_MAX_WATCH_RETRIES = 50


class EventQuery(BaseModel):
    """Filters of a timeline listing. Window: events overlapping ``[start, end)``."""

    model_config = ConfigDict(extra="forbid")
    start: datetime | None = None
    end: datetime | None = None
    label: str | None = None
    min_score: float | None = None
    updated_since: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


@dataclass
class WriteResult:
    """Event ids by what a write did to them."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


@dataclass
class EventRepo(Repo):
    """Events: ``event:{id}`` JSON, a live index by start and an index by ``updated_at``."""

    def get(self, event_id: str) -> Event | None:
        """The event, superseded or not; None if unknown."""
        raw = self.r.get(self.keys.event(event_id))
        return Event.model_validate_json(raw) if raw else None

    def get_many(self, event_ids: list[str]) -> list[Event | None]:
        """Events in the order of ``event_ids`` (None where unknown)."""
        if not event_ids:
            return []
        raws = self.r.mget([self.keys.event(i) for i in event_ids])
        return [Event.model_validate_json(raw) if raw else None for raw in raws]

    def write(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        window: tuple[datetime, datetime] | None = None,
    ) -> WriteResult:
        """Upsert ``events`` of ``stream_id``; supersede live events overlapping ``window``
        that are not among them.

        Idempotent: writing the same events again changes nothing (``updated_at`` moves only
        when an event's content changes), so a retried job leaves one set of events.
        Runs as one WATCH/MULTI transaction per stream, retried on conflict.
        """
        if any(e.stream_id != stream_id for e in events):
            raise ValueError("every event must belong to the stream being written")
        for _ in range(_MAX_WATCH_RETRIES):
            try:
                return self._write_once(stream_id, events, window)
            except redis.WatchError:
                continue
        raise RuntimeError(f"event write for stream kept conflicting ({_MAX_WATCH_RETRIES} tries)")

    def _write_once(
        self, stream_id: str, events: Sequence[Event], window: tuple[datetime, datetime] | None
    ) -> WriteResult:
        k_live = self.keys.stream_events(stream_id)
        k_span = self.keys.stream_max_event_span(stream_id)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(k_live, k_span)
            span = float(pipe.get(k_span) or 0.0)
            stale_ids = self._live_ids_in_window(pipe, stream_id, window, span)
            new_ids = {e.event_id for e in events}
            ids = list(new_ids | set(stale_ids))
            old = dict(zip(ids, self._load_watched(pipe, ids), strict=True))
            result = WriteResult()
            now = utcnow()
            pipe.multi()
            for event in events:
                self._stage_upsert(pipe, event, old.get(event.event_id), now, result)
            for event_id in stale_ids:
                previous = old.get(event_id)
                if event_id in new_ids or previous is None or previous.superseded:
                    continue
                gone = previous.model_copy(update={"superseded": True, "updated_at": now})
                self._stage_put(pipe, gone, previous)
                result.superseded.append(event_id)
            longest = max((to_epoch(e.end) - to_epoch(e.start) for e in events), default=0.0)
            if longest > span:
                pipe.set(k_span, repr(longest))
            pipe.execute()
        return result

    def _live_ids_in_window(
        self,
        pipe: redis.client.Pipeline,
        stream_id: str,
        window: tuple[datetime, datetime] | None,
        span: float,
    ) -> list[str]:
        if window is None:
            return []
        lo, hi = to_epoch(window[0]), to_epoch(window[1])
        # Any live event overlapping the window starts at or after lo - span.
        members = pipe.zrangebyscore(self.keys.stream_events(stream_id), repr(lo - span), repr(hi))
        loaded = self._load_watched(pipe, members)
        return [e.event_id for e in loaded if e is not None and to_epoch(e.end) >= lo]

    def _load_watched(self, pipe: redis.client.Pipeline, ids: list[str]) -> list[Event | None]:
        if not ids:
            return []
        raws = pipe.mget([self.keys.event(i) for i in ids])
        return [Event.model_validate_json(raw) if raw else None for raw in raws]

    def _stage_upsert(
        self,
        pipe: redis.client.Pipeline,
        event: Event,
        previous: Event | None,
        now: datetime,
        result: WriteResult,
    ) -> None:
        if previous is not None and event.content_equals(previous):
            result.unchanged.append(event.event_id)
            return
        fresh = event.model_copy(update={"updated_at": now})
        self._stage_put(pipe, fresh, previous)
        (result.created if previous is None else result.updated).append(event.event_id)

    def _stage_put(self, pipe: redis.client.Pipeline, event: Event, previous: Event | None) -> None:
        """Queue the record, both indexes and the per-label live counts."""
        sid = event.stream_id
        pipe.set(self.keys.event(event.event_id), event.model_dump_json())
        pipe.zadd(
            self.keys.stream_events_updated(sid), {event.event_id: to_epoch(event.updated_at)}
        )
        counts = self.keys.stream_event_counts(sid)
        if previous is not None and not previous.superseded:
            pipe.hincrby(counts, previous.label, -1)
        if event.superseded:
            pipe.zrem(self.keys.stream_events(sid), event.event_id)
        else:
            pipe.zadd(self.keys.stream_events(sid), {event.event_id: to_epoch(event.start)})
            pipe.hincrby(counts, event.label, 1)

    def list(self, stream_id: str, query: EventQuery) -> tuple[list[Event], str | None]:
        """One page of the timeline and the cursor of the next page (None at the end).

        Without ``updated_since``: live events by start time. With it: every event (superseded
        ones included, so a poller learns what disappeared) updated strictly after it, by
        ``updated_at``. Raises ``InvalidCursor`` for a foreign cursor.
        """
        kind = "events-updated" if query.updated_since else "events-start"
        after = Cursor.decode(query.cursor, kind) if query.cursor else None
        if query.updated_since is not None:
            key = self.keys.stream_events_updated(stream_id)
            low, high = f"({to_epoch(query.updated_since)!r}", "+inf"
        else:
            key = self.keys.stream_events(stream_id)
            span = float(self.r.get(self.keys.stream_max_event_span(stream_id)) or 0.0)
            low = repr(to_epoch(query.start) - span) if query.start else "-inf"
            high = f"({to_epoch(query.end)!r}" if query.end else "+inf"
        members = scan_zset(self.r, key, low=low, high=high, after=after)
        return paginate(
            members, self.get_many, lambda e: _matches(e, query), limit=query.limit, kind=kind
        )

    def counts(self, stream_id: str) -> dict[str, int]:
        """Live events per label (labels with zero are left out)."""
        raw = self.r.hgetall(self.keys.stream_event_counts(stream_id))
        return {label: int(n) for label, n in sorted(raw.items()) if int(n) > 0}


def _matches(event: Event, query: EventQuery) -> bool:
    if query.start is not None and event.end <= query.start and event.start < query.start:
        return False
    if query.end is not None and event.start >= query.end:
        return False
    if query.label is not None and event.label != query.label:
        return False
    return query.min_score is None or event.peak_score >= query.min_score
