"""Property-based run over the app's own OpenAPI document (schemathesis, bounded examples).

Every operation is called with generated valid and invalid inputs and an admin key; no response
may be a 5xx, use an undocumented status or media type, or break its documented schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.config import Settings
from service.jobs import JobQueue, WorkerInfo
from service.main import create_app
from service.schemas import Role
from service.store import Store

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schemathesis.serializer("video/mp4")
def _video(_ctx: schemathesis.SerializationContext, value: object) -> bytes:
    """Generated 'binary' bodies for the raw-video upload (they are not videos: 4xx expected)."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture
def admin_key(redis_url: str, redis_prefix: str) -> Iterator[str]:
    """An admin key, and one live worker heartbeat so that /readyz may answer 200 (its 503 is
    by design when no worker runs, and would count as a server error here)."""
    store = Store.from_url(redis_url, redis_prefix)
    _, key = store.api_keys.create("schemathesis", Role.admin)
    now = datetime.now(UTC)
    beat = WorkerInfo(worker_id="w-test", hostname="test", pid=1, started_at=now, beat_at=now)
    JobQueue(store.r, store.keys).heartbeat(beat)
    store.close()
    yield key


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation, from the app's schema (pure: no Redis is touched)."""
    document = create_app(Settings(redis_url="redis://unused")).openapi()
    return sorted(
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    )


# schemathesis' pytest loader (`from_fixture`) does not work with pytest 9, so each operation
# is a parametrized test that builds its own app (own Redis prefix) and runs a Hypothesis test.
@pytest.mark.parametrize(("method", "path"), _operations(), ids=lambda v: str(v))
def test_api_conforms_to_its_schema(
    method: str, path: str, redis_url: str, redis_prefix: str, tmp_path: Path, admin_key: str
) -> None:
    settings = Settings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        max_upload_bytes=100_000,
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    operation = schema[path][method]
    headers = {"Authorization": f"Bearer {admin_key}"}

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
