"""The route class of every ``/v1`` router: authenticate first, then read a bounded body.

FastAPI reads and parses a route's JSON body *before* it runs the route's dependencies, so the
Bearer-key check of :func:`service.auth.require` would come after the whole body has been
received, of any size. :class:`VigilRoute` runs that check (401/403) before the body is read,
and limits JSON bodies to ``Settings.max_json_body_bytes`` (413 ``payload_too_large``, on the
declared ``Content-Length`` before reading, else while reading). Video uploads have no body
field; :mod:`service.ingest` streams them with a limit of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from service.auth import authenticate, bearer_token
from service.errors import PayloadTooLarge
from service.schemas import Role

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def required_role(dependant: Dependant) -> Role | None:
    """The role of the route's ``require(role)`` dependency (searched depth first), or None."""
    for dependency in dependant.dependencies:
        role = getattr(dependency.call, "vigil_role", None)
        if isinstance(role, Role):
            return role
        role = required_role(dependency)
        if role is not None:
            return role
    return None


def limit_body(request: Request, max_bytes: int) -> Request:
    """``request`` whose body may hold at most ``max_bytes`` (413 ``payload_too_large``)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the request body exceeds the limit of {max_bytes} bytes")
    upstream = request.receive
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await upstream()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                # FastAPI re-raises HTTPException from body parsing (anything else becomes a
                # generic 400); the problem renderer maps 413 to payload_too_large.
                raise StarletteHTTPException(
                    413, detail=f"the request body exceeds the limit of {max_bytes} bytes"
                )
        return message

    return Request(request.scope, receive)


class VigilRoute(APIRoute):
    """An ``APIRoute`` that authenticates before the body is read and bounds JSON bodies."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        role = required_role(self.dependant)
        has_body = self.body_field is not None

        async def guarded(request: Request) -> Response:
            if role is not None:
                await run_in_threadpool(authenticate, request, role, bearer_token(request))
            if has_body:
                request = limit_body(request, request.app.state.settings.max_json_body_bytes)
            return await handler(request)

        return guarded
