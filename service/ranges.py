"""HTTP Range (RFC 9110 §14) for serving segment videos: one byte range, 206 or 416.

Only single ranges are honoured; a multi-range or malformed header is ignored and the whole
file is sent (200), which RFC 9110 allows. An unsatisfiable range is a 416 problem with
``Content-Range: bytes */<size>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from fastapi.responses import StreamingResponse

from service.errors import RangeNotSatisfiable

CHUNK = 256 * 1024
_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` inclusive byte positions asked for, or None for the whole file.

    Raises :class:`RangeNotSatisfiable` when the range lies beyond the file.
    """
    if not header:
        return None
    match = _SINGLE.match(header)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # suffix range: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None  # invalid syntax: ignore the header
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(last, size - 1)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"the requested range is outside the {size}-byte file",
        headers={"Content-Range": f"bytes */{size}"},
    )


def _read(path: Path, first: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(first)
        left = length
        while left > 0:
            chunk = handle.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def file_response(path: Path, media_type: str, range_header: str | None) -> StreamingResponse:
    """The file, or the asked-for part of it, streamed in chunks."""
    size = path.stat().st_size
    span = parse_range(range_header, size)
    headers = {"Accept-Ranges": "bytes"}
    if span is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_read(path, 0, size), media_type=media_type, headers=headers)
    first, last = span
    headers["Content-Length"] = str(last - first + 1)
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(
        _read(path, first, last - first + 1),
        status_code=206,
        media_type=media_type,
        headers=headers,
    )
