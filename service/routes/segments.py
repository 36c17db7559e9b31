"""Segments: upload (``POST /v1/streams/{id}/segments``), metadata and video (HTTP Range)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.deps import IngestKey, QueueDep, SettingsDep, StoreDep, ViewerKey
from service.errors import NotFound, problem_responses
from service.ingest import IngestRequest, ingest_segment, served_media_type
from service.jobs import JobQueue, JobStatus
from service.present import segment_public
from service.ranges import file_response
from service.routing import VigilRoute
from service.schemas import (
    STREAM_ID_PATTERN,
    ErrorInfo,
    Segment,
    SegmentPublic,
    SegmentStart,
    SegmentStatus,
    UploadAccepted,
)

router = APIRouter(tags=["segments"], route_class=VigilRoute)

StreamIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=STREAM_ID_PATTERN,
        description="`[A-Za-z0-9._-]`, not only dots.",
    ),
]

_VIDEO_BODY = {
    "requestBody": {
        "required": True,
        "description": "The video: a raw `video/*` body, or multipart/form-data with field `file`.",
        "content": {
            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


@router.post(
    "/v1/streams/{stream_id}/segments",
    status_code=202,
    response_model=UploadAccepted,
    openapi_extra=_VIDEO_BODY,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
    summary="Upload a segment and queue its analysis",
)
async def upload_segment(
    request: Request,
    stream_id: StreamIdPath,
    key: IngestKey,
    store: StoreDep,
    queue: QueueDep,
    settings: SettingsDep,
    start: Annotated[
        SegmentStart,
        Query(
            description="Wall-clock start of the segment (ISO-8601; no offset means UTC), "
            "from 2000-01-01 up to 2100-01-01."
        ),
    ],
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> UploadAccepted:
    """Stream the video to disk, probe it and queue an analysis job. The same
    ``Idempotency-Key`` (per API key) returns the first response and queues nothing more."""
    upload = IngestRequest(
        key=key, stream_id=stream_id, start=start, idempotency_key=idempotency_key
    )
    return await ingest_segment(request, store, queue, settings, upload)


@router.get(
    "/v1/segments/{segment_id}",
    response_model=SegmentPublic,
    responses=problem_responses(401, 403, 404),
    summary="A segment's metadata and analysis status",
)
def get_segment(segment_id: str, key: ViewerKey, store: StoreDep, queue: QueueDep) -> SegmentPublic:
    segment = store.segments.get(segment_id)
    if segment is None:
        raise NotFound("no such segment", code="segment_not_found")
    return segment_public(_settled(segment, queue))


def _settled(segment: Segment, queue: JobQueue) -> Segment:
    """A ``queued`` segment whose analysis job failed for good is shown ``failed`` with the
    job's error (the queue settles such segments; records from before it did stay queued)."""
    if segment.status is not SegmentStatus.queued or segment.job_id is None:
        return segment
    job = queue.get(segment.job_id)
    if job is None or job.status is not JobStatus.FAILED or job.error is None:
        return segment
    error = ErrorInfo(code=job.error.code, message=job.error.message)
    return segment.model_copy(update={"status": SegmentStatus.failed, "error": error})


@router.get(
    "/v1/segments/{segment_id}/video",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The whole video.", "content": {"video/*": {}}},
        206: {"description": "The requested byte range.", "content": {"video/*": {}}},
        **problem_responses(401, 403, 404, 416),
    },
    summary="The segment's video (supports HTTP Range)",
)
async def get_segment_video(
    segment_id: str,
    key: ViewerKey,
    store: StoreDep,
    settings: SettingsDep,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> StreamingResponse:
    segment = await run_in_threadpool(store.segments.get, segment_id)
    path = settings.data_dir / segment.path if segment is not None else None
    if segment is None or path is None or not path.is_file():
        raise NotFound("no such segment video", code="segment_not_found")
    media_type = await run_in_threadpool(served_media_type, path, segment.content_type)
    response = file_response(path, media_type, range_header)
    return response
