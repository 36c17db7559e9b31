"""Decode a video and sample it at an analysis rate by presentation timestamps.

Sampling rule (robust to variable frame rate and to streams that do not start at 0): with the
analysis rate ``fps``, the targets are the times ``k / fps`` (``k = 0, 1, ...``) measured from the
*stream start*; each target takes the first decoded frame whose timestamp is at or after it, and a
frame is taken at most once (after a long gap in a VFR stream the next frame satisfies every missed
target once). Times are exact fractions of the stream's time base, so no drift accumulates.
Reported times are the chosen frames' own timestamps, relative to the stream start.

Only the sampled frames are colour-converted and scaled, in one swscale pass with area averaging
(``to_ndarray(width=, height=, interpolation="AREA")``): per 1080p frame it cost 1.4 ms of CPU
against 2.9 ms for full-size ``rgb24`` plus an antialiased resize in torch and 1.9 ms for
swscale's default bilinear (``docs/pipeline.md``). Every frame is still *decoded* (H.264 needs
its references).

Failures are :class:`worker.probe.DecodeError`. A stream that breaks off part-way is not an
exception: iteration ends, and :attr:`VideoDecoder.truncation` says where it stopped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import av.error
import torch

from worker.probe import (
    DecodeError,
    DecodeErrorCode,
    ProbeResult,
    VideoLimits,
    open_container,
    probe,
    stream_info,
    video_stream,
)

logger = logging.getLogger(__name__)

ThreadType = Literal["SLICE", "FRAME", "AUTO", "NONE"]
"""FFmpeg decoder threading. ``SLICE`` (PyAV's default) was measured as fast as ``AUTO`` on the
2-core reference machine and leaves a core to inference (docs/pipeline.md)."""

_TOLERANCE = Fraction(1, 1_000_000)  # float seconds handed back in (e.g. a key frame's t_s)
_INDEXED_FORMATS = ("mp4", "mov")  # containers whose per-stream duration comes from an index


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode and sample.

    Attributes:
        fps: analysis rate (sampled frames per second of video).
        max_side: sampled frames are resized (aspect kept) so that their longer side is at most
            this; ``None`` keeps the decoded size.
        thread_type: FFmpeg threading mode; ``thread_count`` 0 lets FFmpeg choose.
        limits: resolution and duration limits.
        start_s: first target time (seconds from the stream start); seeks when > 0.
        end_s: stop before this time (``None``: to the end).
    """

    fps: float = 2.0
    max_side: int | None = 640
    thread_type: ThreadType = "SLICE"
    thread_count: int = 0
    limits: VideoLimits = field(default_factory=VideoLimits)
    start_s: float = 0.0
    end_s: float | None = None

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError("fps must be > 0")
        if self.max_side is not None and self.max_side < 8:
            raise ValueError("max_side must be >= 8")


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame: ``frame`` is ``(3,h,w) uint8`` RGB; ``t_s`` is seconds from the stream
    start; ``index`` counts sampled frames from 0."""

    index: int
    t_s: float
    frame: torch.Tensor


class VideoDecoder:
    """Open a video, check it against the limits and iterate over its sampled frames.

    Example::

        with VideoDecoder(path, DecodeOptions(fps=2)) as video:
            for sample in video:          # SampledFrame
                ...
            if video.truncation:          # DecodeError("truncated", ...) or None
                ...

    Raises:
        DecodeError: at construction (``empty_file``, ``undecodable``, ``truncated``,
            ``no_video_stream``, ``unsupported_codec``, ``too_large``, ``too_long``) or while
            iterating (``undecodable`` when no frame decodes, ``unsupported_codec``,
            ``too_large`` on a mid-stream size change, ``too_long`` when the header lied).
    """

    def __init__(self, path: str | Path, options: DecodeOptions | None = None) -> None:
        self.options = options or DecodeOptions()
        self._container = open_container(path)
        try:
            self._stream = video_stream(self._container)
            self.info: ProbeResult = stream_info(self._container, self._stream)
            self.options.limits.check_size(self.info.width, self.info.height)
            self.options.limits.check_duration(self.info.duration_s)
            self._stream.thread_type = self.options.thread_type
            self._stream.codec_context.thread_count = self.options.thread_count
        except BaseException:
            self._container.close()
            raise
        self.truncation: DecodeError | None = None
        self.frames_decoded = 0
        self.last_time_s: float | None = None
        # Only a stream read from its start can be timed by counting frames.
        self._untimed_next: Fraction | None = Fraction(0) if self.options.start_s <= 0 else None
        # The exact stream start (a float would shift every time by a rounding error and could
        # push a frame that sits exactly on a target below it); None: the first frame's time.
        start = self._stream.start_time
        self._origin: Fraction | None = (
            start * self._stream.time_base if start is not None and self._stream.time_base else None
        )

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file and the decoder."""
        self._container.close()

    def __iter__(self) -> Iterator[SampledFrame]:
        fps = Fraction(self.options.fps).limit_denominator(100_000)
        start = (
            Fraction(self.options.start_s) - _TOLERANCE if self.options.start_s > 0 else Fraction(0)
        )
        end = Fraction(self.options.end_s) if self.options.end_s is not None else None
        if start > 0:
            self._seek((self._origin or Fraction(0)) + start)
        next_target, index = start, 0
        try:
            for frame in self._container.decode(self._stream):
                t = self._relative_time(frame)
                if t is None or t < next_target:
                    continue
                if end is not None and t >= end:
                    return
                self.options.limits.check_size(frame.width, frame.height)
                yield SampledFrame(index=index, t_s=float(t), frame=self._convert(frame))
                index += 1
                next_target = Fraction(math.floor(t * fps) + 1) / fps
        except av.error.DecoderNotFoundError as exc:
            raise DecodeError("unsupported_codec", f"no decoder for {self.info.codec}") from exc
        except av.error.FFmpegError as exc:
            self._on_decode_error(exc)
            return
        if end is None:
            self._check_complete()

    def _relative_time(self, frame: av.VideoFrame) -> Fraction | None:
        """Frame time minus the stream start (exact); enforces the duration limit.

        Streams without timestamps (raw H.264) are timed by counting frame durations.
        """
        if frame.pts is not None and frame.time_base is not None:
            if self._origin is None:
                self._origin = frame.pts * frame.time_base
            t = frame.pts * frame.time_base - self._origin
        elif self._untimed_next is not None:
            t = self._untimed_next
        else:
            return None
        self._untimed_next = t + self._frame_duration(frame)
        self.frames_decoded += 1
        self.last_time_s = float(t)
        limit = self.options.limits.max_duration_s
        if limit is not None and t > limit:
            raise DecodeError("too_long", f"the stream runs past the limit of {limit:.1f} s")
        return t

    def _frame_duration(self, frame: av.VideoFrame) -> Fraction:
        if frame.duration and frame.time_base is not None:
            return frame.duration * frame.time_base
        return Fraction(1) / Fraction(self.info.fps or 25.0).limit_denominator(100_000)

    def _convert(self, frame: av.VideoFrame) -> torch.Tensor:
        """``av.VideoFrame`` -> ``(3,h,w) uint8`` RGB, scaled to ``max_side``."""
        height, width = scaled_size(frame.height, frame.width, self.options.max_side)
        if (height, width) == (frame.height, frame.width):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            # One swscale pass (scale in YUV, then convert): cheapest as measured (module doc).
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()  # (H,W,3) -> (3,H,W)

    def _seek(self, target: Fraction) -> None:
        time_base = self._stream.time_base
        try:
            self._container.seek(
                max(0, math.floor(target / time_base)), stream=self._stream, backward=True
            )
        except av.error.FFmpegError as exc:
            logger.debug("seek failed (%s); decoding from the start", exc)

    def _on_decode_error(self, exc: av.error.FFmpegError) -> None:
        if self.frames_decoded == 0:
            raise DecodeError("undecodable", "no video frame could be decoded") from exc
        where = self.last_time_s or 0.0
        self.truncation = DecodeError(
            "truncated",
            f"decoding stopped at {where:.2f} s ({exc.strerror or type(exc).__name__})",
            stopped_at_s=where,
        )
        logger.warning("video truncated: %s", self.truncation.message)

    def _check_complete(self) -> None:
        """Flag a file whose index promises more video than the decoder delivered."""
        if self.frames_decoded == 0:
            raise DecodeError("undecodable", "the video stream holds no decodable frame")
        expected = self.info.duration_s
        fmt = self._container.format.name
        indexed = any(name in fmt for name in _INDEXED_FORMATS)
        if expected is None or self._stream.duration is None or not indexed:
            return  # only a duration from an index (per-stream) is trusted
        frame_s = 1.0 / self.info.fps if self.info.fps else 0.1
        last = self.last_time_s or 0.0
        if expected - (last + frame_s) > max(0.5, 3 * frame_s):
            self.truncation = DecodeError(
                "truncated",
                f"decoding stopped at {last:.2f} s of {expected:.2f} s (the file is cut short)",
                stopped_at_s=last,
            )
            logger.warning("video truncated: %s", self.truncation.message)


def scaled_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """``(h, w)`` with the longer side at most ``max_side`` (aspect kept, never upscaled)."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def decode_frames(path: str | Path, options: DecodeOptions | None = None) -> list[SampledFrame]:
    """Every sampled frame of ``path`` as a list (small clips and tests; the pipeline streams).

    Raises ``DecodeError`` like :class:`VideoDecoder`, and ``truncated`` when the file breaks off.
    """
    with VideoDecoder(path, options) as video:
        frames = list(video)
        if video.truncation is not None:
            raise video.truncation
    return frames


def read_frame_at(
    path: str | Path, t_s: float, *, max_side: int | None = 640, limits: VideoLimits | None = None
) -> SampledFrame:
    """The first frame at or after ``t_s`` seconds from the stream start (seeks; decodes only
    from the preceding key frame)."""
    options = DecodeOptions(
        fps=1.0, max_side=max_side, limits=limits or VideoLimits(), start_s=max(0.0, t_s)
    )
    with VideoDecoder(path, options) as video:
        for sample in video:
            return sample
    raise ValueError(f"no frame at or after {t_s:.3f} s (the video ends at {video.last_time_s} s)")


__all__ = [
    "DecodeError",
    "DecodeErrorCode",
    "DecodeOptions",
    "ProbeResult",
    "SampledFrame",
    "ThreadType",
    "VideoDecoder",
    "VideoLimits",
    "decode_frames",
    "probe",
    "read_frame_at",
    "scaled_size",
]
