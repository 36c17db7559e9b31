"""A segment whose analysis job failed for good is ``failed`` with the job's error, whatever
failed it: ``worker_lost`` (no worker settles it), a permanent failure, exhausted retries
(issue "Never stall, never lose a trace", item 5)."""

from __future__ import annotations

import time
from pathlib import Path

from service.jobs import JobError, JobQueue, JobStatus
from service.schemas import Role, SegmentStatus
from tests.service.conftest import Api, upload


def _queue(api: Api, **overrides: float) -> JobQueue:
    options = {"visibility_timeout_s": 0.05, "max_attempts": 1, "retry_backoff_s": 0.0}
    options.update(overrides)
    return JobQueue(api.store.r, api.store.keys, **options)


def _segment(api: Api, segment_id: str) -> dict:
    response = api.client.get(f"/v1/segments/{segment_id}", headers=api.auth(Role.viewer))
    assert response.status_code == 200
    return response.json()


def test_worker_lost_fails_the_segment(api: Api, clip: Path) -> None:
    accepted = upload(api, clip).json()
    queue = _queue(api)
    assert queue.claim("worker-that-dies", block_s=0.1) is not None  # ...and never settles
    time.sleep(0.1)
    assert queue.claim("next-worker", block_s=0.1) is None  # reclaimed: attempts exhausted
    job = queue.get(accepted["job_id"])
    assert job.status is JobStatus.FAILED and job.error.code == "worker_lost"
    stored = api.store.segments.get(accepted["segment_id"])
    assert stored.status is SegmentStatus.failed and stored.error.code == "worker_lost"
    shown = _segment(api, accepted["segment_id"])
    assert shown["status"] == "failed" and shown["error"]["code"] == "worker_lost"


def test_permanent_and_exhausted_failures_fail_the_segment(api: Api, clip: Path) -> None:
    permanent = upload(api, clip).json()
    queue = _queue(api, max_attempts=2)
    claim = queue.claim("w", block_s=0.1)
    error = JobError(code="undecodable", message="the first video frame cannot be decoded")
    assert queue.fail(claim, error, permanent=True) is JobStatus.FAILED
    stored = api.store.segments.get(permanent["segment_id"])
    assert stored.status is SegmentStatus.failed and stored.error.code == "undecodable"

    transient = upload(api, clip).json()
    boom = JobError(code="internal_error", message="RuntimeError: boom")
    claim = queue.claim("w", block_s=0.1)
    assert queue.fail(claim, boom, permanent=False) is JobStatus.QUEUED
    assert api.store.segments.get(transient["segment_id"]).status is SegmentStatus.queued
    claim = queue.claim("w", block_s=0.1)
    assert claim is not None and claim.job_id == transient["job_id"]
    assert queue.fail(claim, boom, permanent=False) is JobStatus.FAILED
    shown = _segment(api, transient["segment_id"])
    assert shown["status"] == "failed" and shown["error"]["code"] == "internal_error"


def test_a_stuck_record_is_shown_failed(api: Api, clip: Path) -> None:
    """Segments left ``queued`` by a failed job before the queue settled them."""
    accepted = upload(api, clip).json()
    queue = _queue(api)
    queue.claim("w1", block_s=0.1)
    time.sleep(0.1)
    queue.claim("w2", block_s=0.1)
    stuck = api.store.segments.get(accepted["segment_id"])
    api.store.segments.put(stuck.model_copy(update={"status": SegmentStatus.queued, "error": None}))
    shown = _segment(api, accepted["segment_id"])
    assert shown["status"] == "failed" and shown["error"]["code"] == "worker_lost"
