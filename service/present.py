"""Stored records -> API bodies (internal paths and hashes stripped, URLs added)."""

from __future__ import annotations

from service.jobs import Job
from service.schemas import (
    ApiKey,
    ApiKeyPublic,
    Event,
    EventDetail,
    EventPublic,
    FramePoint,
    JobPublic,
    Keyframe,
    Segment,
    SegmentPublic,
    Thresholds,
)


def event_public(event: Event) -> EventPublic:
    """The API view of an event; the key frame's overlay URL is the event's overlay endpoint."""
    fields = event.model_dump(exclude={"keyframe_time", "keyframe_overlay"})
    keyframe = Keyframe(
        time=event.keyframe_time, overlay_url=f"/v1/events/{event.event_id}/overlay"
    )
    return EventPublic(**fields, keyframe=keyframe)


def event_detail(
    event: Event,
    frames: list[FramePoint],
    *,
    context_s: float = 0.0,
    thresholds: dict[str, Thresholds] | None = None,
) -> EventDetail:
    """The event, its per-frame scores (± ``context_s``) and its model's thresholds."""
    return EventDetail(
        **event_public(event).model_dump(),
        frames=frames,
        context_s=context_s,
        thresholds=thresholds or None,
    )


def segment_public(segment: Segment) -> SegmentPublic:
    """The API view of a segment (no file path)."""
    fields = segment.model_dump(exclude={"path"})
    return SegmentPublic(
        **fields, end=segment.end, video_url=f"/v1/segments/{segment.segment_id}/video"
    )


def key_public(key: ApiKey) -> ApiKeyPublic:
    """An API key without its hash."""
    return ApiKeyPublic(**key.model_dump(exclude={"key_hash"}))


def job_public(job: Job) -> JobPublic:
    """The issue's job view: status, progress, error, attempts and times (no payload)."""
    return JobPublic.model_validate(job.model_dump(exclude={"payload", "result", "worker"}))
