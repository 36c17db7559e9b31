"""The audit trail against a real Redis: failed attempts, anonymous calls, coalescing, retention
by time, and the NDJSON export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from service.config import Settings
from service.schemas import AuditAction, Role
from service.store.admin import hash_key
from tests.service.conftest import Api, simulate_analysis, upload


def _key_id(api: Api, role: Role) -> str:
    key = api.store.api_keys.verify(api.keys[role])
    assert key is not None
    return key.key_id


def _entries(api: Api, **params: str) -> list[dict]:
    page = api.client.get("/v1/admin/audit", params=params, headers=api.auth())
    assert page.status_code == 200
    return page.json()["data"]


def test_failed_reads_are_audited_with_their_status(api: Api) -> None:
    viewer = api.auth(Role.viewer)
    assert api.client.get("/v1/events/ev-missing", headers=viewer).status_code == 404
    assert api.client.get("/v1/admin/keys", headers=viewer).status_code == 403
    assert api.client.get("/v1/jobs/job-missing", headers=viewer).status_code == 404
    got = [
        (e["action"], e["resource"], e["status"], e["route"])
        for e in reversed(_entries(api, key_id=_key_id(api, Role.viewer)))
    ]
    assert got == [
        (AuditAction.read_event, "event:ev-missing", 404, "GET /v1/events/{event_id}"),
        (AuditAction.list_keys, "keys", 403, "GET /v1/admin/keys"),
        (AuditAction.read_job, "job:job-missing", 404, "GET /v1/jobs/{job_id}"),
    ]


def test_unauthenticated_calls_are_audited_as_anonymous(api: Api) -> None:
    bogus = "vgl_not-a-real-key-0123456789"
    assert api.client.get("/v1/events/ev-1").status_code == 401
    headers = {"Authorization": f"Bearer {bogus}"}
    assert api.client.get("/v1/streams", headers=headers).status_code == 401
    anonymous = _entries(api, key_id="anonymous")
    got = [(e["action"], e["resource"], e["status"], e["key_hash"]) for e in reversed(anonymous)]
    assert got == [
        (AuditAction.read_event, "event:ev-1", 401, None),
        (AuditAction.list_streams, "streams", 401, hash_key(bogus)[:12]),
    ]
    raw = api.store.r.xrange(api.store.keys.audit())
    assert all(bogus not in value for _, fields in raw for value in fields.values())


def test_admin_reads_are_audited(api: Api) -> None:
    admin = api.auth()
    for path in ("/v1/admin/keys", "/v1/admin/models", "/v1/admin/audit"):
        assert api.client.get(path, headers=admin).status_code == 200
    actions = [e["action"] for e in _entries(api, key_id=_key_id(api, Role.admin))]
    assert {"list_keys", "list_models", "read_audit"} <= set(actions)


def test_polling_one_event_coalesces_into_one_entry(api: Api, clip: Path) -> None:
    segment_id = upload(api, clip).json()["segment_id"]
    event = simulate_analysis(api, segment_id)
    viewer = api.auth(Role.viewer)
    for _ in range(100):
        assert api.client.get(f"/v1/events/{event.event_id}", headers=viewer).status_code == 200
    reads = [
        e
        for e in _entries(api, key_id=_key_id(api, Role.viewer))
        if e["action"] == AuditAction.read_event
    ]
    assert [(e["resource"], e["status"], e["count"]) for e in reads] == [
        (f"event:{event.event_id}", 200, 100)
    ]
    # A different outcome is a different entry.
    api.client.get("/v1/events/ev-other", headers=viewer)
    assert len(api.store.r.xrange(api.store.keys.audit())) > 1


def test_retention_trims_by_time_not_by_count(api: Api) -> None:
    audit, stream = api.store.audit, api.store.keys.audit()
    assert audit.retention_days == api.settings.audit_retention_days == 365
    now = datetime.now(UTC)
    fields = {"key_id": "k-old", "action": "read_event", "resource": "event:x", "status": "200"}
    for days in (400, 366):
        moment = now - timedelta(days=days)
        entry_id = f"{int(moment.timestamp() * 1000)}-0"
        api.store.r.xadd(stream, {"time": repr(moment.timestamp()), **fields}, id=entry_id)
    kept_moment = now - timedelta(days=364)
    kept = f"{int(kept_moment.timestamp() * 1000)}-0"
    api.store.r.xadd(stream, {"time": repr(kept_moment.timestamp()), **fields}, id=kept)
    assert audit.trim() == 2  # also run by append, at most once an hour
    fresh = audit.append("k-new", AuditAction.read_event, "event:y", 200)
    assert [entry_id for entry_id, _ in api.store.r.xrange(stream)] == [kept, fresh]
    # No cap by count: many entries stay.
    for i in range(300):
        audit.append("k", AuditAction.read_event, f"event:{i}", 200)
    audit.trim()
    assert api.store.r.xlen(stream) == 302


def test_export_streams_ndjson_of_the_range_and_is_audited(api: Api) -> None:
    stream = api.store.keys.audit()
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for hour in range(5):
        moment = base + timedelta(hours=hour)
        api.store.r.xadd(
            stream,
            {
                "time": repr(moment.timestamp()),
                "key_id": f"k{hour}",
                "action": "read_event",
                "resource": f"event:e{hour}",
                "status": "200",
            },
            id=f"{int(moment.timestamp() * 1000)}-0",
        )
    response = api.client.get(
        "/v1/admin/audit/export",
        params={"since": "2026-03-01T01:00:00Z", "until": "2026-03-01T03:00:00Z"},
        headers=api.auth(),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["resource"] for line in lines] == ["event:e1", "event:e2", "event:e3"]
    assert all(line["count"] == 1 and line["status"] == 200 for line in lines)
    exports = [e for e in _entries(api) if e["action"] == AuditAction.export_audit]
    assert [(e["resource"], e["status"]) for e in exports] == [("audit", 200)]
    refused = api.client.get("/v1/admin/audit/export", headers=api.auth(Role.viewer))
    assert refused.status_code == 403
    backwards = api.client.get(
        "/v1/admin/audit/export",
        params={"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
        headers=api.auth(),
    )
    assert backwards.status_code == 422 and backwards.json()["code"] == "invalid_range"


def test_retention_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_AUDIT_RETENTION_DAYS", "30")
    assert Settings().audit_retention_days == 30


def test_successful_writes_record_their_status(api: Api, clip: Path) -> None:
    assert upload(api, clip).status_code == 202
    body = {"label": "fall", "start": "2026-01-05T08:00:01Z", "end": "2026-01-05T08:00:03Z"}
    labels = "/v1/streams/bed-1/labels"
    assert api.client.post(labels, json=body, headers=api.auth(Role.ingest)).status_code == 201
    assert api.client.post(labels, json=body, headers=api.auth(Role.viewer)).status_code == 403
    got = {(e["action"], e["status"]) for e in _entries(api) if e["action"] != "read_audit"}
    assert got == {("upload_segment", 202), ("create_label", 201), ("create_label", 403)}


def test_a_read_whose_trace_cannot_be_written_is_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_args: object, **_kwargs: object) -> str:
        raise redis.ConnectionError("audit down")

    monkeypatch.setattr(api.store.audit, "append", down)
    refused = api.client.get("/v1/streams", headers=api.auth(Role.viewer))
    assert refused.status_code == 503 and refused.json()["code"] == "redis_unavailable"
    assert "data" not in refused.json()
