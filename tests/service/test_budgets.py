"""Disk byte budgets and the per-key upload rate (issue "Never stall, never lose a trace",
item 2): 507 ``insufficient_storage`` and 429 ``rate_limited``, both with ``Retry-After``, and
nothing stored or queued for a refused upload."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import service.ingest
from service.config import Settings
from service.main import create_app
from service.schemas import Role
from tests.service.conftest import T0, Api, upload
from tests.service.test_api_errors import assert_problem


@contextmanager
def api_with(settings: Settings, **limits: int) -> Iterator[Api]:
    app = create_app(settings.model_copy(update=limits))
    with TestClient(app) as client:
        store = app.state.store
        keys = {role: store.api_keys.create(f"test-{role.value}", role)[1] for role in Role}
        yield Api(client, store, app.state.queue, app.state.settings, keys)


def _chunked(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


def _files(api: Api) -> list[Path]:
    return sorted((api.settings.data_dir / "segments").glob("*"))


def test_stream_budget_is_507_and_counts_bytes(settings: Settings, clip: Path) -> None:
    size = clip.stat().st_size
    with api_with(settings, stream_disk_budget_bytes=2 * size + size // 2) as api:
        assert upload(api, clip).status_code == 202
        assert upload(api, clip, start=_later(1)).status_code == 202
        refused = upload(api, clip, start=_later(2))  # the declared length is over: up front
        assert_problem(refused, 507, "insufficient_storage")
        assert int(refused.headers["Retry-After"]) > 0
        assert api.queue.depth() == 2 and len(_files(api)) == 2
        assert upload(api, clip, stream="bed-2").status_code == 202  # another stream's budget
        keys, r = api.store.keys, api.store.r
        assert int(r.get(keys.stream_disk_bytes("bed-1"))) == 2 * size
        assert int(r.get(keys.disk_bytes())) == 3 * size


def test_budget_checked_on_the_actual_size_at_commit(settings: Settings, clip: Path) -> None:
    size = clip.stat().st_size
    with api_with(settings, disk_budget_bytes=size + size // 2) as api:
        assert upload(api, clip).status_code == 202
        refused = api.client.post(  # chunked: no Content-Length to check up front
            "/v1/streams/bed-2/segments",
            params={"start": _later(1).isoformat()},
            content=_chunked(clip.read_bytes()),
            headers={**api.auth(Role.ingest), "Content-Type": "video/mp4"},
        )
        assert_problem(refused, 507, "insufficient_storage")
        assert "Retry-After" in refused.headers
        assert api.queue.depth() == 1 and len(_files(api)) == 1
        assert not api.store.streams.exists("bed-2")
        assert int(api.store.r.get(api.store.keys.disk_bytes())) == size


def test_no_budget_by_default(api: Api, clip: Path) -> None:
    assert api.settings.disk_budget_bytes == 0 and api.settings.stream_disk_budget_bytes == 0
    for i in range(3):
        assert upload(api, clip, start=_later(i)).status_code == 202


def test_upload_rate_per_key_is_429(
    settings: Settings, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_800_000_000.0 + 15]  # 45 s before the end of a minute window
    monkeypatch.setattr(service.ingest, "_clock", lambda: now[0])
    with api_with(settings, upload_rate_per_minute=2) as api:
        first = upload(api, clip, **{"Idempotency-Key": "one"})
        assert first.status_code == 202
        assert upload(api, clip, start=_later(1)).status_code == 202
        refused = upload(api, clip, start=_later(2))
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["Retry-After"] == "45"
        assert api.queue.depth() == 2 and len(_files(api)) == 2
        # a retried request is answered before any limit
        replay = upload(api, clip, **{"Idempotency-Key": "one"})
        assert replay.status_code == 202 and replay.json() == first.json()
        # the limit is per key
        admin = api.client.post(
            "/v1/streams/bed-1/segments",
            params={"start": _later(3).isoformat()},
            content=clip.read_bytes(),
            headers={**api.auth(Role.admin), "Content-Type": "video/mp4"},
        )
        assert admin.status_code == 202, admin.text
        now[0] += 60  # the next window
        assert upload(api, clip, start=_later(4)).status_code == 202


def _later(i: int) -> datetime:
    return T0 + timedelta(minutes=i)
