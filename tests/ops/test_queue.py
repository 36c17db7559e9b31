"""Queue semantics on the real Redis: claims, leases, reclaim, retries, failures, heartbeats."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from service.jobs import (
    AnalyzeSegmentPayload,
    AnalyzeSegmentResult,
    JobError,
    JobQueue,
    JobStatus,
    LeaseLost,
    QueueFull,
    RenderOverlayPayload,
    WorkerInfo,
    list_jobs_by_kind,
)
from service.keys import Keys


def _payload(n: int = 0) -> AnalyzeSegmentPayload:
    return AnalyzeSegmentPayload(
        stream_id="s1",
        segment_id=f"seg-{n}",
        video_path=f"segments/seg-{n}.mp4",
        start=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _result(segment_id: str) -> AnalyzeSegmentResult:
    return AnalyzeSegmentResult(
        segment_id=segment_id, model_version="m-1", frames=4, events=1, overlays=1
    )


def _make_queue(client: redis.Redis, prefix: str) -> JobQueue:
    return JobQueue(
        client,
        Keys(prefix),
        max_length=5,
        visibility_timeout_s=0.3,
        max_attempts=2,
        retry_backoff_s=0.2,
        worker_ttl_s=0.5,
    )


@pytest.fixture
def queue(redis_url: str, redis_prefix: str) -> Iterator[JobQueue]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield _make_queue(client, redis_prefix)
    client.close()


def test_bytes_responses_client_works_too(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)  # decode_responses off: replies are bytes
    queue = _make_queue(client, redis_prefix)
    job = queue.enqueue(_payload())
    claim = queue.claim("w1", block_s=0.1)
    queue.complete(claim, _result("seg-0"))
    assert queue.get(job.job_id).status is JobStatus.SUCCEEDED
    client.close()


def test_jobs_of_one_kind_page_newest_first_even_with_equal_times(
    redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)  # bytes replies: the listing decodes them itself
    queue = _make_queue(client, redis_prefix)
    analyses = [queue.enqueue(_payload(n)).job_id for n in range(3)]
    render = RenderOverlayPayload(
        stream_id="s1", segment_id="seg-0", offset_s=1.0, method="guided_backprop", label="fall"
    )
    renders = [queue.enqueue(render, job_id=f"j-r{n}").job_id for n in range(2)]
    # Two analyses created in the same instant: (time, id) still orders them totally.
    client.zadd(Keys(redis_prefix).jobs_by_kind("analyze_segment"), {analyses[1]: 5.0,
                                                                       analyses[2]: 5.0})
    pages, before = [], None
    while True:
        jobs, before = list_jobs_by_kind(queue, "analyze_segment", limit=1, before=before)
        pages.append([j.job_id for j in jobs])
        if before is None:
            break
    assert pages == [[analyses[0]], [max(analyses[1:])], [min(analyses[1:])]]
    jobs, more = list_jobs_by_kind(queue, "render_overlay", limit=10)
    assert [j.job_id for j in jobs] == renders[::-1] and more is None
    assert queue.get_many([renders[0], "nope"]) == [queue.get(renders[0]), None]
    client.close()


def test_enqueue_then_claim_and_complete(queue: JobQueue) -> None:
    job = queue.enqueue(_payload())
    assert (job.status, job.attempts, job.progress) == (JobStatus.QUEUED, 0, 0.0)
    claim = queue.claim("w1", block_s=0.1)
    assert claim is not None and claim.job_id == job.job_id
    assert claim.job.status is JobStatus.RUNNING and claim.job.attempts == 1
    assert queue.claim("w2", block_s=0.1) is None
    queue.progress(claim, 0.5)
    assert queue.get(job.job_id).progress == 0.5
    queue.complete(claim, _result("seg-0"))
    done = queue.get(job.job_id)
    assert done.status is JobStatus.SUCCEEDED and done.progress == 1.0
    assert done.result == _result("seg-0") and done.finished_at is not None
    assert queue.counts()[JobStatus.SUCCEEDED] == 1 and queue.depth() == 0
    assert queue.client.xlen(queue.keys.jobs_stream()) == 0  # settled entries are deleted


def test_queue_full_and_explicit_id_is_idempotent(queue: JobQueue) -> None:
    first = queue.enqueue(_payload(), job_id="j-fixed")
    assert queue.enqueue(_payload(), job_id="j-fixed").created_at == first.created_at
    for n in range(4):
        queue.enqueue(_payload(n))
    with pytest.raises(QueueFull) as info:
        queue.enqueue(_payload(9))
    assert info.value.depth == 5
    assert queue.counts()[JobStatus.QUEUED] == 5


def test_concurrent_claims_run_each_job_once(queue: JobQueue) -> None:
    queue.max_length = 100
    ids = {queue.enqueue(_payload(n)).job_id for n in range(30)}
    taken: list[str] = []
    lock = threading.Lock()

    def consume(name: str) -> None:
        while True:
            claim = queue.claim(name, block_s=0.05)
            if claim is None:
                return
            with lock:
                taken.append(claim.job_id)
            queue.complete(claim, _result("x"))

    threads = [threading.Thread(target=consume, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)


def test_dead_workers_job_is_reclaimed_and_old_owner_loses_lease(queue: JobQueue) -> None:
    job = queue.enqueue(_payload())
    dead = queue.claim("dead", block_s=0.1)
    assert queue.claim("alive", block_s=0.05) is None  # not yet past the visibility timeout
    time.sleep(0.35)
    claim = queue.claim("alive", block_s=0.05)
    assert claim is not None and claim.job_id == job.job_id and claim.job.attempts == 2
    with pytest.raises(LeaseLost):
        queue.complete(dead, _result("stale"))
    with pytest.raises(LeaseLost):
        queue.touch(dead)
    queue.complete(claim, _result("fresh"))
    assert queue.get(job.job_id).result.segment_id == "fresh"


def test_touch_keeps_the_lease(queue: JobQueue) -> None:
    queue.enqueue(_payload())
    claim = queue.claim("w1", block_s=0.1)
    for _ in range(4):
        time.sleep(0.15)
        queue.touch(claim)
        assert queue.claim("w2", block_s=0.01) is None
    queue.complete(claim, _result("seg-0"))


def test_transient_failure_retries_with_backoff_then_fails(queue: JobQueue) -> None:
    job = queue.enqueue(_payload())
    claim = queue.claim("w1", block_s=0.1)
    flaky = JobError(code="io", message="flaky")
    assert queue.fail(claim, flaky, permanent=False) is JobStatus.QUEUED
    queued = queue.get(job.job_id)
    assert queued.status is JobStatus.QUEUED and queued.error.code == "io"
    assert queue.claim("w1", block_s=0.05) is None  # still backing off (0.2 s)
    time.sleep(0.25)
    again = queue.claim("w1", block_s=0.1)
    assert again is not None and again.job.attempts == 2
    assert queue.fail(again, flaky, permanent=False) is JobStatus.FAILED
    failed = queue.get(job.job_id)
    assert failed.status is JobStatus.FAILED and failed.error.code == "io"
    assert queue.counts()[JobStatus.FAILED] == 1 and queue.depth() == 0


def test_permanent_failure_is_final_at_once(queue: JobQueue) -> None:
    job = queue.enqueue(_payload())
    claim = queue.claim("w1", block_s=0.1)
    error = JobError(code="no_video_stream", message="the file has no video stream")
    assert queue.fail(claim, error, permanent=True) is JobStatus.FAILED
    assert queue.get(job.job_id).error == error
    time.sleep(0.35)
    assert queue.claim("w2", block_s=0.05) is None


def test_release_requeues_without_counting_the_attempt(queue: JobQueue) -> None:
    job = queue.enqueue(_payload())
    claim = queue.claim("w1", block_s=0.1)
    queue.release(claim)
    assert queue.get(job.job_id).status is JobStatus.QUEUED
    again = queue.claim("w2", block_s=0.1)
    assert again.job_id == job.job_id and again.job.attempts == 1


def test_job_that_keeps_killing_workers_ends_as_worker_lost(queue: JobQueue) -> None:
    job = queue.enqueue(_payload())
    for name in ("w1", "w2"):
        assert queue.claim(name, block_s=0.1) is not None
        time.sleep(0.35)  # the worker dies: no touch, no settle
    assert queue.claim("w3", block_s=0.05) is None
    failed = queue.get(job.job_id)
    assert failed.status is JobStatus.FAILED and failed.error.code == "worker_lost"


def test_heartbeats_expire(queue: JobQueue) -> None:
    now = datetime.now(UTC)
    info = WorkerInfo(worker_id="w1", hostname="h", pid=1, started_at=now, beat_at=now)
    queue.heartbeat(info)
    assert [w.worker_id for w in queue.live_workers()] == ["w1"]
    time.sleep(0.6)
    assert queue.live_workers() == []
    queue.heartbeat(info.model_copy(update={"beat_at": datetime.now(UTC)}))
    queue.remove_worker("w1")
    assert queue.live_workers() == []


def test_expired_job_is_requeued_by_a_busy_workers_reclaimer(queue: JobQueue) -> None:
    job = queue.enqueue(_payload())
    dead = queue.claim("dead", block_s=0.1)
    assert queue.requeue_expired("busy") == []  # not yet past the visibility timeout
    time.sleep(0.35)
    assert queue.requeue_expired("busy") == [job.job_id]
    requeued = queue.get(job.job_id)
    assert (requeued.status, requeued.attempts, requeued.worker) == (JobStatus.QUEUED, 1, None)
    assert queue.counts()[JobStatus.RUNNING] == 0 and queue.depth() == 1
    with pytest.raises(LeaseLost):
        queue.touch(dead)
    again = queue.claim("free", block_s=0.1)  # a plain read of the stream: a new entry
    assert again is not None and again.job_id == job.job_id and again.job.attempts == 2
    queue.complete(again, _result("fresh"))
    assert queue.client.xpending(queue.keys.jobs_stream(), "workers")["pending"] == 0


def test_requeue_of_a_job_out_of_attempts_fails_it_as_worker_lost(queue: JobQueue) -> None:
    job = queue.enqueue(_payload())
    for name in ("w1", "w2"):  # max_attempts = 2 starts, both die
        assert queue.claim(name, block_s=0.1) is not None
        time.sleep(0.35)
        if name == "w1":
            assert queue.requeue_expired("reaper") == [job.job_id]
    assert queue.requeue_expired("reaper") == [job.job_id]
    failed = queue.get(job.job_id)
    assert failed.status is JobStatus.FAILED and failed.error.code == "worker_lost"
    assert queue.claim("w3", block_s=0.05) is None


def test_stream_lock_is_a_lease_and_never_blocks(queue: JobQueue) -> None:
    lease = queue.lock_stream("bed-1", "w1", ttl_s=0.5)
    assert lease is not None and lease.token.startswith("w1:")
    assert queue.lock_stream("bed-1", "w2", ttl_s=0.5) is None  # held: None at once
    assert queue.lock_stream("bed-2", "w2", ttl_s=0.5) is not None  # other streams are free
    assert 0.0 < queue.stream_lock_remaining_s("bed-1") <= 0.5
    assert queue.renew_stream_lock(lease)
    assert queue.unlock_stream(lease) and not queue.unlock_stream(lease)
    assert queue.stream_lock_remaining_s("bed-1") == 0.0
    stale = queue.lock_stream("bed-1", "w1", ttl_s=0.2)
    time.sleep(0.25)  # the holder died: its lease expires by itself
    taken = queue.lock_stream("bed-1", "w2", ttl_s=0.5)
    assert taken is not None
    assert not queue.renew_stream_lock(stale) and not queue.unlock_stream(stale)
    assert queue.renew_stream_lock(taken)
    # A lease w2 left behind (a job that ended without releasing it) is w2's to take again.
    assert queue.lock_stream("bed-1", "w2", ttl_s=0.5) is not None
    assert queue.lock_stream("bed-1", "w22", ttl_s=0.5) is None  # a prefix is not the owner


def test_defer_gives_the_job_back_for_a_while_without_counting_the_attempt(
    queue: JobQueue,
) -> None:
    job = queue.enqueue(_payload())
    claim = queue.claim("w1", block_s=0.1)
    queue.defer(claim, 0.2)
    deferred = queue.get(job.job_id)
    assert (deferred.status, deferred.attempts) == (JobStatus.QUEUED, 0)
    assert queue.claim("w2", block_s=0.05) is None  # waiting out its delay
    with pytest.raises(LeaseLost):
        queue.complete(claim, _result("stale"))
    time.sleep(0.25)
    again = queue.claim("w2", block_s=0.1)
    assert again is not None and again.job.attempts == 1


def test_claim_recreates_a_lost_consumer_group(queue: JobQueue) -> None:
    queue.enqueue(_payload())
    queue.client.delete(queue.keys.jobs_stream())  # e.g. Redis restarted without its data
    assert queue.claim("w1", block_s=0.05) is None  # NOGROUP: no error, the group is recreated
    job = queue.enqueue(_payload(1))
    claim = queue.claim("w1", block_s=0.1)
    assert claim is not None and claim.job_id == job.job_id
