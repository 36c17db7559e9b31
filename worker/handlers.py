"""What the worker does for each job kind, given a claimed job (Redis access via the store).

Every handler writes its results idempotently: frames overwrite the segment's frames, events
are upserted by deterministic id (``worker.timeline``), overlay files have deterministic names
and are replaced atomically. A job run twice (after a crash) therefore leaves one set of results.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from model.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from service.jobs import (
    AnalyzeSegmentPayload,
    AnalyzeSegmentResult,
    RenderOverlayPayload,
    RenderOverlayResult,
)
from service.schemas import (
    ErrorInfo,
    Event,
    FrameScores,
    Segment,
    SegmentStatus,
    from_epoch,
    utcnow,
)
from service.store import Store
from worker.decode import DecodeError, VideoLimits
from worker.events import EventParams
from worker.pipeline import AnalyzeOptions, SegmentResult, analyze_file, overlay_name
from worker.timeline import SegmentSpan, TimelineParams, grow_cluster, keyframe_segment
from worker.timeline import stream_events as compute_stream_events

logger = logging.getLogger(__name__)

Progress = Callable[[float], None]
TIMELINE_LOCK_S = 300.0


class JobFailure(Exception):
    """A failure with a stable code; ``permanent`` ones are not retried."""

    def __init__(self, code: str, message: str, *, permanent: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class WorkerConfig:
    """What the handlers need from the settings (built from ``Settings`` at the entry point)."""

    data_dir: Path
    analysis_fps: float = 2.0
    device: str = "auto"
    fallback_model_path: Path | None = None
    max_duration_s: float | None = 900.0
    max_pixels: int | None = 3840 * 2160
    min_length_s: float = 1.0
    merge_gap_s: float = 1.0

    @classmethod
    def from_settings(cls, settings: object) -> WorkerConfig:
        """From ``service.config.Settings`` (typed loosely: entry points build it)."""
        from service.config import Settings

        assert isinstance(settings, Settings)
        return cls(
            data_dir=settings.data_dir,
            analysis_fps=settings.analysis_fps,
            device=settings.device,
            fallback_model_path=settings.model_path,
            max_duration_s=settings.max_segment_duration_s,
            max_pixels=settings.max_frame_pixels,
        )

    @property
    def limits(self) -> VideoLimits:
        return VideoLimits(max_duration_s=self.max_duration_s, max_pixels=self.max_pixels)

    def resolve(self, path: str | Path) -> Path:
        """A stored path (relative to DATA_DIR, or absolute) as a real path."""
        return self.data_dir / path


class ModelProvider:
    """The registry's active model, loaded once and swapped when the active version changes.

    Checked before each job, so a new activation takes effect at the next job and never in the
    middle of one.
    """

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._loaded: LoadedModel | None = None
        self._key: str | None = None

    @property
    def version(self) -> str | None:
        return None if self._loaded is None else self._loaded.meta.version

    def current(self, store: Store) -> LoadedModel:
        """The model to use for the next job."""
        active = store.models.active()
        if active is not None:
            key, path = active.version, self.config.resolve(active.path)
        elif self.config.fallback_model_path is not None:
            key, path = f"file:{self.config.fallback_model_path}", self.config.fallback_model_path
        else:
            raise JobFailure("no_model", "no active model in the registry", permanent=False)
        if key != self._key:
            self._loaded = self._load(path)
            self._key = key
            logger.info("model %s loaded", self._loaded.meta.version)
        assert self._loaded is not None
        return self._loaded

    def _load(self, path: Path) -> LoadedModel:
        from worker.infer import resolve_device

        try:
            return load_checkpoint(path, device=resolve_device(self.config.device))
        except (CheckpointError, OSError) as exc:
            raise JobFailure("model_unavailable", str(exc), permanent=False) from exc


# --- analyze_segment -------------------------------------------------------------------------


def analyze_segment(
    store: Store,
    config: WorkerConfig,
    loaded: LoadedModel,
    payload: AnalyzeSegmentPayload,
    progress: Progress,
) -> AnalyzeSegmentResult:
    """Analyse one segment; store its frames, the stream's events around it and overlays."""
    segment = store.segments.get(payload.segment_id)
    if segment is None:
        raise JobFailure("segment_not_found", "the segment record is gone", permanent=True)
    options = AnalyzeOptions(
        fps=config.analysis_fps,
        min_length_s=config.min_length_s,
        merge_gap_s=config.merge_gap_s,
        max_duration_s=config.max_duration_s,
        max_pixels=config.max_pixels,
        on_truncated="keep",
    )
    overlay_dir = config.data_dir / "overlays" / segment.segment_id
    result = analyze_file(
        config.resolve(payload.video_path),
        loaded,
        options=options,
        overlay_dir=overlay_dir,
        progress=lambda f: progress(0.9 * f),
    )
    frames = _frame_scores(segment, result)
    # One recomputation per stream at a time: the second of two concurrent segments then sees
    # the first one's frames (without the lock each could write events missing the other).
    lock = store.r.lock(
        store.keys.stream_timeline_lock(segment.stream_id),
        timeout=TIMELINE_LOCK_S,
        blocking_timeout=TIMELINE_LOCK_S,
    )
    with lock:
        store.segments.put_frames(frames)
        events = update_stream_events(store, config, loaded, segment, options.step_s)
    progress(0.97)
    done = segment.model_copy(
        update={
            "status": SegmentStatus.analysed,
            "analysed_at": utcnow(),
            "model_version": result.model_version,
            "frames_analysed": len(result.frames.t_s),
        }
    )
    if result.truncation is not None:
        # Keep what could be analysed (a fall in the first half still matters), then report
        # the segment as failed with where decoding stopped.
        store.segments.put(done.model_copy(update={"status": SegmentStatus.failed}))
        raise JobFailure("truncated", result.truncation.message, permanent=True)
    store.segments.put(done)
    return AnalyzeSegmentResult(
        segment_id=segment.segment_id,
        model_version=result.model_version,
        frames=len(result.frames.t_s),
        events=len(events),
        overlays=sum(1 for e in result.events if e.overlay),
    )


def _frame_scores(segment: Segment, result: SegmentResult) -> FrameScores:
    """Per-frame scores on the wall clock (segment start + seconds from the stream start)."""
    base = segment.start.timestamp()
    t_s = result.frames.t_s
    index_of = {t: i for i, t in enumerate(t_s)}
    consistency: list[float | None] = [None] * len(t_s)
    for event in result.events:
        if event.consistency is not None and event.keyframe_s in index_of:
            consistency[index_of[event.keyframe_s]] = event.consistency
    classes = result.classes
    return FrameScores(
        segment_id=segment.segment_id,
        stream_id=segment.stream_id,
        model_version=result.model_version,
        classes=classes,
        times=[base + t for t in t_s],
        scores=[[result.frames.scores[c][i] for c in classes] for i in range(len(t_s))],
        consistency=consistency,
    )


def update_stream_events(
    store: Store, config: WorkerConfig, loaded: LoadedModel, segment: Segment, step_s: float
) -> list[Event]:
    """Recompute the stream's events around ``segment`` and write them (superseding stale ones).

    Loads neighbouring segments in a window that widens until the cluster of segments joined
    with the new one (``worker.timeline.grow_cluster``) lies well inside it.
    """
    params = TimelineParams(
        events=EventParams(
            step_s=step_s, min_length_s=config.min_length_s, merge_gap_s=config.merge_gap_s
        ),
        thresholds=loaded.meta.event_thresholds(),
    )
    pad = max(600.0, 4 * params.reach_s)
    while True:
        lo, hi = segment.start - timedelta(seconds=pad), segment.end + timedelta(seconds=pad)
        spans = [
            SegmentSpan(s.segment_id, s.start.timestamp(), s.end.timestamp())
            for s in store.segments.in_range(segment.stream_id, lo, hi)
        ]
        parts = grow_cluster(segment.segment_id, spans, store.segments.get_frames, params)
        first = min(min(p.times) for p in parts)
        last = max(max(p.times) for p in parts)
        if first - params.reach_s > lo.timestamp() and last + params.reach_s < hi.timestamp():
            break
        pad *= 4  # the cluster reaches the edge of what was loaded: look further
    events, (w_lo, w_hi) = compute_stream_events(segment.stream_id, parts, params)
    events = [_with_overlay(store, config, loaded, e, parts) for e in events]
    store.events.write(segment.stream_id, events, window=(from_epoch(w_lo), from_epoch(w_hi)))
    return events


def _with_overlay(
    store: Store, config: WorkerConfig, loaded: LoadedModel, event: Event, parts: list[FrameScores]
) -> Event:
    """The event with its key frame's Grad-CAM overlay (rendered if the analysis did not)."""
    owner = keyframe_segment(event, parts)
    segment = store.segments.get(owner.segment_id)
    if segment is None:
        return event
    offset = event.keyframe_time.timestamp() - segment.start.timestamp()
    relpath = f"overlays/{segment.segment_id}/{overlay_name(event.label, offset)}"
    target = config.resolve(relpath)
    if not target.exists() and event.label in loaded.meta.classes:
        from worker.overlay import render_overlay

        try:
            jpeg = render_overlay(
                config.resolve(segment.path),
                max(0.0, offset),
                "gradcam",
                loaded,
                event.label,
                limits=config.limits,
            )
        except (DecodeError, ValueError) as exc:
            logger.warning("no overlay for event %s: %s", event.event_id, exc)
            return event
        write_atomic(target, jpeg)
    return event.model_copy(update={"keyframe_overlay": relpath})


# --- render_overlay --------------------------------------------------------------------------


def render_overlay_job(
    store: Store,
    config: WorkerConfig,
    loaded: LoadedModel,
    payload: RenderOverlayPayload,
    progress: Progress,
) -> RenderOverlayResult:
    """Render one attribution overlay of a stored segment."""
    from worker.overlay import render_overlay

    segment = store.segments.get(payload.segment_id)
    if segment is None:
        raise JobFailure("segment_not_found", "the segment record is gone", permanent=True)
    progress(0.1)
    try:
        jpeg = render_overlay(
            config.resolve(segment.path),
            payload.offset_s,
            payload.method,
            loaded,
            payload.label,
            limits=config.limits,
        )
    except ValueError as exc:  # unknown label, or a time past the end of the segment
        raise JobFailure("bad_overlay_request", str(exc), permanent=True) from exc
    relpath = payload.overlay_relpath()
    write_atomic(config.resolve(relpath), jpeg)
    return RenderOverlayResult(overlay_path=relpath, model_version=loaded.meta.version)


def mark_segment_failed(store: Store, segment_id: str, code: str, message: str) -> None:
    """Record on the segment why its analysis failed for good (the job holds it too)."""
    segment = store.segments.get(segment_id)
    if segment is not None:
        error = ErrorInfo(code=code, message=message)
        store.segments.put(
            segment.model_copy(update={"status": SegmentStatus.failed, "error": error})
        )


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
