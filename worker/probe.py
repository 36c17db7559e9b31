"""Cheap video checks without torch: open the container, read its header, decode one frame.

This module is imported by the API (``service/`` never imports torch), so it depends only on
PyAV and pydantic. :mod:`worker.decode` builds on it and re-exports :class:`DecodeError`.

Every failure is a :class:`DecodeError` whose ``code`` is one of :data:`DecodeErrorCode`; codes
are stable (the API returns them and failed jobs store them), messages are for people.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.error
from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

DecodeErrorCode = Literal[
    "empty_file",
    "no_video_stream",
    "undecodable",
    "truncated",
    "too_long",
    "too_large",
    "unsupported_codec",
]


class DecodeError(Exception):
    """A video could not be (fully) decoded.

    Attributes:
        code: stable machine-readable reason (:data:`DecodeErrorCode`).
        message: one line for people.
        stopped_at_s: for ``truncated``: the time (seconds from the stream start) of the last
            frame that could be decoded, or ``None`` when none could.
    """

    def __init__(self, code: DecodeErrorCode, message: str, *, stopped_at_s: float | None = None):
        super().__init__(f"{code}: {message}")
        self.code: DecodeErrorCode = code
        self.message = message
        self.stopped_at_s = stopped_at_s


@dataclass(frozen=True)
class VideoLimits:
    """What the service accepts: ``None`` disables a limit."""

    max_duration_s: float | None = 900.0
    max_pixels: int | None = 3840 * 2160

    def check_size(self, width: int, height: int) -> None:
        """Raise ``too_large`` when ``width x height`` exceeds ``max_pixels``."""
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise DecodeError(
                "too_large",
                f"{width}x{height} has {width * height} pixels; the limit is {self.max_pixels}",
            )

    def check_duration(self, duration_s: float | None) -> None:
        """Raise ``too_long`` when ``duration_s`` exceeds ``max_duration_s``."""
        limit = self.max_duration_s
        if duration_s is not None and limit is not None and duration_s > limit:
            raise DecodeError(
                "too_long", f"{duration_s:.1f} s is longer than the limit of {limit:.1f} s"
            )


class ProbeResult(BaseModel):
    """What the container header says about the first video stream."""

    model_config = ConfigDict(frozen=True)

    duration_s: float | None
    """Stream duration in seconds (``None`` when the container does not say)."""
    width: int
    height: int
    codec: str
    fps: float | None
    """Average frame rate (``None`` when unknown)."""
    start_s: float = 0.0
    """Presentation time of the stream's start, in seconds (times elsewhere are relative to it)."""


def probe(
    path: str | Path, limits: VideoLimits | None = None, *, decode_first: bool = True
) -> ProbeResult:
    """Check that ``path`` is a video Vigil can analyse, cheaply (header + at most one frame).

    Raises:
        DecodeError: ``empty_file``, ``undecodable``, ``truncated``, ``no_video_stream``,
            ``unsupported_codec``, ``too_large`` or ``too_long``.
    """
    limits = limits or VideoLimits()
    with open_container(path) as container:
        stream = video_stream(container)
        info = stream_info(container, stream)
        limits.check_size(info.width, info.height)
        limits.check_duration(info.duration_s)
        if decode_first:
            _decode_one(container, stream)
    return info


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open ``path`` for reading, mapping failures to :class:`DecodeError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DecodeError("undecodable", f"cannot read the file ({exc.strerror})") from exc
    if size == 0:
        raise DecodeError("empty_file", "the file is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        if _is_incomplete_mp4(path, size):
            raise DecodeError(
                "truncated",
                "the MP4 file is incomplete (its index is missing); nothing could be decoded",
            ) from exc
        raise DecodeError("undecodable", "not a video file FFmpeg can read") from exc


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream of ``container``, checked to have a decoder."""
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise DecodeError("no_video_stream", f"the file has no video stream (streams: {kinds})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        tag = getattr(stream, "codec_tag", "") or "unknown"
        raise DecodeError("unsupported_codec", f"no decoder for the video codec {tag!r}")
    return stream


def stream_info(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> ProbeResult:
    """Header facts about ``stream`` (no decoding)."""
    ctx = stream.codec_context
    time_base = stream.time_base or Fraction(1, 1)
    start_s = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
    duration_s: float | None = None
    if stream.duration is not None:
        duration_s = float(stream.duration * time_base)
    elif container.duration is not None:
        # e.g. Matroska: FFmpeg's muxer stores the end time, so a late start is included.
        start = (container.start_time or 0) / av.time_base
        total = container.duration / av.time_base
        duration_s = total - start if 0 < start < total else total
    # Without stream timing (raw H.264) the average rate is FFmpeg's 25 fps default; the guessed
    # rate comes from the bitstream's timing information.
    rate = stream.average_rate if stream.duration else (stream.guessed_rate or stream.average_rate)
    return ProbeResult(
        duration_s=duration_s,
        width=int(ctx.width),
        height=int(ctx.height),
        codec=ctx.name,
        fps=float(rate) if rate else None,
        start_s=start_s,
    )


def _decode_one(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> None:
    try:
        for _frame in container.decode(stream):
            return
    except av.error.DecoderNotFoundError as exc:
        raise DecodeError(
            "unsupported_codec", f"no decoder for {stream.codec_context.name}"
        ) from exc
    except av.error.FFmpegError as exc:
        raise DecodeError("undecodable", "the first video frame cannot be decoded") from exc
    raise DecodeError("undecodable", "the video stream holds no decodable frame")


def _is_incomplete_mp4(path: Path, size: int) -> bool:
    """True when ``path`` is an ISO-BMFF (MP4/MOV) file cut short: it starts with an ``ftyp`` box
    but a top-level box runs past the end or the ``moov`` index never comes."""
    boxes: list[bytes] = []
    with path.open("rb") as handle:
        offset = 0
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(16)
            box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if box_size == 1 and len(header) >= 16:  # 64-bit "largesize"
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:  # box extends to the end of the file
                box_size = size - offset
            if box_size < 8 or not kind.isalnum():
                break
            boxes.append(kind)
            if offset + box_size > size:
                return bool(boxes) and boxes[0] == b"ftyp"
            offset += box_size
    return bool(boxes) and boxes[0] == b"ftyp" and b"moov" not in boxes


__all__ = [
    "DecodeError",
    "DecodeErrorCode",
    "ProbeResult",
    "VideoLimits",
    "open_container",
    "probe",
    "stream_info",
    "video_stream",
]
