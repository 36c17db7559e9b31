"""A stream's events, recomputed across segment boundaries (pure: no I/O, no torch).

A stream is continuous: an event open at the end of one segment continues into the next, and
segments may arrive in any order. When a segment is analysed, the worker stores its per-frame
scores (wall-clock epoch seconds) and calls :func:`stream_events`, which

1. grows a *cluster* of stored segments around the new one: a neighbouring segment that touches
   the cluster (no hole longer than the event detector bridges) joins it when the boundary zone
   on *either* side is active (some label scores ``>= off`` within ``merge_gap_s + step_s`` of the
   edge), since only then can an event run, or merge, across that boundary;
2. runs :func:`worker.events.detect_events` over the merged frames of the cluster;
3. turns the result into :class:`service.schemas.Event` records with deterministic ids.

Why the result does not depend on arrival order: a quiet boundary zone resets hysteresis and
blocks merging, so the events between two quiet boundaries are those of the whole stream there;
every active boundary is crossed by whichever of its two segments arrives last, so the last
arrival of a chain of active boundaries recomputes the whole chain. Writing the events with
``window=`` the cluster's span supersedes whatever earlier, partial computations produced.

Event ids hash ``(stream, label, start)``: an event that grows at its end keeps its id; one whose
start moves (an earlier segment arrived late) gets a new id and the old one is superseded.
``open`` means the event runs to the last frame of its contiguous recording.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from service.schemas import Event, FrameScores, from_epoch
from worker.events import EventParams, Thresholds, detect_events


@dataclass(frozen=True)
class SegmentSpan:
    """Where a stored segment lies on the stream's clock (epoch seconds)."""

    segment_id: str
    start: float
    end: float


@dataclass(frozen=True)
class TimelineParams:
    """Event detection parameters and per-label thresholds of the active model."""

    events: EventParams
    thresholds: Mapping[str, Thresholds]

    @property
    def merge_gap_s(self) -> float:
        """The largest merge gap of any label (per-label overrides included)."""
        own = [getattr(t, "merge_gap_s", None) for t in self.thresholds.values()]
        return max([self.events.merge_gap_s, *(g for g in own if g is not None)])

    @property
    def reach_s(self) -> float:
        """Largest distance between frames across which an event can continue or merge."""
        return max(self.events.hole_s, self.merge_gap_s) + self.events.step_s

    @property
    def edge_s(self) -> float:
        """Width of the boundary zone whose activity decides whether a neighbour joins."""
        return self.merge_gap_s + self.events.step_s


@dataclass
class MergedFrames:
    """Frames of a cluster on one clock: ``scores[label][i]`` is the score at ``times[i]``."""

    times: list[float]
    scores: dict[str, list[float]]
    segment_of: list[str]
    consistency: list[float | None]
    model_of: dict[str, str] = field(default_factory=dict)


FramesLookup = Callable[[str], FrameScores | None]
"""Segment id -> its stored per-frame scores (None when not analysed yet)."""


def merge_frames(parts: Sequence[FrameScores], min_spacing_s: float) -> MergedFrames:
    """Merge segments' frames in time order; classes are the sorted union (missing = 0).

    Frames closer than ``min_spacing_s`` to the previous kept one (overlapping segments) are
    dropped; ties are broken by segment id so the result is independent of input order.
    """
    classes = sorted({c for part in parts for c in part.classes})
    rows: list[tuple[float, str, list[float], float | None]] = []
    for part in parts:
        index = {c: i for i, c in enumerate(part.classes)}
        consistency = part.consistency or [None] * len(part.times)
        for t, row, cons in zip(part.times, part.scores, consistency, strict=True):
            values = [row[index[c]] if c in index else 0.0 for c in classes]
            rows.append((t, part.segment_id, values, cons))
    rows.sort(key=lambda r: (r[0], r[1]))
    merged = MergedFrames([], {c: [] for c in classes}, [], [])
    merged.model_of = {part.segment_id: part.model_version for part in parts}
    for t, segment_id, values, cons in rows:
        if merged.times and t - merged.times[-1] < min_spacing_s:
            continue
        merged.times.append(t)
        merged.segment_of.append(segment_id)
        merged.consistency.append(cons)
        for c, v in zip(classes, values, strict=True):
            merged.scores[c].append(v)
    return merged


def _edge_active(part: FrameScores, side: str, params: TimelineParams) -> bool:
    """Whether any thresholded label is ``>= off`` within the boundary zone of ``side``."""
    if not part.times:
        return False
    limit = min(part.times) + params.edge_s if side == "left" else max(part.times) - params.edge_s
    for t, row in zip(part.times, part.scores, strict=True):
        in_zone = t <= limit if side == "left" else t >= limit
        if in_zone and any(
            c in params.thresholds and v >= params.thresholds[c].off
            for c, v in zip(part.classes, row, strict=True)
        ):
            return True
    return False


def grow_cluster(
    seed: str, spans: Sequence[SegmentSpan], frames_of: FramesLookup, params: TimelineParams
) -> list[FrameScores]:
    """The stored segments whose frames must be analysed together with ``seed``'s.

    ``spans`` are candidate segments of the stream (any order; those without frames are
    ignored). Returns frame sets sorted by (first time, segment id); ``seed`` is always in.
    """
    loaded = {s.segment_id: frames_of(s.segment_id) for s in spans}
    parts = {sid: f for sid, f in loaded.items() if f is not None and f.times}
    if seed not in parts:
        seed_frames = frames_of(seed)
        if seed_frames is None:
            raise ValueError(f"segment {seed} has no stored frames")
        parts[seed] = seed_frames
    cluster = {seed}
    while True:
        lo = min(min(parts[s].times) for s in cluster)
        hi = max(max(parts[s].times) for s in cluster)
        joined = [
            sid
            for sid, part in parts.items()
            if sid not in cluster and _joins(part, lo, hi, cluster, parts, params)
        ]
        if not joined:
            break
        cluster.update(joined)
    chosen = [parts[s] for s in cluster]
    return sorted(chosen, key=lambda p: (min(p.times) if p.times else 0.0, p.segment_id))


def _joins(
    part: FrameScores,
    lo: float,
    hi: float,
    cluster: set[str],
    parts: Mapping[str, FrameScores],
    params: TimelineParams,
) -> bool:
    first, last = min(part.times), max(part.times)
    if first >= lo and last <= hi:
        return True  # overlaps the cluster's inside: its frames are part of the same stretch
    if last < lo:  # on the left
        if lo - last > params.reach_s:
            return False
        edge = _cluster_edge(cluster, parts, lo, "left")
        return _edge_active(part, "right", params) or _edge_active(edge, "left", params)
    if first > hi:  # on the right
        if first - hi > params.reach_s:
            return False
        edge = _cluster_edge(cluster, parts, hi, "right")
        return _edge_active(part, "left", params) or _edge_active(edge, "right", params)
    return True  # straddles an edge: overlapping frames


def _cluster_edge(
    cluster: set[str], parts: Mapping[str, FrameScores], at: float, side: str
) -> FrameScores:
    """The cluster segment holding the frame at its ``side`` edge ``at``."""
    for sid in sorted(cluster):
        times = parts[sid].times
        if (min(times) if side == "left" else max(times)) == at:
            return parts[sid]
    raise AssertionError("edge frame not found in the cluster")


def event_id(stream_id: str, label: str, start: float) -> str:
    """Deterministic id of the event of ``label`` starting at epoch ``start`` (ms resolution)."""
    digest = hashlib.sha256(f"{stream_id}|{label}|{round(start * 1000)}".encode()).hexdigest()
    return f"ev-{digest[:20]}"


def stream_events(
    stream_id: str, parts: Sequence[FrameScores], params: TimelineParams
) -> tuple[list[Event], tuple[float, float]]:
    """Events over the merged frames of ``parts`` and the window ``(first, end)`` they cover.

    The window (epoch seconds, end = last frame + step) is what the caller passes to
    ``store.events.write(..., window=...)`` so that stale events there are superseded.
    Overlays are left empty; the caller fills ``keyframe_overlay``.
    """
    merged = merge_frames(parts, min_spacing_s=params.events.step_s / 2)
    if not merged.times:
        return [], (0.0, 0.0)
    ev = params.events
    detected = detect_events(
        merged.times,
        merged.scores,
        params.thresholds,
        step_s=ev.step_s,
        min_length_s=ev.min_length_s,
        merge_gap_s=ev.merge_gap_s,
        break_gap_s=ev.break_gap_s,
    )
    last = merged.times[-1]
    index_of = {t: i for i, t in enumerate(merged.times)}
    events: list[Event] = []
    for found in detected:
        key_index = index_of[found.keyframe_s]
        key_segment = merged.segment_of[key_index]
        covered = sorted(
            {
                merged.segment_of[i]
                for i, t in enumerate(merged.times)
                if found.start_s <= t < found.end_s
            }
        )
        events.append(
            Event(
                event_id=event_id(stream_id, found.label, found.start_s),
                stream_id=stream_id,
                label=found.label,
                start=from_epoch(found.start_s),
                end=from_epoch(found.end_s),
                peak_score=_unit(found.peak_score),
                mean_score=_unit(found.mean_score),
                consistency=merged.consistency[key_index],
                model_version=merged.model_of[key_segment],
                open=found.end_s > last,  # its last frame is the final frame
                keyframe_time=from_epoch(found.keyframe_s),
                segment_ids=covered,
            )
        )
    return events, (merged.times[0], last + ev.step_s)


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))


def keyframe_segment(event: Event, parts: Sequence[FrameScores]) -> FrameScores:
    """The segment whose frame is the event's key frame (for rendering its overlay)."""
    key = event.keyframe_time.timestamp()
    best = min(
        (p for p in parts if p.times),
        key=lambda p: (min(abs(t - key) for t in p.times), p.segment_id),
    )
    return best


__all__ = [
    "FramesLookup",
    "MergedFrames",
    "SegmentSpan",
    "TimelineParams",
    "event_id",
    "grow_cluster",
    "keyframe_segment",
    "merge_frames",
    "stream_events",
]
