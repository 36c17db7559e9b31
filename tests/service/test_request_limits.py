"""Requests are authenticated before their body is read, bodies are bounded per route, and every
error the server produces, down to the HTTP parser's 400, is problem+json (issue "Never stall,
never lose a trace", items 7 and 11)."""

from __future__ import annotations

import json
import time

import pytest

from service.schemas import Role
from tests.service.conftest import Api, LiveApi, read_response
from tests.service.test_api_errors import assert_problem

BIG = 64 * 1024 * 1024  # declared, never sent


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("path", "content_type", "auth", "status", "code"),
    [
        ("/v1/streams/bed-1/labels", "application/json", None, 401, "missing_credentials"),
        ("/v1/streams/bed-1/labels", "application/json", "not-a-key", 401, "invalid_credentials"),
        ("/v1/admin/keys", "application/json", Role.viewer, 403, "insufficient_role"),
        (
            "/v1/streams/bed-1/segments?start=2026-01-05T08:00:00Z",
            "video/mp4",
            None,
            401,
            "missing_credentials",
        ),
    ],
    ids=["json-no-key", "json-bad-key", "json-weak-role", "upload-no-key"],
)
def test_refused_before_the_body_is_read(
    live_api: LiveApi, path: str, content_type: str, auth: Role | str | None, status: int, code: str
) -> None:
    headers = {"Content-Type": content_type, "Content-Length": str(BIG)}
    if auth is not None:
        token = live_api.keys[auth] if isinstance(auth, Role) else auth
        headers["Authorization"] = f"Bearer {token}"
    with live_api.connect(timeout_s=5.0) as conn:
        started = time.monotonic()
        conn.sendall(_head("POST", path, headers) + b"{" * 1024)  # 1 KiB of 64 MiB
        got, response_headers, body = read_response(conn)
    assert time.monotonic() - started < 5.0
    assert got == status and response_headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == code


def test_oversized_json_bodies_get_413(api: Api) -> None:
    admin = {**api.auth(), "Content-Type": "application/json"}
    huge = json.dumps({"name": "x" * (1024 * 1024), "role": "viewer"}).encode()
    declared = api.client.post("/v1/admin/keys", content=huge, headers=admin)
    assert_problem(declared, 413, "payload_too_large")
    streamed = api.client.post("/v1/admin/keys", content=iter([huge]), headers=admin)  # chunked
    assert_problem(streamed, 413, "payload_too_large")
    assert [k.name for k in api.store.api_keys.list()] == [f"test-{r.value}" for r in Role]
    # A body under the limit still works.
    body = {"name": "n" * 100, "role": "viewer"}
    assert api.client.post("/v1/admin/keys", json=body, headers=api.auth()).status_code == 201


def test_oversized_chunked_json_is_refused_while_it_streams(live_api: LiveApi) -> None:
    headers = {
        "Authorization": f"Bearer {live_api.keys[Role.admin]}",
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
    }
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"  # 64 KiB
    with live_api.connect() as conn:
        conn.sendall(_head("POST", "/v1/admin/keys", headers))
        for _ in range(20):  # 1.25 MiB, and the body never ends
            conn.sendall(chunk)
        status, response_headers, body = read_response(conn)
    assert status == 413 and response_headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "payload_too_large"


def test_unauthenticated_chunked_body_is_not_pulled(api: Api) -> None:
    pulled = []

    def chunks():
        for i in range(100):
            pulled.append(i)
            yield b"x" * 65536

    response = api.client.post(
        "/v1/streams/bed-1/labels", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 401, "missing_credentials")
    assert pulled == []


@pytest.mark.parametrize(
    "bad_header",
    ["Content-Length: abc", "Content-Length: -1", "Content-Length: 5\r\nContent-Length: 6"],
    ids=["not-a-number", "negative", "twice"],
)
def test_unparsable_requests_get_a_problem_400(live_api: LiveApi, bad_header: str) -> None:
    with live_api.connect() as conn:
        conn.sendall(
            f"POST /v1/streams/bed-1/labels HTTP/1.1\r\nHost: t\r\n{bad_header}\r\n\r\n".encode()
        )
        status, headers, body = read_response(conn)
    assert status == 400 and headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["code"] == "bad_request" and problem["status"] == 400
    assert set(problem) == {"type", "title", "status", "detail", "code"}


def test_vigil_serve_uses_the_problem_protocol(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    import uvicorn

    from cli.serve import serve_api
    from service.server import ProblemH11Protocol

    used = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: used.append(self.config))
    serve_api(settings)
    assert used and used[0].http is ProblemH11Protocol


def test_405_lists_every_method_of_the_path(api: Api) -> None:
    viewer = api.auth(Role.viewer)
    for method, path, allowed in [
        ("DELETE", "/v1/streams/bed-1/labels", "GET, POST"),
        ("PATCH", "/v1/admin/keys", "GET, POST"),
        ("PUT", "/v1/streams", "GET"),
        ("GET", "/v1/streams/bed-1/segments", "POST"),
    ]:
        response = api.client.request(method, path, headers=viewer)
        assert_problem(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allowed, (method, path)
