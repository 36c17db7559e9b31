"""Every endpoint of the app refuses no key, a revoked key and a too-weak role.

The endpoints are enumerated from the app's routes, so a new endpoint is covered (or makes
this test fail) without anybody remembering to add it.
"""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute

from service.config import Settings
from service.main import ROUTERS, create_app
from service.schemas import Role
from tests.service.conftest import Api

# Open by design: liveness/readiness probes and Prometheus scrapes carry no patient data.
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}


def _route_roles() -> dict[tuple[str, str], Role]:
    """Required role of each route of the app's routers (from its ``require_<role>`` dependency)."""
    roles = {}
    for module in ROUTERS:
        for route in module.router.routes:
            assert isinstance(route, APIRoute)
            for dep in route.dependant.dependencies:
                name = getattr(dep.call, "__name__", "")
                if name.startswith("require_"):
                    for method in route.methods:
                        roles[(method, route.path)] = Role(name.removeprefix("require_"))
    return roles


def endpoints() -> list[tuple[str, str, Role | None]]:
    """(method, path, required role) of every operation in the app's OpenAPI document, which is
    what clients can call; role None means no key is required."""
    schema = create_app(Settings(redis_url="redis://unused")).openapi()
    roles = _route_roles()
    found = []
    for path, operations in schema["paths"].items():
        for method in operations:
            found.append((method.upper(), path, roles.get((method.upper(), path))))
    return sorted(found)


ENDPOINTS = endpoints()


def test_every_endpoint_but_the_probes_needs_a_key() -> None:
    assert len(ENDPOINTS) >= 20
    unguarded = {(m, p) for m, p, role in ENDPOINTS if role is None}
    assert unguarded == PUBLIC


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "bed-1", path)


@pytest.mark.parametrize(
    ("method", "path", "role"), [e for e in ENDPOINTS if e[2] is not None], ids=lambda v: str(v)
)
def test_refuses_missing_revoked_and_weak_keys(
    api: Api, method: str, path: str, role: Role
) -> None:
    url = _url(path)
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}

    missing = api.client.request(method, url, params={"start": "2026-01-05T08:00:00Z"}, **body)
    assert missing.status_code == 401 and missing.json()["code"] == "missing_credentials"
    assert missing.headers["www-authenticate"] == "Bearer"

    record, key = api.store.api_keys.create("soon-revoked", role)
    api.store.api_keys.revoke(record.key_id)
    revoked = api.client.request(method, url, headers={"Authorization": f"Bearer {key}"}, **body)
    assert revoked.status_code == 401 and revoked.json()["code"] == "invalid_credentials"

    garbage = api.client.request(method, url, headers={"Authorization": "Bearer not-a-key"}, **body)
    assert garbage.status_code == 401 and garbage.json()["code"] == "invalid_credentials"

    for weaker in [r for r in Role if not r.allows(role)]:
        weak = api.client.request(method, url, headers=api.auth(weaker), **body)
        assert weak.status_code == 403 and weak.json()["code"] == "insufficient_role", (
            weaker,
            weak.text,
        )

    # The right role gets past authorization (whatever the resource then says).
    allowed = api.client.request(method, url, headers=api.auth(role), **body)
    assert allowed.status_code not in (401, 403), allowed.text


def test_roles_required_by_design() -> None:
    required = {(m, p): r for m, p, r in ENDPOINTS}
    assert required[("POST", "/v1/streams/{stream_id}/segments")] is Role.ingest
    assert required[("POST", "/v1/streams/{stream_id}/labels")] is Role.ingest
    assert required[("GET", "/v1/streams/{stream_id}/events")] is Role.viewer
    assert all(r is Role.admin for (m, p), r in required.items() if p.startswith("/v1/admin/"))
