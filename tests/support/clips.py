"""Tiny generated H.264 clips for tests (PyAV encode; no files from outside the test)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FrameFn = Callable[[float], np.ndarray]
"""Maps a time in seconds to an ``(H, W, 3) uint8`` RGB frame."""


def solid_frames(
    height: int = 96, width: int = 128, color: tuple[int, int, int] = (40, 40, 40)
) -> FrameFn:
    """A frame function that always returns one solid colour."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = color
    return lambda _t: frame


def square_event_frames(
    intervals: list[tuple[float, float]],
    height: int = 96,
    width: int = 128,
    background: tuple[int, int, int] = (40, 40, 40),
    square: tuple[int, int, int] = (230, 30, 30),
) -> FrameFn:
    """Background frames with a bright square drawn during each ``(start_s, end_s)`` interval."""
    base = np.empty((height, width, 3), dtype=np.uint8)
    base[:] = background
    marked = base.copy()
    marked[height // 4 : height // 4 + height // 2, width // 3 : width // 3 + height // 2] = square

    def frame_at(t: float) -> np.ndarray:
        return marked if any(s <= t < e for s, e in intervals) else base

    return frame_at


def write_clip(
    path: Path,
    duration_s: float,
    fps: int = 10,
    frame_fn: FrameFn | None = None,
    *,
    start_pts_s: float = 0.0,
) -> Path:
    """Encode ``duration_s`` seconds of ``frame_fn`` as H.264 (yuv420p) in MP4 at ``fps``.

    ``start_pts_s`` shifts the first presentation timestamp (streams that do not start at 0).
    """
    frame_fn = frame_fn or solid_frames()
    first = frame_fn(0.0)
    height, width = first.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        stream.codec_context.time_base = Fraction(1, fps)
        offset = round(start_pts_s * fps)
        for index in range(round(duration_s * fps)):
            frame = av.VideoFrame.from_ndarray(frame_fn(index / fps), format="rgb24")
            frame.pts = offset + index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
