"""Events: ``GET /v1/events/{id}`` (with per-frame scores) and its overlay images."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from service.config import Settings
from service.deps import QueueDep, SettingsDep, StoreDep, ViewerKey
from service.errors import (
    BadGateway,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
    problem_responses,
)
from service.jobs import (
    Job,
    JobQueue,
    JobStatus,
    QueueFull,
    RenderOverlayPayload,
    RenderOverlayResult,
)
from service.present import event_detail, job_public
from service.routing import VigilRoute
from service.schemas import (
    Event,
    EventDetail,
    FramePoint,
    JobPublic,
    OverlayMethod,
    UtcDatetime,
    to_epoch,
)
from service.store import Store

router = APIRouter(tags=["events"], route_class=VigilRoute)

MAX_WAIT_S = 30.0
MAX_CONTEXT_S = 600.0
_KEYFRAME_TOLERANCE = timedelta(milliseconds=1)


def _event(store: Store, event_id: str) -> Event:
    event = store.events.get(event_id)
    if event is None:
        raise NotFound("no such event", code="event_not_found")
    return event


@router.get(
    "/v1/events/{event_id}",
    response_model=EventDetail,
    responses=problem_responses(401, 403, 404, 422),
    summary="An event, its per-frame scores (with context) and its model's thresholds",
)
def get_event(
    event_id: str,
    key: ViewerKey,
    store: StoreDep,
    context_s: Annotated[
        float,
        Query(
            ge=0.0,
            le=MAX_CONTEXT_S,
            description="Also return the frames this many seconds before and after the event "
            "(from any segment of the stream).",
        ),
    ] = 0.0,
) -> EventDetail:
    event = _event(store, event_id)
    frames = _frames(store, event, context_s)
    model = store.models.get(event.model_version)
    return event_detail(
        event, frames, context_s=context_s, thresholds=model.thresholds if model else None
    )


def _frames(store: Store, event: Event, context_s: float) -> list[FramePoint]:
    """The stream's analysed frames in ``[start - context_s, end + context_s]``.

    Without context the event's own segments hold every frame; with context the neighbouring
    segments of the stream that overlap the widened window are read too.
    """
    if context_s <= 0:
        return store.segments.frames_between(
            event.stream_id, event.start, event.end, event.segment_ids
        )
    margin = timedelta(seconds=context_s)
    start, end = event.start - margin, event.end + margin
    around = [s.segment_id for s in store.segments.in_range(event.stream_id, start, end)]
    ids = list(dict.fromkeys([*event.segment_ids, *around]))
    return store.segments.frames_between(event.stream_id, start, end, ids)


@router.get(
    "/v1/events/{event_id}/overlay",
    response_class=Response,
    responses={
        200: {"description": "The overlay JPEG.", "content": {"image/jpeg": {}}},
        202: {"description": "Rendering was queued; poll the job.", "model": JobPublic},
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        **problem_responses(401, 403, 404, 422, 502, 503),
    },
    summary="An attention overlay of the event (key frame Grad-CAM, or rendered on demand)",
)
def get_overlay(
    event_id: str,
    key: ViewerKey,
    store: StoreDep,
    queue: QueueDep,
    settings: SettingsDep,
    time: Annotated[
        UtcDatetime | None, Query(description="Default: the event's key frame.")
    ] = None,
    method: OverlayMethod = OverlayMethod.gradcam,
    wait: Annotated[
        float, Query(ge=0.0, le=MAX_WAIT_S, description="Seconds to wait for a render.")
    ] = 0.0,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The stored key-frame Grad-CAM is served at once; any other time or method is rendered
    by a worker: 202 with the job, or the image if it is ready within ``wait`` seconds."""
    event = _event(store, event_id)
    moment = time or event.keyframe_time
    if not event.start <= moment <= event.end:
        raise Unprocessable("time lies outside the event", code="time_out_of_range")
    path = _stored_keyframe(event, moment, method, settings)
    if path is None:
        outcome = _rendered(store, queue, settings, event, moment, method, wait)
        if isinstance(outcome, Job):
            return JSONResponse(
                job_public(outcome).model_dump(mode="json"),
                status_code=202,
                headers={"Location": f"/v1/jobs/{outcome.job_id}"},
            )
        path = outcome
    return _jpeg(path, if_none_match)


def _stored_keyframe(
    event: Event, moment: datetime, method: OverlayMethod, settings: Settings
) -> Path | None:
    if method is not OverlayMethod.gradcam or event.keyframe_overlay is None:
        return None
    if abs(moment - event.keyframe_time) > _KEYFRAME_TOLERANCE:
        return None
    path = settings.data_dir / event.keyframe_overlay
    return path if path.is_file() else None


def _rendered(
    store: Store,
    queue: JobQueue,
    settings: Settings,
    event: Event,
    moment: datetime,
    method: OverlayMethod,
    wait: float,
) -> Path | Job:
    """The rendered overlay's path, or the job that renders it (queued now or earlier)."""
    ids = event.segment_ids
    candidates = [
        s for s in (store.segments.get(i) for i in ids) if s and s.start <= moment <= s.end
    ]
    segment = candidates[-1] if candidates else store.segments.at(event.stream_id, moment)
    if segment is None:
        raise NotFound("the video of this moment is no longer stored", code="segment_not_found")
    payload = RenderOverlayPayload(
        stream_id=event.stream_id,
        segment_id=segment.segment_id,
        event_id=event.event_id,
        label=event.label,
        offset_s=max(0.0, to_epoch(moment) - to_epoch(segment.start)),
        method=method.value,
    )
    target = settings.data_dir / payload.overlay_relpath()
    if target.is_file():
        return target
    job = _enqueue_render(queue, payload)
    if wait > 0 and job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        job = queue.wait(job.job_id, wait) or job
    if job.status is JobStatus.FAILED:
        message = job.error.message if job.error else "the overlay could not be rendered"
        raise BadGateway(message, code="overlay_failed")
    if job.status is JobStatus.SUCCEEDED:
        if isinstance(job.result, RenderOverlayResult):
            target = settings.data_dir / job.result.overlay_path
        if target.is_file():
            return target
    return job


def _enqueue_render(queue: JobQueue, payload: RenderOverlayPayload) -> Job:
    """Queue the render once: the job id derives from the overlay, so concurrent requests for
    the same image share one job; a failed earlier job is retried under a fresh id."""
    digest = hashlib.sha256(payload.overlay_relpath().encode()).hexdigest()[:20]
    job_id = f"j-ovl-{digest}"
    try:
        existing = queue.get(job_id)
        if existing is not None and existing.status is JobStatus.FAILED:
            return queue.enqueue(payload)
        return queue.enqueue(payload, job_id=job_id)
    except QueueFull as exc:
        raise ServiceUnavailable(
            "the render queue is full; retry later",
            code="queue_full",
            headers={"Retry-After": "10"},
        ) from exc


def _jpeg(path: Path, if_none_match: str | None) -> Response:
    data = path.read_bytes()
    etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    # Patient images: private caches only, and always revalidated (cheap with the ETag).
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        if etag in tags or "*" in tags:
            return Response(status_code=304, headers=headers)
    return Response(content=data, media_type="image/jpeg", headers=headers)
