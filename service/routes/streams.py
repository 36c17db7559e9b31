"""Streams and their timelines: ``GET /v1/streams``, ``GET /v1/streams/{id}/events``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import StoreDep, ViewerKey
from service.errors import NotFound, Unprocessable, problem_responses
from service.present import event_public
from service.routes.segments import StreamIdPath
from service.routing import VigilRoute
from service.schemas import EventsPage, StreamsPage, UtcDatetime
from service.store import EventQuery, InvalidCursor, Store

router = APIRouter(tags=["streams"], route_class=VigilRoute)

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
CursorParam = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
]


def require_stream(store: Store, stream_id: str) -> None:
    """404 ``stream_not_found`` unless a segment was ever posted to the stream."""
    if not store.streams.exists(stream_id):
        raise NotFound("no such stream", code="stream_not_found")


@router.get(
    "/v1/streams",
    response_model=StreamsPage,
    responses=problem_responses(401, 403, 422),
    summary="Streams with their last segment time and event counts",
)
def list_streams(
    _key: ViewerKey, store: StoreDep, limit: Limit = 100, cursor: CursorParam = None
) -> StreamsPage:
    try:
        data, next_cursor = store.streams.list(limit, cursor)
    except InvalidCursor as exc:
        raise Unprocessable(str(exc), code="invalid_cursor") from exc
    return StreamsPage(data=data, next_cursor=next_cursor)


@router.get(
    "/v1/streams/{stream_id}/events",
    response_model=EventsPage,
    responses=problem_responses(401, 403, 404, 422),
    summary="The stream's timeline of events",
)
def list_events(
    stream_id: StreamIdPath,
    key: ViewerKey,
    store: StoreDep,
    start: Annotated[
        UtcDatetime | None, Query(description="Events ending after this time.")
    ] = None,
    end: Annotated[
        UtcDatetime | None, Query(description="Events starting before this time.")
    ] = None,
    label: Annotated[str | None, Query(max_length=64)] = None,
    min_score: Annotated[
        float | None, Query(ge=0.0, le=1.0, description="Minimum peak score.")
    ] = None,
    updated_since: Annotated[
        UtcDatetime | None,
        Query(description="Only events changed after this time (grown, closed or superseded)."),
    ] = None,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> EventsPage:
    """Live events by start time; with ``updated_since``, every change (superseded events
    included, flagged ``superseded``) by update time."""
    if start is not None and end is not None and end <= start:
        raise Unprocessable("end must be after start", code="invalid_window")
    require_stream(store, stream_id)
    query = EventQuery(
        start=start,
        end=end,
        label=label,
        min_score=min_score,
        updated_since=updated_since,
        limit=limit,
        cursor=cursor,
    )
    try:
        events, next_cursor = store.events.list(stream_id, query)
    except InvalidCursor as exc:
        raise Unprocessable(str(exc), code="invalid_cursor") from exc
    return EventsPage(data=[event_public(e) for e in events], next_cursor=next_cursor)
