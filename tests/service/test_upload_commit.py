"""The upload commit is atomic (issue "Never stall, never lose a trace", item 1): the segment
record, its analysis job and the audit entry are written by one Lua script, and a failed commit
leaves nothing behind, neither records nor the video file."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from service.jobs import JobQueue
from service.store.admin import AuditRepo
from tests.service.conftest import Api, upload
from tests.service.test_api_errors import assert_problem


def _video_files(api: Api) -> list[Path]:
    return sorted((api.settings.data_dir / "segments").glob("*"))


def _assert_nothing_left(api: Api) -> None:
    keys, r = api.store.keys, api.store.r
    assert api.queue.depth() == 0
    assert r.zcard(keys.jobs_index()) == 0, "a job was left queued"
    assert r.zcard(keys.stream_segments("bed-1")) == 0, "a segment record was left"
    assert not api.store.streams.exists("bed-1")
    assert not r.keys(keys.segment("*"))
    assert int(r.get(keys.disk_bytes()) or 0) == 0
    assert _video_files(api) == [], "the video file was left on disk"


def _refuse(*_: object, **__: object) -> None:
    raise redis.ConnectionError("Connection reset by peer")


def test_failed_commit_leaves_no_segment_job_or_file(
    api: Api, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the atomic commit, the upload stored the segment, queued its job, and only then
    # wrote the audit entry: Redis failing at that write left the segment and its job queued
    # with the video deleted. Both failure points are closed here: the commit (today's one
    # step) and the audit write (yesterday's last step).
    monkeypatch.setattr(AuditRepo, "append", _refuse)
    monkeypatch.setattr(JobQueue, "commit_upload", _refuse, raising=False)
    response = upload(api, clip)
    assert_problem(response, 503, "redis_unavailable")
    assert response.headers["Retry-After"]
    monkeypatch.undo()
    _assert_nothing_left(api)
    assert upload(api, clip).status_code == 202  # and the next try goes through


def test_commit_refused_by_redis_midway_writes_nothing(api: Api, clip: Path) -> None:
    # A key of the wrong type would make a write inside the script fail after earlier writes
    # (Redis does not roll scripts back): the script checks every key before writing.
    api.store.r.set(api.store.keys.audit(), "not a stream")
    with pytest.raises(RuntimeError, match="wrongtype"):
        upload(api, clip)
    api.store.r.delete(api.store.keys.audit())
    _assert_nothing_left(api)


def test_commit_applied_but_reply_lost_is_accepted(
    api: Api, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = JobQueue.commit_upload

    def applied_then_lost(self: JobQueue, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)
        raise redis.ConnectionError("Connection closed by server")

    monkeypatch.setattr(JobQueue, "commit_upload", applied_then_lost)
    response = upload(api, clip)
    assert response.status_code == 202, response.text
    body = response.json()
    segment = api.store.segments.get(body["segment_id"])
    assert segment is not None and segment.job_id == body["job_id"]
    assert api.queue.get(body["job_id"]) is not None
    assert (api.settings.data_dir / segment.path).is_file()


def test_commit_outcome_unknown_keeps_the_video(
    api: Api, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JobQueue, "commit_upload", _refuse)
    monkeypatch.setattr(JobQueue, "get", _refuse)
    assert_problem(upload(api, clip), 503, "redis_unavailable")
    assert len(_video_files(api)) == 1  # its job may exist: the video is kept, and logged


def test_commit_writes_segment_job_audit_and_bytes_together(api: Api, clip: Path) -> None:
    response = upload(api, clip)
    assert response.status_code == 202, response.text
    body = response.json()
    keys, r = api.store.keys, api.store.r
    segment = api.store.segments.get(body["segment_id"])
    assert segment is not None and segment.size_bytes == clip.stat().st_size
    job = api.queue.get(body["job_id"])
    assert job is not None and job.status.value == "queued" and api.queue.depth() == 1
    assert api.store.streams.exists("bed-1")
    entries = [f for _, f in r.xrange(keys.audit()) if f["action"] == "upload_segment"]
    assert len(entries) == 1
    assert entries[0]["resource"] == f"segment:{body['segment_id']}"
    assert entries[0]["status"] == "202"
    assert int(r.get(keys.disk_bytes())) == segment.size_bytes
    assert int(r.get(keys.stream_disk_bytes("bed-1"))) == segment.size_bytes
    assert [p.name for p in _video_files(api)] == [Path(segment.path).name]
