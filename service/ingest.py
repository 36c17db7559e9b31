"""Segment ingest: idempotency, streaming to disk, probing, storing, enqueueing the analysis.

Order of checks (cheap before expensive, and a retried request answered before any limit):
media type (415) -> declared length (413) -> ``Idempotency-Key`` replay -> queue depth (503)
-> body to disk with a running byte limit (413) -> probe (413/415/422) -> store + enqueue.
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import av
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.config import Settings
from service.errors import (
    ApiError,
    Conflict,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from service.jobs import AnalyzeSegmentPayload, JobQueue, QueueFull, new_job_id
from service.schemas import ApiKey, AuditAction, Segment, UploadAccepted
from service.store import Store, new_id
from service.upload import check_media_type, receive_video
from worker.probe import DecodeError, ProbeResult, VideoLimits, probe

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 10
# Probe codes that say "too big" (413) or "not a video" (415); every other code is 422.
_TOO_BIG = {"too_long", "too_large"}
_NOT_VIDEO = {"no_video_stream"}
# FFmpeg demuxer names -> media types, for multipart parts sent as application/octet-stream.
_FORMAT_TYPES = {
    "mov": "video/mp4",
    "mp4": "video/mp4",
    "matroska": "video/x-matroska",
    "avi": "video/x-msvideo",
}


@dataclass(frozen=True)
class IngestRequest:
    """One upload: who sends what for which stream."""

    key: ApiKey
    stream_id: str
    start: datetime
    idempotency_key: str | None


async def ingest_segment(
    request: Request, store: Store, queue: JobQueue, settings: Settings, upload: IngestRequest
) -> UploadAccepted:
    """Accept one segment (see the module docstring); raises :class:`ApiError` subclasses."""
    check_media_type(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_bytes + 64 * 1024:
        raise PayloadTooLarge(f"the upload exceeds the limit of {settings.max_upload_bytes} bytes")
    signature = f"POST /v1/streams/{upload.stream_id}/segments?start={upload.start.isoformat()}"
    if upload.idempotency_key is None:
        return await _accept(request, store, queue, settings, upload)
    key_id, idem = upload.key.key_id, upload.idempotency_key
    existing = await run_in_threadpool(store.idempotency.begin, key_id, idem, signature)
    if existing is not None:
        if existing.request != signature:
            raise Unprocessable(
                "this Idempotency-Key was used for another request", code="idempotency_key_reused"
            )
        if existing.state == "pending" or existing.response is None:
            raise Conflict(
                "a request with this Idempotency-Key is still being processed",
                code="idempotency_in_progress",
            )
        logger.info("idempotent replay of segment %s", existing.response.segment_id)
        return existing.response
    try:
        accepted = await _accept(request, store, queue, settings, upload)
    except BaseException:
        await run_in_threadpool(store.idempotency.release, key_id, idem)
        raise
    await run_in_threadpool(store.idempotency.complete, key_id, idem, signature, 202, accepted)
    return accepted


async def _accept(
    request: Request, store: Store, queue: JobQueue, settings: Settings, upload: IngestRequest
) -> UploadAccepted:
    if await run_in_threadpool(queue.depth) >= queue.max_length:
        raise _queue_full()
    segment_id = new_id("seg")
    folder = settings.data_dir / "segments"
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{segment_id}.part"
    received = await receive_video(request, part, settings.max_upload_bytes)
    limits = VideoLimits(
        max_duration_s=settings.max_segment_duration_s, max_pixels=settings.max_frame_pixels
    )
    try:
        info = await run_in_threadpool(probe, part, limits)
        content_type = await run_in_threadpool(_media_type, part, received.content_type)
    except DecodeError as exc:
        part.unlink(missing_ok=True)
        raise _probe_error(exc) from exc
    final = folder / f"{segment_id}{mimetypes.guess_extension(content_type) or '.video'}"
    part.rename(final)
    segment = _segment(
        upload, segment_id, final, settings.data_dir, received.size, content_type, info
    )
    try:
        return await run_in_threadpool(_store_and_enqueue, store, queue, segment, upload.key.key_id)
    except BaseException:
        final.unlink(missing_ok=True)
        raise


def _segment(
    upload: IngestRequest,
    segment_id: str,
    path: Path,
    data_dir: Path,
    size: int,
    content_type: str,
    info: ProbeResult,
) -> Segment:
    return Segment(
        segment_id=segment_id,
        stream_id=upload.stream_id,
        start=upload.start,
        duration_s=info.duration_s or 0.0,
        size_bytes=size,
        content_type=content_type,
        path=str(path.relative_to(data_dir)),
        width=info.width,
        height=info.height,
        codec=info.codec,
        job_id=new_job_id(),
    )


def _store_and_enqueue(
    store: Store, queue: JobQueue, segment: Segment, key_id: str
) -> UploadAccepted:
    assert segment.job_id is not None
    store.segments.put(segment)
    payload = AnalyzeSegmentPayload(
        stream_id=segment.stream_id,
        segment_id=segment.segment_id,
        video_path=segment.path,
        start=segment.start,
    )
    try:
        job = queue.enqueue(payload, job_id=segment.job_id)
    except QueueFull as exc:
        store.segments.delete(segment)
        raise _queue_full() from exc
    store.audit.append(key_id, AuditAction.upload_segment, f"segment:{segment.segment_id}")
    logger.info(
        "segment %s of stream %s queued as job %s",
        segment.segment_id,
        segment.stream_id,
        job.job_id,
    )
    return UploadAccepted(segment_id=segment.segment_id, job_id=job.job_id)


def _queue_full() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the analysis queue is full; retry later",
        code="queue_full",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _probe_error(exc: DecodeError) -> ApiError:
    if exc.code in _TOO_BIG:
        return PayloadTooLarge(exc.message, code=exc.code)
    if exc.code in _NOT_VIDEO:
        return UnsupportedMediaType(exc.message, code=exc.code)
    return Unprocessable(exc.message, code=exc.code)


def _media_type(path: Path, declared: str) -> str:
    """The declared ``video/*`` type, or one derived from the container for generic parts."""
    if declared.startswith("video/"):
        return declared
    with av.open(str(path)) as container:
        names = container.format.name.split(",")
    for name in names:
        if name in _FORMAT_TYPES:
            return _FORMAT_TYPES[name]
    return "application/octet-stream"
