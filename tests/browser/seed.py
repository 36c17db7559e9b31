"""Seeded data for the browser tests, written through ``service.store`` like the worker would.

Two streams: ``ward-3-bed-12`` with one 30 s segment (a real H.264 clip), four events in two
lanes, per-frame scores and real JPEG overlays for every method of one event; and
``icu-2-bed-4`` with a segment and no event yet (the live-update test writes one later).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import torch
from torchvision.io import encode_jpeg

from model.checkpoint import CheckpointMeta, LabelThresholds, save_checkpoint
from model.detector import build_detector
from service.jobs import RenderOverlayPayload
from service.schemas import (
    Event,
    FrameScores,
    ModelVersion,
    Role,
    Segment,
    SegmentStatus,
    Thresholds,
    to_epoch,
)
from service.store import Store
from tests.support.clips import square_event_frames, write_clip

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
STREAM = "ward-3-bed-12"
QUIET_STREAM = "icu-2-bed-4"
SEGMENT = "seg-ward-a"
QUIET_SEGMENT = "seg-icu-a"
DURATION_S = 30.0
WIDTH, HEIGHT = 320, 240
MODEL = "m-20260301-base"
CLASSES = ["fall", "bed_exit"]
# Per-label (on, off) event thresholds of the seeded models (checkpoint and registry agree).
THRESHOLDS = {"fall": (0.6, 0.48), "bed_exit": (0.55, 0.44)}

# (event_id, label, start_s, end_s, peak, consistency, open)
EVENTS = [
    ("evt-fall-1", "fall", 5.0, 9.0, 0.93, 0.82, False),
    ("evt-bed-1", "bed_exit", 2.0, 4.5, 0.71, 0.21, False),
    ("evt-fall-2", "fall", 18.0, 24.0, 0.88, 0.55, False),
    ("evt-bed-2", "bed_exit", 26.0, 30.0, 0.66, None, True),
]
# Each method's overlay gets its own dominant colour so that a test can tell them apart.
METHOD_CHANNEL = {"gradcam": 0, "guided_backprop": 1, "integrated_gradients": 2}


@dataclass
class Seeded:
    """What the tests need to know about the seeded data."""

    keys: dict[str, str] = field(default_factory=dict)  # role -> plaintext key
    events: dict[str, Event] = field(default_factory=dict)


def at(seconds: float) -> datetime:
    """Wall-clock time ``seconds`` after the seeded segment's start."""
    return T0 + timedelta(seconds=seconds)


def overlay_jpeg(channel: int, center: tuple[float, float]) -> bytes:
    """A real JPEG: the scene's grey background and a heat blob in one colour channel."""
    yy, xx = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    heat = torch.exp(-(((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / 1800.0))
    image = torch.full((3, HEIGHT, WIDTH), 40.0)
    image[channel] = 40.0 + 215.0 * heat
    # torchvision 0.29 deprecates its JPEG codec in favour of torchcodec, which Vigil does not
    # ship; the encoder still works, so only its warning is silenced here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bytes(encode_jpeg(image.round().to(torch.uint8), quality=90).numpy())


def _write(data_dir: Path, relpath: str, data: bytes) -> str:
    path = data_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return relpath


def _segment(
    data_dir: Path, stream_id: str, segment_id: str, start: datetime,
    intervals: list[tuple[float, float]],
) -> Segment:
    relpath = f"segments/{segment_id}.mp4"
    frames = square_event_frames(intervals, height=HEIGHT, width=WIDTH)
    clip = write_clip(data_dir / relpath, DURATION_S, fps=10, frame_fn=frames)
    return Segment(
        segment_id=segment_id, stream_id=stream_id, start=start, duration_s=DURATION_S,
        size_bytes=clip.stat().st_size, content_type="video/mp4", path=relpath,
        width=WIDTH, height=HEIGHT, codec="h264", status=SegmentStatus.analysed,
        analysed_at=start, model_version=MODEL, frames_analysed=60,
    )


def _frame_scores() -> FrameScores:
    """2 fps scores: each class high inside its events, low elsewhere."""
    times, rows = [], []
    for i in range(int(DURATION_S * 2)):
        t = i / 2
        row = []
        for cls in CLASSES:
            inside = any(lb == cls and s <= t <= e for _, lb, s, e, *_ in EVENTS)
            row.append(0.9 if inside else round(0.06 + 0.04 * math.sin(i), 3))
        times.append(to_epoch(at(t)))
        rows.append(row)
    return FrameScores(segment_id=SEGMENT, stream_id=STREAM, model_version=MODEL,
                       classes=CLASSES, times=times, scores=rows)


def _event(data_dir: Path, spec: tuple) -> Event:
    event_id, label, start_s, end_s, peak, consistency, is_open = spec
    key_s = (start_s + end_s) / 2
    center = (HEIGHT / 2, WIDTH / 3 + HEIGHT / 4)
    relpath = _write(data_dir, f"overlays/{SEGMENT}/key-{event_id}.jpg", overlay_jpeg(0, center))
    return Event(
        event_id=event_id, stream_id=STREAM, label=label, start=at(start_s), end=at(end_s),
        peak_score=peak, mean_score=round(peak - 0.1, 2), consistency=consistency,
        model_version=MODEL, open=is_open, keyframe_time=at(key_s), keyframe_overlay=relpath,
        segment_ids=[SEGMENT],
    )


def _method_overlays(data_dir: Path, event: Event) -> None:
    """Stored renders of the other methods at the key frame, where the API looks for them."""
    offset = to_epoch(event.keyframe_time) - to_epoch(at(0))
    for method, channel in METHOD_CHANNEL.items():
        if method == "gradcam":
            continue
        payload = RenderOverlayPayload(
            stream_id=STREAM, segment_id=SEGMENT, event_id=event.event_id, label=event.label,
            offset_s=offset, method=method,
        )
        _write(data_dir, payload.overlay_relpath(), overlay_jpeg(channel, (HEIGHT / 2, WIDTH / 2)))


def _checkpoint(data_dir: Path, version: str) -> str:
    """A real (untrained, seeded) detector checkpoint: activation checks that the file exists.

    No worker runs in these tests, so the registry's metrics are display values only.
    """
    torch.manual_seed(0)
    model = build_detector("resnet18", len(CLASSES))
    relpath = f"models/{version}.safetensors"
    thresholds = {c: LabelThresholds(on=on, off=off) for c, (on, off) in THRESHOLDS.items()}
    meta = CheckpointMeta(version=version, arch="resnet18", classes=CLASSES, input_size=64,
                          thresholds=thresholds)
    save_checkpoint(data_dir / relpath, model, meta)
    return relpath


def seed(store: Store, data_dir: Path) -> Seeded:
    """Write streams, segments, events, scores, overlays, models and one key per role."""
    seeded = Seeded()
    intervals = [(s, e) for _, lb, s, e, *_ in EVENTS if lb == "fall"]
    store.segments.put(_segment(data_dir, STREAM, SEGMENT, T0, intervals))
    store.segments.put_frames(_frame_scores())
    events = [_event(data_dir, spec) for spec in EVENTS]
    store.events.write(STREAM, events, window=(at(0), at(DURATION_S)))
    for event in events:
        _method_overlays(data_dir, event)
        seeded.events[event.event_id] = event
    store.segments.put(_segment(data_dir, QUIET_STREAM, QUIET_SEGMENT, T0 - timedelta(hours=2), []))
    registry = ((MODEL, 0.81, T0 - timedelta(days=2)), ("m-20260302-retrained", 0.86, T0))
    for version, f1, created in registry:
        store.models.register(ModelVersion(
            version=version, path=_checkpoint(data_dir, version), arch="resnet18", classes=CLASSES,
            metrics={"macro_f1": f1, "mean_ap": f1 + 0.03}, created_at=created,
            parent=None if version == MODEL else MODEL,
            thresholds={c: Thresholds(on=on, off=off) for c, (on, off) in THRESHOLDS.items()},
        ))
    store.models.activate(MODEL)
    for role in Role:
        _, plaintext = store.api_keys.create(f"{role.value} tester", role)
        seeded.keys[role.value] = plaintext
    return seeded


def quiet_event(event_id: str, start_s: float, end_s: float) -> Event:
    """An event for the quiet stream, written by the live-update test after the page loaded."""
    base = T0 - timedelta(hours=2)
    return Event(
        event_id=event_id, stream_id=QUIET_STREAM, label="fall",
        start=base + timedelta(seconds=start_s), end=base + timedelta(seconds=end_s),
        peak_score=0.8, mean_score=0.7, consistency=0.7, model_version=MODEL, open=True,
        keyframe_time=base + timedelta(seconds=start_s), segment_ids=[QUIET_SEGMENT],
    )
