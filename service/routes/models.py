"""Model registry: ``GET /v1/admin/models``, ``POST /v1/admin/models/{version}/activate``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from service.deps import AdminKey, SettingsDep, StoreDep
from service.errors import Conflict, NotFound, Unprocessable, problem_responses
from service.routes.streams import CursorParam, Limit
from service.routing import VigilRoute
from service.schemas import AuditAction, ModelsPage, ModelVersion, to_epoch
from service.store import InvalidCursor
from service.store._base import Cursor

router = APIRouter(tags=["admin"], route_class=VigilRoute)


@router.get(
    "/v1/admin/models",
    response_model=ModelsPage,
    responses=problem_responses(401, 403, 422),
    summary="Model versions, newest first, with metrics and the active flag",
)
def list_models(
    _key: AdminKey, store: StoreDep, limit: Limit = 100, cursor: CursorParam = None
) -> ModelsPage:
    models = store.models.list()
    if cursor:
        try:
            after = Cursor.decode(cursor, "models")
        except InvalidCursor as exc:
            raise Unprocessable(str(exc), code="invalid_cursor") from exc
        models = [
            m for m in models if (to_epoch(m.created_at), m.version) < (after.score, after.member)
        ]
    page = models[:limit]
    next_cursor = None
    if len(models) > limit:
        last = page[-1]
        next_cursor = Cursor("models", to_epoch(last.created_at), last.version).encode()
    return ModelsPage(data=page, next_cursor=next_cursor)


@router.post(
    "/v1/admin/models/{version}/activate",
    response_model=ModelVersion,
    responses=problem_responses(401, 403, 404, 409),
    summary="Make a version the active model (also the rollback)",
)
def activate_model(
    version: str, key: AdminKey, store: StoreDep, settings: SettingsDep
) -> ModelVersion:
    """Workers use the active version for every job they start after this call."""
    model = store.models.get(version)
    if model is None:
        raise NotFound("no such model version", code="model_not_found")
    path = Path(model.path)
    if not (path if path.is_absolute() else settings.data_dir / path).is_file():
        raise Conflict("the checkpoint file of this version is missing", code="model_file_missing")
    activated = store.models.activate(version)
    if activated is None:  # removed between the two reads
        raise NotFound("no such model version", code="model_not_found")
    store.audit.append(key.key_id, AuditAction.activate_model, f"model:{version}")
    return activated
