"""One video file -> per-frame scores, events, consistency scores and overlays (no Redis).

Decoding runs in a thread that feeds a bounded queue while the calling thread runs inference, so
neither waits on the other (PyAV and torch both release the GIL in their heavy loops). Key frames
are kept in memory only when they can be an event's peak (the best frame of each run of scores
at or above a label's ``off`` threshold); anything else is re-read from the file by seeking.

Used by ``vigil analyze`` (with :mod:`worker.report`) and by the queue consumer.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field

from model.checkpoint import LabelThresholds, LoadedModel
from worker.decode import (
    DecodeError,
    DecodeOptions,
    ProbeResult,
    SampledFrame,
    ThreadType,
    VideoDecoder,
    VideoLimits,
    read_frame_at,
)
from worker.events import Event, detect_events
from worker.feeding import FrameFeeder, PeakFrames
from worker.infer import Detector, cam_to_heat
from worker.overlay import overlay_jpeg

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float], None]
"""Called with the fraction done, in ``[0, 1]``."""


class AnalyzeOptions(BaseModel):
    """How :func:`analyze_file` samples, segments and explains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fps: float = Field(default=2.0, gt=0, le=60, description="analysis rate (frames per second)")
    max_side: int = Field(default=640, ge=32, description="longer side of analysed frames/overlays")
    batch_size: int = Field(default=8, ge=1)
    min_length_s: float = Field(default=1.0, ge=0)
    merge_gap_s: float = Field(default=1.0, ge=0)
    overlays: bool = True
    consistency: bool = True
    jpeg_quality: int = Field(default=85, ge=1, le=100)
    thread_type: ThreadType = "SLICE"
    max_duration_s: float | None = Field(default=900.0, gt=0)
    max_pixels: int | None = Field(default=3840 * 2160, gt=0)
    on_truncated: Literal["keep", "fail"] = Field(
        default="keep",
        description="'keep': return what was decoded, with `truncation` set; 'fail': raise it",
    )
    queue_frames: int = Field(default=16, ge=1, description="decoded frames buffered ahead")

    @property
    def step_s(self) -> float:
        """Analysis step: ``1 / fps``."""
        return 1.0 / self.fps

    def decode_options(self) -> DecodeOptions:
        """The decoder settings these options imply."""
        return DecodeOptions(
            fps=self.fps,
            max_side=self.max_side,
            thread_type=self.thread_type,
            limits=VideoLimits(max_duration_s=self.max_duration_s, max_pixels=self.max_pixels),
        )


class FrameScores(BaseModel):
    """Scores of every sampled frame: ``scores[label][i]`` belongs to ``t_s[i]``."""

    t_s: list[float]
    scores: dict[str, list[float]]


class SegmentEvent(BaseModel):
    """One event of one file; times are seconds from the stream start."""

    label: str
    start_s: float
    end_s: float
    peak_score: float
    mean_score: float
    consistency: float | None = Field(description="ATCON agreement at the key frame, in [-1, 1]")
    keyframe_s: float
    overlay: str | None = Field(description="overlay file name inside the overlay directory")


class Truncation(BaseModel):
    """Where decoding of a cut-short file stopped."""

    code: Literal["truncated"] = "truncated"
    message: str
    stopped_at_s: float | None


class Timings(BaseModel):
    """Wall-clock seconds spent by stage (``waiting_s``: inference idle, waiting for frames)."""

    total_s: float = 0.0
    inference_s: float = 0.0
    waiting_s: float = 0.0
    events_s: float = 0.0


class SegmentResult(BaseModel):
    """Everything :func:`analyze_file` found in one file."""

    video: str
    model_version: str
    classes: list[str]
    thresholds: dict[str, LabelThresholds] = Field(description="the model's hysteresis thresholds")
    fps_analysed: float
    duration_s: float
    stream_start_s: float = Field(
        description="PTS of the stream start; all times are relative to it"
    )
    width: int
    height: int
    frames: FrameScores
    events: list[SegmentEvent]
    truncation: Truncation | None = None
    timings: Timings = Field(default_factory=Timings)


class FrameSource(Protocol):
    """Where sampled frames come from: a :class:`worker.decode.VideoDecoder`, or anything that
    iterates :class:`SampledFrame` in time order and describes its stream (e.g. pre-decoded
    frames in a benchmark)."""

    info: ProbeResult
    truncation: DecodeError | None

    def __iter__(self) -> Iterator[SampledFrame]: ...


def analyze_file(
    path: str | Path,
    loaded: LoadedModel,
    *,
    options: AnalyzeOptions | None = None,
    overlay_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> SegmentResult:
    """Decode ``path``, score every sampled frame, find events, explain each one.

    Args:
        path: the video file.
        loaded: the detector (eval mode, on the device to use).
        options: sampling, segmentation and limits.
        overlay_dir: where one JPEG per event key frame is written (``None``: no overlays).
        progress: called with the fraction done.

    Raises:
        DecodeError: the file cannot be analysed (and ``truncated`` when
            ``options.on_truncated == "fail"`` and the file breaks off).
    """
    options = options or AnalyzeOptions()
    with VideoDecoder(path, options.decode_options()) as video:
        return analyze_source(
            video, path, loaded, options=options, overlay_dir=overlay_dir, progress=progress
        )


def analyze_source(
    source: FrameSource,
    path: str | Path,
    loaded: LoadedModel,
    *,
    options: AnalyzeOptions,
    overlay_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> SegmentResult:
    """:func:`analyze_file` over an open frame source; ``path`` names the video (and is re-read
    by seeking for a key frame that was not kept in memory)."""
    started = time.perf_counter()
    detector = Detector(loaded)
    scored = _score_stream(source, detector, options, progress)
    truncation = source.truncation
    if truncation is not None and options.on_truncated == "fail":
        raise truncation
    event_start = time.perf_counter()
    found = detect_events(
        scored.t_s,
        {label: scored.scores[:, i].tolist() for i, label in enumerate(detector.classes)},
        loaded.meta.event_thresholds(),
        step_s=options.step_s,
        min_length_s=options.min_length_s,
        merge_gap_s=options.merge_gap_s,
    )
    duration = _duration(source.info.duration_s, scored.t_s, options.step_s, truncation is not None)
    # The last frame stands for one step; the video may end sooner.
    found = [replace(e, end_s=min(e.end_s, max(duration, e.keyframe_s))) for e in found]
    events = _explain(path, found, scored, detector, options, overlay_dir)
    scored.timings.events_s = time.perf_counter() - event_start
    scored.timings.total_s = time.perf_counter() - started
    if progress is not None:
        progress(1.0)
    info = source.info
    return SegmentResult(
        video=str(path),
        model_version=loaded.meta.version,
        classes=detector.classes,
        thresholds={c: loaded.meta.thresholds_for(c) for c in detector.classes},
        fps_analysed=options.fps,
        duration_s=duration,
        stream_start_s=info.start_s,
        width=info.width,
        height=info.height,
        frames=FrameScores(
            t_s=scored.t_s,
            scores={
                c: [round(v, 5) for v in scored.scores[:, i].tolist()]
                for i, c in enumerate(detector.classes)
            },
        ),
        events=events,
        truncation=None
        if truncation is None
        else Truncation(message=truncation.message, stopped_at_s=truncation.stopped_at_s),
        timings=scored.timings,
    )


@dataclass
class _Scored:
    """Accumulated per-frame outputs (``scores (N,C)``, ``cams (N,C,h,w)``) and kept frames."""

    t_s: list[float]
    scores: torch.Tensor
    cams: torch.Tensor
    kept: dict[int, torch.Tensor]
    timings: Timings = field(default_factory=Timings)


def _score_stream(
    video: FrameSource, detector: Detector, options: AnalyzeOptions, progress: ProgressFn | None
) -> _Scored:
    """Run inference over the decoder's frames, batch by batch, while a thread decodes ahead."""
    off = [detector.meta.thresholds_for(c).off for c in detector.classes]
    on = [detector.meta.thresholds_for(c).on for c in detector.classes]
    peaks = PeakFrames(off=off, on=on, hole_s=3.0 * options.step_s)
    times: list[float] = []
    scores: list[torch.Tensor] = []
    cams: list[torch.Tensor] = []
    timings = Timings()
    duration = video.info.duration_s
    with FrameFeeder(video, options.queue_frames) as feeder:
        for batch in feeder.batches(options.batch_size):
            tick = time.perf_counter()
            out = detector.score([s.frame for s in batch])
            timings.inference_s += time.perf_counter() - tick
            for sample, row in zip(batch, out.scores, strict=True):
                peaks.add(sample, row.tolist())
            times.extend(s.t_s for s in batch)
            scores.append(out.scores)
            cams.append(out.cams)
            if progress is not None and duration:
                progress(min(0.95, 0.95 * times[-1] / duration))
    timings.waiting_s = feeder.waiting_s
    if not times:
        raise DecodeError("undecodable", "no frame could be sampled from the video stream")
    return _Scored(
        t_s=times,
        scores=torch.cat(scores),
        cams=torch.cat(cams),
        kept=peaks.finish(),
        timings=timings,
    )


def _explain(
    path: str | Path,
    found: list[Event],
    scored: _Scored,
    detector: Detector,
    options: AnalyzeOptions,
    overlay_dir: str | Path | None,
) -> list[SegmentEvent]:
    """Consistency score and overlay for each event's key frame."""
    index_of = {t: i for i, t in enumerate(scored.t_s)}
    keys = [index_of[e.keyframe_s] for e in found]
    frames = [_key_frame(path, i, scored, options) for i in keys]
    classes = [detector.classes.index(e.label) for e in found]
    consistency: list[float | None] = [None] * len(found)
    if options.consistency and found:
        consistency = []
        for start in range(0, len(found), options.batch_size):
            chunk = slice(start, start + options.batch_size)
            consistency.extend(detector.consistency(frames[chunk], classes[chunk]).tolist())
    out_dir = Path(overlay_dir) if overlay_dir is not None and options.overlays else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    events = []
    for event, key, frame, c, agree in zip(found, keys, frames, classes, consistency, strict=True):
        name = None
        if out_dir is not None:
            heat = cam_to_heat(scored.cams[key, c], (int(frame.shape[-2]), int(frame.shape[-1])))
            name = overlay_name(event.label, event.keyframe_s)
            _write_atomic(out_dir / name, overlay_jpeg(frame, heat, quality=options.jpeg_quality))
        events.append(
            SegmentEvent(
                label=event.label,
                start_s=event.start_s,
                end_s=event.end_s,
                peak_score=round(event.peak_score, 5),
                mean_score=round(event.mean_score, 5),
                consistency=None if agree is None else round(agree, 5),
                keyframe_s=event.keyframe_s,
                overlay=name,
            )
        )
    return events


def _key_frame(
    path: str | Path, index: int, scored: _Scored, options: AnalyzeOptions
) -> torch.Tensor:
    frame = scored.kept.get(index)
    if frame is None:  # not kept (should be rare): seek and decode it again
        logger.debug("key frame %d not cached; re-reading it", index)
        frame = read_frame_at(path, scored.t_s[index], max_side=options.max_side).frame
    return frame


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file so that a crash never leaves a half-written overlay that a
    later run would take for a finished one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def overlay_name(label: str, time_s: float) -> str:
    """Deterministic overlay file name, e.g. ``falling-000012500ms.jpg``."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", label)
    return f"{safe}-{round(time_s * 1000):09d}ms.jpg"


def _duration(header_s: float | None, times: list[float], step_s: float, truncated: bool) -> float:
    decoded = times[-1] + step_s if times else 0.0
    if header_s is None or truncated:
        return round(decoded, 6)
    return round(header_s, 6)


__all__ = [
    "AnalyzeOptions",
    "FrameScores",
    "FrameSource",
    "ProgressFn",
    "SegmentEvent",
    "SegmentResult",
    "Timings",
    "Truncation",
    "analyze_file",
    "analyze_source",
    "overlay_name",
]
