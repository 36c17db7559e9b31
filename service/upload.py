"""Receive an uploaded video to disk in chunks: a raw ``video/*`` body or multipart field ``file``.

The body is never held whole in memory: chunks from ``request.stream()`` go straight to a file
(multipart bodies through python-multipart's streaming parser), and the byte limit is enforced
while reading, so an oversized upload stops at the limit, not at the end. The sha256 of the
video's bytes (the ``file`` part of a multipart body, not its framing) is computed on the way,
so an ``Idempotency-Key`` replay can be told apart from a different video sent with the key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

FILE_FIELD = "file"
# What a multipart part may declare: curl and browsers send application/octet-stream for
# files whose type they cannot guess; the probe decides whether it is a video.
_PART_TYPES = ("video/", "application/octet-stream")


@dataclass
class Received:
    """What was written: the declared media type, the byte count and the bytes' sha256 (hex)."""

    content_type: str
    size: int
    sha256: str = ""


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _HashingSink:
    """Writes the video's bytes to ``out`` (None: nowhere) and hashes them."""

    def __init__(self, out: BinaryIO | None) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes, /) -> None:
        self.digest.update(data)
        if self.out is not None:
            self.out.write(data)


def media_type(request: Request) -> tuple[str, dict[bytes, bytes]]:
    """The request's media type (lower case) and its parameters."""
    raw = request.headers.get("content-type", "")
    kind, params = parse_options_header(raw)
    return kind.decode("latin-1").lower(), params


def check_media_type(request: Request) -> None:
    """415 unless the body is ``video/*`` or ``multipart/form-data`` (checked before reading)."""
    kind, params = media_type(request)
    if kind.startswith("video/"):
        return
    if kind == "multipart/form-data" and params.get(b"boundary"):
        return
    raise UnsupportedMediaType(
        "send the video as a video/* body or as multipart/form-data field 'file'"
    )


async def receive_video(request: Request, dest: Path | None, max_bytes: int) -> Received:
    """Stream the request body (or its ``file`` part) into ``dest`` (None: only hash it).

    Raises 413 ``payload_too_large`` past ``max_bytes``, 415 when no video part is present,
    400 ``bad_request`` for a malformed multipart body or a client that went away. ``dest`` is
    removed on failure.
    """
    if dest is None:
        return await _receive(request, _HashingSink(None), max_bytes)
    try:
        with dest.open("wb") as out:
            received = await _receive(request, _HashingSink(out), max_bytes)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return received


async def _receive(request: Request, sink: _HashingSink, max_bytes: int) -> Received:
    kind, params = media_type(request)
    if kind == "multipart/form-data":
        received = await _receive_multipart(request, sink, params[b"boundary"], max_bytes)
    else:
        received = Received(kind, await _copy(request, sink.write, max_bytes))
    received.sha256 = sink.digest.hexdigest()
    return received


async def _copy(request: Request, write: Callable[[bytes], object], max_bytes: int) -> int:
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the upload exceeds the limit of {max_bytes} bytes")
            write(chunk)
    except ClientDisconnect as exc:
        raise BadRequest("the client closed the connection before the body was complete") from exc
    return size


@dataclass
class _PartState:
    """Streaming state of the multipart parser: headers of the current part and the file part."""

    out: _Sink
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, str] = field(default_factory=dict)
    in_file: bool = False
    found: bool = False
    content_type: str = ""
    size: int = 0


async def _receive_multipart(
    request: Request, out: _Sink, boundary: bytes, max_bytes: int
) -> Received:
    state = _PartState(out=out)
    parser = MultipartParser(boundary, _callbacks(state))

    def feed(chunk: bytes) -> None:
        parser.write(chunk)
        if state.size > max_bytes:
            raise PayloadTooLarge(f"the upload exceeds the limit of {max_bytes} bytes")

    try:
        # Multipart framing adds a little to the file; allow for it in the byte budget.
        await _copy(request, feed, max_bytes + 64 * 1024)
        parser.finalize()
    except (
        ValueError,
        AssertionError,
    ) as exc:  # python-multipart's MultipartParseError is a ValueError
        raise BadRequest("malformed multipart body") from exc
    if not state.found:
        raise UnsupportedMediaType(f"the multipart body has no video field {FILE_FIELD!r}")
    return Received(state.content_type, state.size)


def _callbacks(state: _PartState) -> dict[str, object]:
    def on_part_begin() -> None:
        state.headers.clear()
        state.in_file = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.decode("latin-1").lower()] = state.header_value.decode(
            "latin-1"
        )
        state.header_field.clear()
        state.header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state.headers.get("content-disposition", ""))
        if disposition.get(b"name") != FILE_FIELD.encode() or state.found:
            return
        part_type = state.headers.get("content-type", "application/octet-stream").lower()
        if not part_type.startswith(_PART_TYPES):
            raise UnsupportedMediaType(f"the {FILE_FIELD!r} part is {part_type}, not a video")
        state.in_file = state.found = True
        state.content_type = part_type.split(";")[0].strip()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.in_file:
            state.size += end - start
            state.out.write(data[start:end])

    def on_part_end() -> None:
        state.in_file = False

    return {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
