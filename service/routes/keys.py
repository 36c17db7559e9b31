"""API keys: ``POST``/``GET /v1/admin/keys``, ``DELETE /v1/admin/keys/{key_id}``, ``GET /v1/me``."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import AdminKey, StoreDep, ViewerKey
from service.errors import Conflict, NotFound, problem_responses
from service.present import key_public
from service.routing import VigilRoute
from service.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    AuditAction,
    KeysPage,
    Me,
    Role,
)

router = APIRouter(tags=["keys"], route_class=VigilRoute)


@router.get(
    "/v1/me", response_model=Me, responses=problem_responses(401), summary="The calling key"
)
def me(key: ViewerKey) -> Me:
    return Me(key_id=key.key_id, name=key.name, role=key.role)


@router.post(
    "/v1/admin/keys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=problem_responses(401, 403, 413, 422),
    summary="Create an API key (the key is shown in this response only)",
)
def create_key(body: ApiKeyCreate, key: AdminKey, store: StoreDep) -> ApiKeyCreated:
    record, plaintext = store.api_keys.create(body.name, body.role)
    store.audit.append(key.key_id, AuditAction.create_key, f"key:{record.key_id}")
    return ApiKeyCreated(**key_public(record).model_dump(), key=plaintext)


@router.get(
    "/v1/admin/keys",
    response_model=KeysPage,
    responses=problem_responses(401, 403),
    summary="API keys (without secrets), revoked ones included",
)
def list_keys(_key: AdminKey, store: StoreDep) -> KeysPage:
    return KeysPage(data=[key_public(k) for k in store.api_keys.list()])


@router.delete(
    "/v1/admin/keys/{key_id}",
    response_model=ApiKeyPublic,
    responses=problem_responses(401, 403, 404, 409),
    summary="Revoke an API key",
)
def revoke_key(key_id: str, key: AdminKey, store: StoreDep) -> ApiKeyPublic:
    """Revoking is immediate and idempotent. The last live admin key cannot be revoked."""
    target = store.api_keys.get(key_id)
    if target is None:
        raise NotFound("no such key", code="key_not_found")
    if target.role is Role.admin and target.revoked_at is None:
        live_admins = [
            k for k in store.api_keys.list() if k.role is Role.admin and k.revoked_at is None
        ]
        if len(live_admins) <= 1:
            raise Conflict("this is the last live admin key", code="last_admin_key")
    revoked = store.api_keys.revoke(key_id)
    assert revoked is not None
    store.audit.append(key.key_id, AuditAction.revoke_key, f"key:{key_id}")
    return key_public(revoked)
