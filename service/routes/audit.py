"""The audit log: ``GET /v1/admin/audit`` and ``GET /v1/admin/audit/export`` (NDJSON)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from service.deps import AdminKey, StoreDep
from service.errors import Unprocessable, problem_responses
from service.routes.streams import CursorParam, Limit
from service.routing import VigilRoute
from service.schemas import AuditAction, AuditEntry, AuditPage, UtcDatetime
from service.store import InvalidCursor

router = APIRouter(tags=["admin"], route_class=VigilRoute)


@router.get(
    "/v1/admin/audit",
    response_model=AuditPage,
    responses=problem_responses(401, 403, 422),
    summary="Audit entries, newest first",
)
def list_audit(
    _key: AdminKey,
    store: StoreDep,
    limit: Limit = 100,
    cursor: CursorParam = None,
    key_id: Annotated[str | None, Query(max_length=64)] = None,
    action: AuditAction | None = None,
) -> AuditPage:
    try:
        data, next_cursor = store.audit.list(limit, cursor, key_id=key_id, action=action)
    except InvalidCursor as exc:
        raise Unprocessable(str(exc), code="invalid_cursor") from exc
    return AuditPage(data=data, next_cursor=next_cursor)


NDJSON = "application/x-ndjson"


@router.get(
    "/v1/admin/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {NDJSON: {}}, "description": "One audit entry (JSON) per line."},
        **problem_responses(401, 403, 422),
    },
    summary="Every audit entry of a time range, oldest first, as NDJSON",
)
def export_audit(
    _key: AdminKey,
    store: StoreDep,
    since: Annotated[
        UtcDatetime | None, Query(description="Entries first seen at or after this time.")
    ] = None,
    until: Annotated[
        UtcDatetime | None, Query(description="Entries first seen at or before this time.")
    ] = None,
) -> StreamingResponse:
    if since is not None and until is not None and until < since:
        raise Unprocessable("until is before since", code="invalid_range")

    def lines(entries: Iterator[AuditEntry]) -> Iterator[str]:
        for entry in entries:
            yield entry.model_dump_json() + "\n"

    return StreamingResponse(lines(store.audit.export(since, until)), media_type=NDJSON)
