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


def bearer_token(request: Request) -> str | None:
    """The key of ``Authorization: Bearer <key>``, or None (parsed as ``HTTPBearer`` does)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(request: Request, role: Role, token: str | None) -> ApiKey:
    """The caller's key if it is live and at least ``role`` (cached on the request).

    401 ``missing_credentials`` without a Bearer key, 401 ``invalid_credentials`` for an
    unknown or revoked key, 403 ``insufficient_role`` for a weaker role. Synchronous (one
    Redis lookup): call it from the thread pool in async code.
    """
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is None:
        if not token:
            raise Unauthorized(
                "an API key is required (Authorization: Bearer <key>)", code="missing_credentials"
            )
        store: Store = request.app.state.store
        key = store.api_keys.verify(token)
        if key is None:
            raise Unauthorized("the API key is unknown or revoked")
        request.state.api_key = key
    if not key.role.allows(role):
        raise Forbidden(f"this endpoint needs the {role.value} role; the key has {key.role.value}")
    return key


def require(role: Role) -> Callable[..., ApiKey]:
    """A dependency returning the caller's key if it is live and at least ``role``.

    Errors as :func:`authenticate`. Routes of :class:`service.routing.VigilRoute` run the same
    check before the request body is read; the dependency then finds the key on the request.
    """

    def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),  # noqa: B008
    ) -> ApiKey:
        token = credentials.credentials if credentials is not None else None
        return authenticate(request, role, token)

    dependency.__name__ = f"require_{role.value}"
    dependency.vigil_role = role  # type: ignore[attr-defined]
    return dependency


def ensure_admin_key(store: Store, bootstrap: SecretStr | None) -> str | None:
    """Make sure an admin key exists; returns a new key's plaintext when one was created.

    With ``bootstrap`` (``VIGIL_BOOTSTRAP_ADMIN_KEY``, for automation) that value becomes an
    admin key the first time it is seen, and nothing is returned (the caller knows it). The
    value's hash is remembered, so once an admin revokes that key a restart with the same
    value does not bring it back: it logs a warning instead. Without ``bootstrap``, and with
    no live admin key, a random admin key is created and returned once so the entry point
    can print it.
    """
    if bootstrap is not None:
        outcome = store.api_keys.import_bootstrap(bootstrap.get_secret_value())
        if outcome == "created":
            logger.info("imported the bootstrap admin key")
        elif outcome == "revoked":
            logger.warning(
                "VIGIL_BOOTSTRAP_ADMIN_KEY names a key that was revoked; it is not re-created "
                "(remove the setting, or set a new value to import a new admin key)"
            )
        return None
    if store.api_keys.has_live(Role.admin):
        return None
    _, plaintext = store.api_keys.create("first-admin", Role.admin)
    logger.info("created the first admin key")
    return plaintext
