"""The audit log: ``GET /v1/admin/audit``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import AdminKey, StoreDep
from service.errors import Unprocessable, problem_responses
from service.routes.streams import CursorParam, Limit
from service.routing import VigilRoute
from service.schemas import AuditAction, AuditPage
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
