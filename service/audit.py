"""Audit of every access attempt: :class:`AuditMiddleware` and the table of audited routes.

Every call of a route in :data:`READS` (patient data and admin reads) is recorded with its
outcome, whatever it is (200, 304, 401, 403, 404, 422 ...). Writes record their success in the
route (the new resource's id is known there, e.g. ``segment:<id>``); this middleware records
their failed attempts (status >= 400) from :data:`WRITES`. The entry is written before the
response starts, through the one path :meth:`service.store.admin.AuditRepo.append`.

Who: the id of the live key (``request.state.api_key``), else ``anonymous`` with the first 12
hex digits of sha256 of the key that was sent, if one was (never the key). What: the route
template and the resource (``event:<id>``, ``stream:<id>``, ...), never content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import bearer_token
from service.errors import STORE_RETRY_AFTER_S, problem_response
from service.schemas import AuditAction
from service.store import Store
from service.store.admin import hash_key

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Audited:
    """How a route is audited: the action, and the resource from a path parameter."""

    action: AuditAction
    kind: str
    param: str | None = None

    def resource(self, path_params: dict[str, object]) -> str:
        """``kind:<param value>``, or ``kind`` for a route without a resource id."""
        if self.param is None:
            return self.kind
        return f"{self.kind}:{path_params.get(self.param, '')}"


A = AuditAction
READS: dict[tuple[str, str], Audited] = {
    ("GET", "/v1/jobs/{job_id}"): Audited(A.read_job, "job", "job_id"),
    ("GET", "/v1/streams"): Audited(A.list_streams, "streams"),
    ("GET", "/v1/streams/{stream_id}/events"): Audited(A.read_timeline, "stream", "stream_id"),
    ("GET", "/v1/events/{event_id}"): Audited(A.read_event, "event", "event_id"),
    ("GET", "/v1/events/{event_id}/overlay"): Audited(A.read_overlay, "event", "event_id"),
    ("GET", "/v1/segments/{segment_id}"): Audited(A.read_segment, "segment", "segment_id"),
    ("GET", "/v1/segments/{segment_id}/video"): Audited(A.read_video, "segment", "segment_id"),
    ("GET", "/v1/streams/{stream_id}/labels"): Audited(A.read_labels, "stream", "stream_id"),
    ("GET", "/v1/admin/training-jobs"): Audited(A.list_training_jobs, "training-jobs"),
    ("GET", "/v1/admin/training-jobs/{job_id}"): Audited(A.read_training_job, "job", "job_id"),
    ("GET", "/v1/admin/models"): Audited(A.list_models, "models"),
    ("GET", "/v1/admin/audit"): Audited(A.read_audit, "audit"),
    ("GET", "/v1/admin/audit/export"): Audited(A.export_audit, "audit"),
    ("GET", "/v1/admin/keys"): Audited(A.list_keys, "keys"),
}
"""Reads audited with every outcome."""

WRITES: dict[tuple[str, str], Audited] = {
    ("POST", "/v1/streams/{stream_id}/segments"): Audited(A.upload_segment, "stream", "stream_id"),
    ("POST", "/v1/streams/{stream_id}/labels"): Audited(A.create_label, "stream", "stream_id"),
    ("POST", "/v1/admin/training-jobs"): Audited(A.create_training_job, "training-jobs"),
    ("POST", "/v1/admin/models/{version}/activate"): Audited(A.activate_model, "model", "version"),
    ("POST", "/v1/admin/keys"): Audited(A.create_key, "keys"),
    ("DELETE", "/v1/admin/keys/{key_id}"): Audited(A.revoke_key, "key", "key_id"),
}
"""Writes: their route records success; failed attempts are recorded here."""


def _who(scope: Scope) -> tuple[str, str]:
    """(key id, key hash prefix): the live key's id, or ``anonymous`` and the sent key's hash."""
    key = scope.get("state", {}).get("api_key")
    if key is not None:
        return key.key_id, ""
    token = bearer_token(Request(scope))
    return ANONYMOUS, hash_key(token)[:12] if token else ""


class AuditMiddleware:
    """Pure ASGI middleware: records audited routes before their response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        refused = False

        async def send_wrapper(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the body of an answer replaced by the 503 below
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if not await self._record(scope, status) and status < 400:
                    # Patient data is not served without its trace.
                    refused = True
                    unavailable = problem_response(
                        503,
                        "redis_unavailable",
                        "the audit log is unavailable",
                        {"Retry-After": str(STORE_RETRY_AFTER_S)},
                    )
                    await unavailable(scope, receive, send)
                    return
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _record(self, scope: Scope, status: int) -> bool:
        """Record the call if its route is audited; False when the entry could not be written."""
        template = getattr(scope.get("route"), "path", None)
        if template is None:
            return True
        method = scope["method"]
        audited = READS.get((method, template))
        if audited is None and status >= 400:
            audited = WRITES.get((method, template))
        if audited is None:
            return True
        store: Store | None = getattr(scope["app"].state, "store", None)
        if store is None:
            return True
        key_id, key_hash = _who(scope)
        resource = audited.resource(scope.get("path_params", {}))
        try:
            await run_in_threadpool(
                store.audit.append,
                key_id,
                audited.action,
                resource,
                status,
                route=f"{method} {template}",
                key_hash=key_hash,
            )
        except redis.RedisError as exc:
            logger.error("writing an audit entry failed (%s %s): %s", method, template, exc)
            return False
        return True
