"""Clinician labels: ``POST`` / ``GET /v1/streams/{id}/labels``."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import IngestKey, StoreDep, ViewerKey
from service.errors import Unprocessable, problem_responses
from service.routes.segments import StreamIdPath
from service.routes.streams import CursorParam, Limit, require_stream
from service.routing import VigilRoute
from service.schemas import AuditAction, Label, LabelCreate, LabelsPage
from service.store import InvalidCursor, new_id

router = APIRouter(tags=["labels"], route_class=VigilRoute)


@router.post(
    "/v1/streams/{stream_id}/labels",
    status_code=201,
    response_model=Label,
    responses=problem_responses(401, 403, 404, 413, 422),
    summary="Add a clinician label over an interval",
)
def create_label(
    stream_id: StreamIdPath, body: LabelCreate, key: IngestKey, store: StoreDep
) -> Label:
    require_stream(store, stream_id)
    label = Label(
        label_id=new_id("lbl"),
        stream_id=stream_id,
        label=body.label,
        start=body.start,
        end=body.end,
        created_by=key.key_id,
    )
    store.labels.add(label)
    store.audit.append(key.key_id, AuditAction.create_label, f"label:{label.label_id}")
    return label


@router.get(
    "/v1/streams/{stream_id}/labels",
    response_model=LabelsPage,
    responses=problem_responses(401, 403, 404, 422),
    summary="The stream's clinician labels",
)
def list_labels(
    stream_id: StreamIdPath,
    key: ViewerKey,
    store: StoreDep,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> LabelsPage:
    require_stream(store, stream_id)
    try:
        data, next_cursor = store.labels.list(stream_id, limit, cursor)
    except InvalidCursor as exc:
        raise Unprocessable(str(exc), code="invalid_cursor") from exc
    return LabelsPage(data=data, next_cursor=next_cursor)
