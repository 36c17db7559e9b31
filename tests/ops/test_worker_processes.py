"""Real worker processes (`python -m worker`) on the real Redis: a worker killed with SIGKILL in
the middle of a job is replaced by another that finishes it (no duplicated, no missing events);
SIGTERM lets the running job finish, or releases it when the grace period is over."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from service.jobs import JobQueue, JobStatus
from service.store import Store
from tests.ops.conftest import (
    T0,
    TORCHVISION_JPEG,
    event_clip,
    register_model,
    worker_command,
    worker_env,
)
from tests.ops.test_consumer import STEP, live_events, make_consumer, submit

pytestmark = TORCHVISION_JPEG
TRUTH = [(4.0, 9.0), (20.0, 26.0), (40.0, 46.0)]
DURATION = 60.0


def _start(redis_url: str, prefix: str, data: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        worker_command(*args),
        env=worker_env(redis_url, prefix, data),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_running(queue: JobQueue, job_id: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the job runs and has reported some progress (the worker is mid-job)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job.status is JobStatus.RUNNING and 0.05 <= job.progress < 0.9:
            return
        assert job.status is not JobStatus.SUCCEEDED, "the job finished before the test could act"
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    raise AssertionError("the worker never got going")


def _check_events(store: Store) -> None:
    events = [e for e in live_events(store) if e.label == "square"]
    assert len(events) == len(TRUTH), [(e.start, e.end) for e in events]
    assert len({e.event_id for e in events}) == len(TRUTH)
    for event, (start, end) in zip(sorted(events, key=lambda e: e.start), TRUTH, strict=True):
        assert abs((event.start - T0).total_seconds() - start) <= STEP
        assert abs((event.end - T0).total_seconds() - end) <= STEP


@pytest.mark.slow
def test_killed_worker_is_replaced_and_the_job_finishes_once(
    tiny_checkpoint: Path,
    queue: JobQueue,
    store: Store,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
) -> None:
    register_model(store, tiny_checkpoint)
    data = tmp_path / "data"
    clip = event_clip(tmp_path / "long.mp4", TRUTH, duration_s=DURATION)
    job_id = submit(queue, store, data, clip, "seg-long", duration_s=DURATION)
    first = _start(redis_url, redis_prefix, data, "--id", "doomed")
    try:
        _wait_running(queue, job_id, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert queue.get(job_id).status is JobStatus.RUNNING  # still claimed by the dead worker
    second = _start(redis_url, redis_prefix, data, "--id", "heir", "--max-jobs", "1")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out.decode()[-3000:]
    job = queue.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2 and job.worker == "heir"
    _check_events(store)


@pytest.mark.slow
def test_sigterm_finishes_the_running_job_or_releases_it_after_the_grace(
    tiny_checkpoint: Path,
    queue: JobQueue,
    store: Store,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
) -> None:
    register_model(store, tiny_checkpoint)
    data = tmp_path / "data"
    clip = event_clip(tmp_path / "long.mp4", TRUTH, duration_s=DURATION)
    patient = submit(queue, store, data, clip, "seg-1", duration_s=DURATION)
    worker = _start(redis_url, redis_prefix, data, "--id", "patient")
    _wait_running(queue, patient, worker)
    assert any(w.worker_id == "patient" and w.current_job == patient for w in queue.live_workers())
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, out.decode()[-3000:]
    finished = queue.get(patient)
    assert finished.status is JobStatus.SUCCEEDED and finished.attempts == 1
    assert queue.live_workers() == []  # a clean stop leaves no heartbeat behind

    hurried = submit(queue, store, data, clip, "seg-2", duration_s=DURATION, stream_id="bed-2")
    worker = _start(redis_url, redis_prefix, data, "--id", "hurried", "--grace", "0")
    _wait_running(queue, hurried, worker)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out.decode()[-3000:]
    released = queue.get(hurried)
    assert released.status is JobStatus.QUEUED and released.attempts == 0
    make_consumer(queue, store, data).run(burst=True)  # another worker picks it up
    done = queue.get(hurried)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
    assert os.path.exists(data / "overlays" / "seg-2")
