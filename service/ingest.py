"""Segment ingest: idempotency, streaming to disk, probing, storing, enqueueing the analysis.

Order of checks (cheap before expensive, and a retried request answered before any limit):
media type (415) -> declared length (413) -> ``Idempotency-Key`` replay -> upload rate of the
key (429 ``rate_limited``) -> queue depth (503) -> declared length against the disk budgets
(507 ``insufficient_storage``) -> body to disk with a running byte limit (413) -> probe
(413/415/422) -> container is a video container (415 ``not_a_video``) -> commit.

The commit is one Lua script (``service.jobs.scripts.COMMIT_UPLOAD``): it checks the queue
depth and the disk budgets against the actual size, then writes the segment record, the
analysis job, the audit entry and the disk byte counters, all or nothing. If it fails, nothing
was written and the video file is removed (503 ``redis_unavailable``, 503 ``queue_full``, 507);
if Redis became unreachable with the script sent, the job record is looked up: present means
the commit was applied (202, the video stays); when even that cannot be told, the video is kept
(logged with the segment id) and the client gets 503. Stored bytes are only ever added
(segments are never deleted by the service); an operator who removes videos resets
``{p}disk:*`` (docs/operations.md).

``Idempotency-Key``: the first request claims the key with a pending record that lives
``VIGIL_IDEMPOTENCY_PENDING_TTL_S`` (60 s) and is renewed while the request runs, so the key of
a request that died with the API is free again within a minute. The done record keeps the
response and the sha256 of the video for 24 h; a replay must send the same video (its bytes
are read and hashed, not stored), else it gets 409 ``idempotency_body_mismatch``; a replay for
another stream or start gets 422 ``idempotency_key_reused``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import anyio
import av
import redis
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
from service.jobs import AnalyzeSegmentPayload, JobQueue, new_job_id
from service.schemas import (
    ApiKey,
    AuditAction,
    IdempotencyRecord,
    Segment,
    UploadAccepted,
    to_epoch,
)
from service.store import Store, new_id
from service.upload import check_media_type, media_type, receive_video
from worker.probe import DecodeError, ProbeResult, VideoLimits, probe

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 10
STORAGE_RETRY_AFTER_S = 300
MULTIPART_FRAMING = 64 * 1024
UPLOAD_ROUTE = "POST /v1/streams/{stream_id}/segments"
_clock = time.time  # the rate limit's clock (tests set it)
PART_SUFFIX = ".part"
# Probe codes that say "too big" (413) or "not a video" (415); every other code is 422.
_TOO_BIG = {"too_long", "too_large"}
_NOT_VIDEO = {"no_video_stream"}


@dataclass(frozen=True)
class Container:
    """A video container Vigil accepts: the media type it is served as, the file extension,
    and the declared types that are kept as they are (``video/webm`` for a WebM file)."""

    media_type: str
    extension: str
    also: frozenset[str] = frozenset()

    def media_type_for(self, declared: str) -> str:
        """The declared type if it names this container, else the container's own."""
        return declared if declared in self.also else self.media_type


_MP4 = Container(
    "video/mp4",
    ".mp4",
    frozenset({"video/mp4", "video/quicktime", "video/3gpp", "video/3gpp2", "video/x-m4v"}),
)
_MATROSKA = Container(
    "video/x-matroska", ".mkv", frozenset({"video/x-matroska", "video/matroska", "video/webm"})
)
# FFmpeg demuxer names -> containers. Anything else FFmpeg opens with a "video" stream (PNG,
# JPEG, GIF and other image demuxers, ...) is not a recording: 415 not_a_video.
CONTAINERS: dict[str, Container] = {
    "mov": _MP4,
    "mp4": _MP4,
    "matroska": _MATROSKA,
    "webm": _MATROSKA,
    "avi": Container("video/x-msvideo", ".avi", frozenset({"video/avi", "video/msvideo"})),
    "mpegts": Container("video/mp2t", ".ts"),
    "mpeg": Container("video/mpeg", ".mpg"),
    "flv": Container("video/x-flv", ".flv"),
    "ogg": Container("video/ogg", ".ogv"),
    "asf": Container("video/x-ms-asf", ".asf", frozenset({"video/x-ms-wmv"})),
    "h264": Container("video/h264", ".h264"),
    "hevc": Container("video/h265", ".h265", frozenset({"video/hevc"})),
}


def container_of(path: Path) -> Container | None:
    """The accepted container ``path`` is in (FFmpeg's demuxer), or None for anything else."""
    with av.open(str(path)) as opened:
        names = opened.format.name.split(",")
    return next((CONTAINERS[name] for name in names if name in CONTAINERS), None)


def served_media_type(path: Path, stored: str) -> str:
    """The media type a stored video is served with: its recorded ``video/*`` type, or for
    records from before uploads were typed by their container, the container's type."""
    if stored.startswith("video/"):
        return stored
    try:
        container = container_of(path)
    except (OSError, av.error.FFmpegError):
        return stored
    return container.media_type if container is not None else stored


def sweep_stale_uploads(data_dir: Path, max_age_s: float) -> int:
    """Remove ``segments/*.part`` files not written for ``max_age_s`` (uploads of an API process
    that died); returns how many. Live uploads write continuously and are left alone."""
    folder = data_dir / "segments"
    if not folder.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    removed = 0
    for part in folder.glob(f"*{PART_SUFFIX}"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                removed += 1
        except FileNotFoundError:  # finished or removed meanwhile
            continue
        except OSError as exc:
            logger.warning("cannot remove stale upload file %s: %s", part.name, exc)
    if removed:
        logger.warning("removed %d stale upload file(s) under %s", removed, folder)
    return removed


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
    if declared.isdigit() and int(declared) > settings.max_upload_bytes + MULTIPART_FRAMING:
        raise PayloadTooLarge(f"the upload exceeds the limit of {settings.max_upload_bytes} bytes")
    signature = f"POST /v1/streams/{upload.stream_id}/segments?start={upload.start.isoformat()}"
    if upload.idempotency_key is None:
        accepted, _ = await _accept(request, store, queue, settings, upload)
        return accepted
    key_id, idem = upload.key.key_id, upload.idempotency_key
    ttl_s = settings.idempotency_pending_ttl_s
    owner = secrets.token_hex(8)
    begin = partial(store.idempotency.begin, key_id, idem, signature, owner=owner, ttl_s=ttl_s)
    existing = await run_in_threadpool(begin)
    if existing is not None:
        return await _replay(request, settings, existing, signature)
    try:
        async with _claim_kept(store, key_id, idem, owner, ttl_s):
            accepted, digest = await _accept(request, store, queue, settings, upload)
    except BaseException:
        with anyio.CancelScope(shield=True):  # also when the request is being cancelled
            release = partial(store.idempotency.release, key_id, idem, owner=owner)
            await run_in_threadpool(release)
        raise
    complete = partial(
        store.idempotency.complete,
        key_id,
        idem,
        signature,
        202,
        accepted,
        owner=owner,
        body_sha256=digest,
    )
    if not await run_in_threadpool(complete):
        logger.warning("Idempotency-Key claim of segment %s lapsed", accepted.segment_id)
    return accepted


async def _replay(
    request: Request, settings: Settings, existing: IdempotencyRecord, signature: str
) -> UploadAccepted:
    """The first response again, if this is the same request with the same video."""
    if existing.request != signature:
        raise _key_reused("this Idempotency-Key was used for another request")
    if existing.state == "pending" or existing.response is None:
        raise Conflict(
            "a request with this Idempotency-Key is still being processed",
            code="idempotency_in_progress",
        )
    if existing.body_sha256 is not None:  # records from before digests were kept have none
        received = await receive_video(request, None, settings.max_upload_bytes)
        if received.sha256 != existing.body_sha256:
            raise Conflict(
                "this Idempotency-Key was used with a different video",
                code="idempotency_body_mismatch",
            )
    logger.info("idempotent replay of segment %s", existing.response.segment_id)
    return existing.response


def _key_reused(detail: str) -> Unprocessable:
    return Unprocessable(detail, code="idempotency_key_reused")


@asynccontextmanager
async def _claim_kept(
    store: Store, key_id: str, idem: str, owner: str, ttl_s: float
) -> AsyncIterator[None]:
    """Renew the pending ``Idempotency-Key`` claim every quarter of its TTL while the body
    runs (streaming, probing, enqueueing); the claim lapses soon after the request dies."""

    async def renew() -> None:
        refresh = partial(store.idempotency.renew, key_id, idem, owner=owner, ttl_s=ttl_s)
        try:
            while True:
                await asyncio.sleep(max(0.05, ttl_s / 4))
                if not await run_in_threadpool(refresh):
                    logger.warning("Idempotency-Key claim lapsed while its upload ran")
                    return
        except Exception:  # Redis trouble: the request itself will see it
            logger.exception("renewing an Idempotency-Key claim failed")

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()


async def _accept(
    request: Request, store: Store, queue: JobQueue, settings: Settings, upload: IngestRequest
) -> tuple[UploadAccepted, str]:
    """Store, probe and queue the upload; the response and the video's sha256."""
    await run_in_threadpool(_check_rate, store, upload.key.key_id, settings.upload_rate_per_minute)
    if await run_in_threadpool(queue.depth) >= queue.max_length:
        raise _queue_full()
    await run_in_threadpool(
        _check_budget, store, settings, upload.stream_id, _declared_video_bytes(request)
    )
    segment_id = new_id("seg")
    folder = settings.data_dir / "segments"
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{segment_id}{PART_SUFFIX}"
    received = await receive_video(request, part, settings.max_upload_bytes)
    limits = VideoLimits(
        max_duration_s=settings.max_segment_duration_s, max_pixels=settings.max_frame_pixels
    )
    try:
        info = await run_in_threadpool(probe, part, limits)
        container = await run_in_threadpool(container_of, part)
    except DecodeError as exc:
        part.unlink(missing_ok=True)
        raise _probe_error(exc) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if container is None:
        part.unlink(missing_ok=True)
        raise UnsupportedMediaType(
            "the file is not a video recording (an image or another non-video container)",
            code="not_a_video",
        )
    content_type = container.media_type_for(received.content_type)
    final = folder / f"{segment_id}{container.extension}"
    part.rename(final)
    segment = _segment(
        upload, segment_id, final, settings.data_dir, received.size, content_type, info
    )
    try:
        accepted = await run_in_threadpool(
            _commit, store, queue, settings, segment, upload.key.key_id
        )
    except _CommitUnknown as exc:
        # The commit may have been applied: keep the video (its job would need it), say so.
        logger.error("upload commit of segment %s: outcome unknown, video kept", segment_id)
        raise redis.ConnectionError("upload commit outcome unknown") from exc
    except BaseException:
        final.unlink(missing_ok=True)  # nothing was committed: nothing may stay behind
        raise
    return accepted, received.sha256


def _declared_video_bytes(request: Request) -> int:
    """The video bytes the request declares (``Content-Length``, less the multipart framing
    allowance); 0 when it declares none (chunked)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return 0
    framing = MULTIPART_FRAMING if media_type(request)[0] == "multipart/form-data" else 0
    return max(0, int(declared) - framing)


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


def _commit(
    store: Store, queue: JobQueue, settings: Settings, segment: Segment, key_id: str
) -> UploadAccepted:
    """Store the segment, queue its job, write its audit entry and count its bytes: one Lua
    script (``scripts.COMMIT_UPLOAD``), all or nothing. Raises 503 ``queue_full``, 507
    ``insufficient_storage``, or the Redis error when the store cannot be reached."""
    assert segment.job_id is not None
    payload = AnalyzeSegmentPayload(
        stream_id=segment.stream_id,
        segment_id=segment.segment_id,
        video_path=segment.path,
        start=segment.start,
    )
    keys = store.keys
    try:
        outcome, _ = queue.commit_upload(
            payload,
            job_id=segment.job_id,
            upload_keys=[
                keys.segment(segment.segment_id),
                keys.stream_segments(segment.stream_id),
                keys.streams(),
                keys.streams_last_end(),
                keys.audit(),
                keys.disk_bytes(),
                keys.stream_disk_bytes(segment.stream_id),
            ],
            upload_args=[
                segment.segment_id,
                segment.model_dump_json(),
                segment.stream_id,
                repr(to_epoch(segment.start)),
                repr(to_epoch(segment.end)),
                segment.size_bytes,
                settings.disk_budget_bytes,
                settings.stream_disk_budget_bytes,
                *_audit_fields(key_id, segment.segment_id),
            ],
        )
    except redis.RedisError:
        if _committed(queue, segment.job_id):  # applied, but its reply was lost
            logger.warning("upload commit of segment %s applied; reply lost", segment.segment_id)
            outcome = "ok"
        else:
            raise
    if outcome == "full":
        raise _queue_full()
    if outcome == "disk_budget":
        raise _insufficient_storage("the disk budget of all streams is used up")
    if outcome == "stream_budget":
        raise _insufficient_storage("the disk budget of this stream is used up")
    if outcome != "ok":  # 'exists': a fresh job id cannot exist
        raise RuntimeError(f"upload commit of segment {segment.segment_id}: {outcome}")
    logger.info(
        "segment %s of stream %s queued as job %s",
        segment.segment_id,
        segment.stream_id,
        segment.job_id,
    )
    return UploadAccepted(segment_id=segment.segment_id, job_id=segment.job_id)


def _audit_fields(key_id: str, segment_id: str) -> list[str]:
    """The upload's audit entry as field/value pairs, the fields ``AuditRepo`` reads (each
    upload's resource is new, so the entry never coalesces with another call's)."""
    now = datetime.now(UTC)
    fields = {
        "time": repr(now.timestamp()),
        "key_id": key_id,
        "key_hash": "",
        "action": AuditAction.upload_segment.value,
        "route": UPLOAD_ROUTE,
        "resource": f"segment:{segment_id}",
        "status": "202",
        "day": now.strftime("%Y%m%d"),
    }
    return [part for pair in fields.items() for part in pair]


class _CommitUnknown(Exception):
    """Whether the commit happened cannot be told (Redis unreachable after it was sent)."""


def _committed(queue: JobQueue, job_id: str) -> bool:
    """Whether the commit of ``job_id`` was applied (the job record exists); raises
    :class:`_CommitUnknown` when Redis cannot answer."""
    try:
        return queue.get(job_id) is not None
    except redis.RedisError as exc:
        raise _CommitUnknown(job_id) from exc


def _check_rate(store: Store, key_id: str, per_minute: int) -> None:
    """429 ``rate_limited`` past ``per_minute`` uploads of this key in the current minute (a
    fixed-window counter in Redis, shared by every API process)."""
    if per_minute <= 0:
        return
    now = _clock()
    window = int(now // 60)
    counter = store.keys.upload_rate(key_id, window)
    with store.r.pipeline(transaction=True) as pipe:
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count, _ = pipe.execute()
    if int(count) > per_minute:
        retry_after = max(1, math.ceil((window + 1) * 60 - now))
        raise ApiError(
            f"more than {per_minute} uploads per minute with this key; retry later",
            code="rate_limited",
            status=429,
            headers={"Retry-After": str(retry_after)},
        )


def _check_budget(store: Store, settings: Settings, stream_id: str, declared: int) -> None:
    """507 ``insufficient_storage`` when the declared body would not fit the disk budgets (the
    actual size is checked again by the commit)."""
    if not settings.disk_budget_bytes and not settings.stream_disk_budget_bytes:
        return
    total, used = store.r.mget(store.keys.disk_bytes(), store.keys.stream_disk_bytes(stream_id))
    need = max(declared, 1)
    if settings.disk_budget_bytes and int(total or 0) + need > settings.disk_budget_bytes:
        raise _insufficient_storage("the disk budget of all streams is used up")
    budget = settings.stream_disk_budget_bytes
    if budget and int(used or 0) + need > budget:
        raise _insufficient_storage("the disk budget of this stream is used up")


def _insufficient_storage(detail: str) -> ApiError:
    return ApiError(
        detail,
        code="insufficient_storage",
        status=507,
        headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
    )


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
