"""One error hierarchy for the API and one ``application/problem+json`` renderer.

Every error response has ``type``, ``title``, ``status``, ``detail`` and a stable ``code``
(the table in ``docs/api.md``). Routes raise :class:`ApiError` subclasses; FastAPI's request
validation errors and Starlette's own 404/405 go through the same renderer, so a client
never sees another error shape. Details never contain patient data (no file names, no video
content), only ids the caller already sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from service.schemas import Problem

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a detail for people."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or type(self).code
        self.status = status or type(self).status
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "invalid_credentials"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code = 403, "insufficient_role"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class RangeNotSatisfiable(ApiError):
    status, code = 416, "range_not_satisfiable"


class Unprocessable(ApiError):
    status, code = 422, "unprocessable"


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"


class BadGateway(ApiError):
    status, code = 502, "job_failed"


def problem(status: int, code: str, detail: str) -> Problem:
    """One problem document."""
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return Problem(
        type=f"urn:vigil:problem:{code}", title=title, status=status, detail=detail, code=code
    )


def problem_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Render one problem document."""
    return JSONResponse(
        problem(status, code, detail).model_dump(),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(exc.status, exc.code, exc.detail, exc.headers)


# Query parameters whose validation failure has a code of its own (issue 5: "422 bad start").
_FIELD_CODES = {
    ("query", "start"): "invalid_start",
    ("query", "cursor"): "invalid_cursor",
    ("path", "stream_id"): "invalid_stream_id",
}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    code = "validation_error"
    parts = []
    for error in errors[:5]:
        loc = tuple(str(p) for p in error.get("loc", ()))
        code = _FIELD_CODES.get(loc[:2], code) if code == "validation_error" else code
        # Only the location and pydantic's message: never echo the rejected input.
        parts.append(f"{'.'.join(loc)}: {error.get('msg', 'invalid')}")
    return problem_response(422, code, "; ".join(parts) or "invalid request")


_HTTP_CODES = {
    400: "bad_request",
    401: "invalid_credentials",
    403: "insufficient_role",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path (for ``Allow``).

    Starlette's own 405 names only the methods of the first route that matched the path, so a
    path with a ``GET`` and a ``POST`` route got ``Allow: POST`` for a ``DELETE``. Mounts
    (static files) answer their own 405s and are not asked here.
    """
    found = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        for route in request.app.router.routes:
            if isinstance(route, Mount):
                continue
            match, _ = route.matches(dict(scope))
            if match is Match.FULL:
                found.append(method)
                break
    return found


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods = allowed_methods(request) or [
            m.strip() for m in headers.get("Allow", "").split(",") if m.strip()
        ]
        headers["Allow"] = ", ".join(methods)
    return problem_response(exc.status_code, code, detail, headers)


async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
    logger.error("redis unavailable: %s", type(exc).__name__)
    return problem_response(
        503, "redis_unavailable", "the data store is unreachable", {"Retry-After": "5"}
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return problem_response(500, "internal_error", "an unexpected error occurred")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error type of the app through the problem renderer."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(redis.ConnectionError, _redis_down)
    app.add_exception_handler(redis.TimeoutError, _redis_down)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` entries documenting problem+json bodies for ``statuses``."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


# --- Redis unavailable, whatever the error class (appended with worker/consumer's outage work) --
# ConnectionError/TimeoutError go to ``_redis_down`` above; this catches the rest of redis-py's
# errors: a server out of memory under ``noeviction`` (``OOM``, writes refused until memory is
# freed), still loading its data (``LOADING``), a read-only replica after a failover, ...:
# 503 ``redis_unavailable`` + ``Retry-After``, never a 500. Other Redis errors stay 500s.

STORE_RETRY_AFTER_S = 5


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    from service.outage import is_out_of_memory, is_store_unavailable

    if not is_store_unavailable(exc):
        return await _unexpected(request, exc)
    logger.error("redis unavailable: %s: %s", type(exc).__name__, exc)
    detail = (
        "the data store is out of memory and refuses writes"
        if is_out_of_memory(exc)
        else "the data store is unavailable"
    )
    return problem_response(
        503, "redis_unavailable", detail, {"Retry-After": str(STORE_RETRY_AFTER_S)}
    )


def install_store_error_handlers(app: FastAPI) -> None:
    """Map every "Redis cannot serve this now" error to 503 + ``Retry-After`` (call after
    :func:`install_error_handlers`)."""
    app.add_exception_handler(redis.RedisError, _redis_error)
