"""Real worker processes (`python -m worker`) on the real Redis: a worker killed with SIGKILL in
the middle of a job is replaced by another that finishes it (no duplicated, no missing events);
SIGTERM lets the running job finish, or releases it when the grace period is over.

"In the middle of a job" is made deterministic by ``tests.ops.gated_worker``: the worker parks
after its first progress report until the test opens a gate (a tiny model on an idle machine
otherwise finishes a clip between two polls)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.jobs import JobQueue, JobStatus
from service.store import Store
from tests.ops.conftest import (
    T0,
    TORCHVISION_JPEG,
    event_clip,
    register_model,
    stop_processes,
    worker_command,
    worker_env,
)
from tests.ops.test_consumer import STEP, live_events, make_consumer, submit

pytestmark = TORCHVISION_JPEG
TRUTH = [(4.0, 9.0), (20.0, 26.0), (40.0, 46.0)]
DURATION = 60.0


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_worker_left_behind() -> Iterator[None]:
    """A failing test must not leave its worker processes running."""
    yield
    stop_processes(_STARTED)


def _start(
    redis_url: str, prefix: str, data: Path, *args: str, gate: Path | None = None
) -> subprocess.Popen[bytes]:
    """A worker process; with ``gate``, one that parks mid-job until ``gate/open`` exists."""
    command = worker_command(*args)
    if gate is not None:
        command = [sys.executable, "-m", "tests.ops.gated_worker", str(gate), *args]
    proc = subprocess.Popen(
        command,
        env=worker_env(redis_url, prefix, data),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _STARTED.append(proc)
    return proc


def _wait_parked(
    queue: JobQueue, job_id: str, proc: subprocess.Popen[bytes], gate: Path
) -> None:
    """Until the gated worker is parked in the middle of ``job_id``."""
    deadline = time.monotonic() + 120
    while not (gate / "parked").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the worker never got going"
        time.sleep(0.05)
    assert (gate / "parked").read_text() == job_id
    job = queue.get(job_id)
    assert job.status is JobStatus.RUNNING and 0.0 < job.progress < 1.0, job


def _wait_heartbeat(queue: JobQueue, worker_id: str, job_id: str) -> None:
    """Until the worker's heartbeat (every 0.5 s here) names the job it is running."""
    deadline = time.monotonic() + 30
    while not any(w.worker_id == worker_id and w.current_job == job_id
                  for w in queue.live_workers()):
        assert time.monotonic() < deadline, queue.live_workers()
        time.sleep(0.05)


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
    gate = tmp_path / "gate"
    first = _start(redis_url, redis_prefix, data, "--id", "doomed", gate=gate)
    _wait_parked(queue, job_id, first, gate)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
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
    gate = tmp_path / "gate-patient"
    worker = _start(redis_url, redis_prefix, data, "--id", "patient", gate=gate)
    _wait_parked(queue, patient, worker, gate)
    _wait_heartbeat(queue, "patient", patient)
    worker.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # the stop request is in before the job may go on
    assert queue.get(patient).status is JobStatus.RUNNING  # the job is not dropped on SIGTERM
    (gate / "open").touch()
    out, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, out.decode()[-3000:]
    finished = queue.get(patient)
    assert finished.status is JobStatus.SUCCEEDED and finished.attempts == 1
    assert queue.live_workers() == []  # a clean stop leaves no heartbeat behind

    hurried = submit(queue, store, data, clip, "seg-2", duration_s=DURATION, stream_id="bed-2")
    gate = tmp_path / "gate-hurried"  # never opened: only the grace period ends the job
    worker = _start(redis_url, redis_prefix, data, "--id", "hurried", "--grace", "0", gate=gate)
    _wait_parked(queue, hurried, worker, gate)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out.decode()[-3000:]
    released = queue.get(hurried)
    assert released.status is JobStatus.QUEUED and released.attempts == 0
    make_consumer(queue, store, data).run(burst=True)  # another worker picks it up
    done = queue.get(hurried)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
    assert os.path.exists(data / "overlays" / "seg-2")
