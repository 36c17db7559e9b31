"""Bearer API keys with three roles: ``viewer`` < ``ingest`` < ``admin``.

Keys are stored as sha256 hashes (``service.store.admin.ApiKeyRepo``). A request presents
``Authorization: Bearer <key>``; :func:`require` builds the dependency that checks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized
from service.schemas import ApiKey, Role
from service.store import Store

logger = logging.getLogger(__name__)

# auto_error=False: a missing header becomes our own problem+json 401, not FastAPI's 403.
bearer_scheme = HTTPBearer(
    auto_error=False, description="An API key: `Authorization: Bearer <key>`."
)


def require(role: Role) -> Callable[..., ApiKey]:
    """A dependency returning the caller's key if it is live and at least ``role``.

    401 ``missing_credentials`` without a Bearer key, 401 ``invalid_credentials`` for an
    unknown or revoked key, 403 ``insufficient_role`` for a weaker role.
    """

    def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),  # noqa: B008
    ) -> ApiKey:
        if credentials is None or not credentials.credentials:
            raise Unauthorized(
                "an API key is required (Authorization: Bearer <key>)", code="missing_credentials"
            )
        store: Store = request.app.state.store
        key = store.api_keys.verify(credentials.credentials)
        if key is None:
            raise Unauthorized("the API key is unknown or revoked")
        if not key.role.allows(role):
            raise Forbidden(
                f"this endpoint needs the {role.value} role; the key has {key.role.value}"
            )
        request.state.api_key = key
        return key

    dependency.__name__ = f"require_{role.value}"
    return dependency


def ensure_admin_key(store: Store, bootstrap: SecretStr | None) -> str | None:
    """Make sure an admin key exists; returns a new key's plaintext when one was created.

    With ``bootstrap`` (``VIGIL_BOOTSTRAP_ADMIN_KEY``, for automation) that value becomes an
    admin key if it is not one already, and nothing is returned (the caller knows it). Without
    it, and with no live admin key, a random admin key is created and returned once so the
    entry point can print it.
    """
    if bootstrap is not None:
        value = bootstrap.get_secret_value()
        if store.api_keys.verify(value) is None:
            store.api_keys.create("bootstrap-admin", Role.admin, plaintext=value)
            logger.info("imported the bootstrap admin key")
        return None
    if store.api_keys.has_live(Role.admin):
        return None
    _, plaintext = store.api_keys.create("first-admin", Role.admin)
    logger.info("created the first admin key")
    return plaintext
