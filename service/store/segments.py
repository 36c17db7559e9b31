"""Segments, their per-frame scores and the index of streams."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import redis

from service.schemas import (
    ErrorInfo,
    FramePoint,
    FrameScores,
    Segment,
    SegmentStatus,
    StreamSummary,
    from_epoch,
    to_epoch,
)
from service.store._base import Cursor, InvalidCursor, Repo


@dataclass
class SegmentRepo(Repo):
    """``segment:{id}`` JSON, ``segment:{id}:frames`` JSON, per-stream index by start time."""

    def put(self, segment: Segment) -> None:
        """Create or replace a segment record and index it under its stream."""
        sid = segment.stream_id
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.segment(segment.segment_id), segment.model_dump_json())
            pipe.zadd(self.keys.stream_segments(sid), {segment.segment_id: to_epoch(segment.start)})
            pipe.zadd(self.keys.streams(), {sid: 0})
            pipe.zadd(self.keys.streams_last_end(), {sid: to_epoch(segment.end)}, gt=True)
            pipe.execute()

    def delete(self, segment: Segment) -> None:
        """Remove a segment that never entered analysis (e.g. its job could not be queued)."""
        sid = segment.stream_id
        with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(
                self.keys.segment(segment.segment_id), self.keys.segment_frames(segment.segment_id)
            )
            pipe.zrem(self.keys.stream_segments(sid), segment.segment_id)
            pipe.execute()
        if self.r.zcard(self.keys.stream_segments(sid)) == 0:
            self.r.zrem(self.keys.streams(), sid)
            self.r.zrem(self.keys.streams_last_end(), sid)

    def mark_failed(self, segment_id: str, code: str, message: str) -> bool:
        """Settle a segment whose analysis job failed for good: ``queued`` -> ``failed`` with
        ``{code, message}`` (one WATCH/MULTI step). A segment that is not queued any more
        (analysed, or already failed) is left alone. Returns whether it changed."""
        key = self.keys.segment(segment_id)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    segment = Segment.model_validate_json(raw) if raw else None
                    if segment is None or segment.status is not SegmentStatus.queued:
                        pipe.unwatch()
                        return False
                    error = ErrorInfo(code=code, message=message)
                    failed = segment.model_copy(
                        update={"status": SegmentStatus.failed, "error": error}
                    )
                    pipe.multi()
                    pipe.set(key, failed.model_dump_json())
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def get(self, segment_id: str) -> Segment | None:
        """The segment or None."""
        raw = self.r.get(self.keys.segment(segment_id))
        return Segment.model_validate_json(raw) if raw else None

    def in_range(self, stream_id: str, start: datetime, end: datetime) -> list[Segment]:
        """Segments of the stream overlapping ``[start, end]``, by start time."""
        ids = self.r.zrangebyscore(
            self.keys.stream_segments(stream_id), "-inf", repr(to_epoch(end))
        )
        if not ids:
            return []
        raws = self.r.mget([self.keys.segment(i) for i in ids])
        segments = [Segment.model_validate_json(raw) for raw in raws if raw]
        return [s for s in segments if s.end >= start]

    def at(self, stream_id: str, time: datetime) -> Segment | None:
        """The latest-starting segment of the stream that contains ``time``."""
        found = [s for s in self.in_range(stream_id, time, time) if s.start <= time <= s.end]
        return found[-1] if found else None

    def put_frames(self, frames: FrameScores) -> None:
        """Store (replace) a segment's per-frame scores."""
        self.r.set(self.keys.segment_frames(frames.segment_id), frames.model_dump_json())

    def get_frames(self, segment_id: str) -> FrameScores | None:
        """A segment's per-frame scores or None if not analysed yet."""
        raw = self.r.get(self.keys.segment_frames(segment_id))
        return FrameScores.model_validate_json(raw) if raw else None

    def frames_between(
        self, stream_id: str, start: datetime, end: datetime, segment_ids: list[str] | None = None
    ) -> list[FramePoint]:
        """Per-frame scores of the stream in ``[start, end]``, by time.

        Reads ``segment_ids`` when given (an event knows its segments), else every segment of
        the stream overlapping the interval. Where segments overlap, each frame appears once
        per segment that analysed it.
        """
        ids = segment_ids or [s.segment_id for s in self.in_range(stream_id, start, end)]
        lo, hi = to_epoch(start), to_epoch(end)
        points: list[FramePoint] = []
        for segment_id in ids:
            frames = self.get_frames(segment_id)
            if frames is None:
                continue
            consistency = frames.consistency or [None] * len(frames.times)
            for t, row, c in zip(frames.times, frames.scores, consistency, strict=True):
                if lo <= t <= hi:
                    scores = dict(zip(frames.classes, row, strict=True))
                    points.append(FramePoint(time=from_epoch(t), scores=scores, consistency=c))
        points.sort(key=lambda p: p.time)
        return points


@dataclass
class StreamRepo(Repo):
    """The index of streams, ordered by stream id."""

    def list(self, limit: int, cursor: str | None) -> tuple[list[StreamSummary], str | None]:
        """A page of streams with their last segment end and live event counts (one round trip
        for the whole page)."""
        low = "-"
        if cursor:
            low = "(" + Cursor.decode(cursor, "streams").member
        ids = self.r.zrangebylex(self.keys.streams(), low, "+", start=0, num=limit + 1)
        more = len(ids) > limit
        ids = ids[:limit]
        with self.r.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.zscore(self.keys.streams_last_end(), sid)
                pipe.zcard(self.keys.stream_segments(sid))
                pipe.hgetall(self.keys.stream_event_counts(sid))
            replies = pipe.execute()
        summaries = []
        for i, sid in enumerate(ids):
            last, segments, raw_counts = replies[3 * i : 3 * i + 3]
            counts = {label: int(n) for label, n in sorted(raw_counts.items()) if int(n) > 0}
            summaries.append(
                StreamSummary(
                    stream_id=sid,
                    last_segment_end=from_epoch(last or 0.0),
                    segment_count=segments,
                    event_count=sum(counts.values()),
                    event_counts=counts,
                )
            )
        next_cursor = Cursor("streams", 0.0, ids[-1]).encode() if more else None
        return summaries, next_cursor

    def exists(self, stream_id: str) -> bool:
        """Whether any segment was ever posted to the stream."""
        return self.r.zscore(self.keys.streams(), stream_id) is not None


__all__ = ["InvalidCursor", "SegmentRepo", "StreamRepo"]
