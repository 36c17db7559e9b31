"""Never stall, never lose a trace: workers and the API through Redis outages, dead workers'
stream locks and jobs.

* a Redis restarted under a running worker (a redis-server of the test's own): the worker
  waits, reconnects, settles the job the outage interrupted and runs later jobs;
* a Redis out of memory (``maxmemory`` + ``noeviction``): the API answers 503 + Retry-After
  (problem+json), and everything resumes once memory is freed;
* a worker SIGKILLed while holding a stream's lock delays only that stream, for about the
  lock's TTL; other streams' jobs run at once;
* a dead worker's job is requeued about one visibility timeout after its last renewal even
  while every live worker is busy;
* ``vigil serve``'s worker threads are restarted when they die.

Mid-job states are made deterministic with gates (events), as in ``tests.ops.gated_worker``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from service.config import Settings
from service.jobs import Claim, JobQueue, JobStatus
from service.keys import Keys
from service.main import create_app
from service.outage import Backoff, is_store_unavailable
from service.schemas import Role
from service.store import Store
from tests.ops.conftest import TORCHVISION_JPEG, event_clip, register_model, worker_env
from tests.ops.test_consumer import submit
from worker.consumer import Consumer
from worker.handlers import WorkerConfig

pytestmark = TORCHVISION_JPEG
PARK_AT = 0.05


def _wait(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until it is true; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic()


def _done(queue: JobQueue, job_id: str) -> bool:
    job = queue.get(job_id)
    return job is not None and job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)


# --- a redis-server of the test's own -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server on a free port (append-only, fsync always) that the test may stop and
    start again. It dies with the test process (parent-death signal) and in the teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            _wait(lambda: self._answers(probe), 15, "redis-server to answer")
        finally:
            probe.close()

    def _answers(self, probe: redis.Redis) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: the AOF is complete), as in a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --- an in-process worker that parks mid-job --------------------------------------------------


class GatedConsumer(Consumer):
    """A production consumer whose first job parks (still reporting progress, so the lease and
    interrupts keep working) once it reached ``PARK_AT``, until ``gate`` is set."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.parked = threading.Event()
        self.gate = threading.Event()
        self.settling_while_down = threading.Event()
        self._parked_once = False

    def _progress_fn(self, claim: Claim) -> Callable[[float], None]:
        report = super()._progress_fn(claim)

        def gated(fraction: float) -> None:
            report(fraction)
            if self._parked_once or not PARK_AT <= fraction < 1.0:
                return
            self._parked_once = True
            self.parked.set()
            while not self.gate.wait(0.05):
                report(fraction)

        return gated

    def _settle(self, claim: Claim, action: Callable[[Claim], object]) -> bool:
        if not self.store_available:
            self.settling_while_down.set()
        return super()._settle(claim, action)


def _config(data: Path) -> WorkerConfig:
    return WorkerConfig(data_dir=data, analysis_fps=2.0, device="cpu")


@contextlib.contextmanager
def _running(consumer: Consumer) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=consumer.run, kwargs={"block_s": 0.2}, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        if hasattr(consumer, "gate"):
            consumer.gate.set()
        consumer.request_stop(immediate=True)
        thread.join(timeout=30)


# --- 1. Redis outages ------------------------------------------------------------------------


def test_backoff_is_capped_and_jittered() -> None:
    draws = iter([0.0, 1.0] * 10)
    backoff = Backoff(0.5, 4.0, rng=lambda: next(draws))
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == [0.25, 1.0, 1.0, 4.0, 2.0, 4.0, 2.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.25
    assert is_store_unavailable(redis.ConnectionError("refused"))
    assert is_store_unavailable(redis.exceptions.BusyLoadingError("loading"))
    assert is_store_unavailable(redis.exceptions.OutOfMemoryError("command not allowed"))
    assert is_store_unavailable(redis.ResponseError("MASTERDOWN Link with MASTER is down"))
    assert not is_store_unavailable(redis.ResponseError("WRONGTYPE Operation against a key"))


def test_worker_survives_a_redis_restart_and_finishes_later_jobs(
    tiny_checkpoint: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    keys = Keys("vigil:")
    store = Store(client, keys)
    queue = JobQueue(client, keys, visibility_timeout_s=3.0, retry_backoff_s=0.1, worker_ttl_s=2.0)
    register_model(store, tiny_checkpoint)
    data = tmp_path / "data"
    clip = event_clip(tmp_path / "clip.mp4", [(1.0, 3.0)], duration_s=4.0)
    first = submit(queue, store, data, clip, "seg-1", duration_s=4.0)
    consumer = GatedConsumer(
        queue,
        store,
        _config(data),
        heartbeat_interval_s=0.2,
        worker_id="survivor",
        reconnect_backoff_s=0.05,
        reconnect_backoff_max_s=0.5,
    )
    with _running(consumer) as thread:
        assert consumer.parked.wait(120), "the job never got going"
        own_redis.stop()  # Redis goes away in the middle of the job
        _wait(lambda: not consumer.store_available, 10, "the worker to see the outage")
        consumer.gate.set()  # the job goes on and hits the outage at its next write
        assert consumer.settling_while_down.wait(30), "the interrupted job was not settled"
        assert thread.is_alive()
        own_redis.start()  # same port, same AOF: the restart
        _wait(lambda: _done(queue, first), 60, "the interrupted job to finish")
        job = queue.get(first)
        assert job.status is JobStatus.SUCCEEDED, job.error
        assert job.attempts == 2 and job.worker == "survivor"  # retried once: never lost
        assert len(store.segments.get_frames("seg-1").times) == 8
        later = submit(queue, store, data, clip, "seg-2", offset_s=10.0, duration_s=4.0)
        _wait(lambda: _done(queue, later), 60, "a job queued after the restart")
        assert queue.get(later).status is JobStatus.SUCCEEDED
        assert thread.is_alive() and consumer.store_available
        assert "survivor" in {w.worker_id for w in queue.live_workers()}  # registered again
    client.close()


def _fill_until_out_of_memory(server: OwnRedis) -> redis.Redis:
    """Cap the server's memory just above what it uses, fill database 1 until writes are
    refused, then lower the cap a little more so that no freed buffer lets a write through."""
    admin = redis.Redis(port=server.port, db=1)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", used + 1_000_000)
    chunk = b"x" * 65536
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for n in range(1000):
            admin.set(f"filler:{n}", chunk)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used - 262_144)
    return admin


def test_out_of_memory_redis_gives_503_with_retry_after_then_resumes(
    tiny_checkpoint: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=own_redis.url,
        data_dir=tmp_path / "data",
        analysis_fps=2.0,
        device="cpu",
        heartbeat_interval_s=0.2,
        worker_ttl_s=1.0,
        max_upload_bytes=2_000_000,
        max_segment_duration_s=60.0,
    )
    clip = event_clip(tmp_path / "clip.mp4", [(1.0, 3.0)], duration_s=4.0)
    app = create_app(settings)
    with TestClient(app) as http:
        store: Store = app.state.store
        queue: JobQueue = app.state.queue
        register_model(store, tiny_checkpoint)
        _, key = store.api_keys.create("recorder", Role.ingest)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "video/mp4"}

        def upload(start: str) -> object:
            return http.post(
                "/v1/streams/bed-1/segments",
                params={"start": start},
                content=clip.read_bytes(),
                headers=auth,
            )

        consumer = Consumer(
            queue,
            store,
            _config(settings.data_dir),
            heartbeat_interval_s=0.2,
            worker_id="oom-worker",
            reconnect_backoff_s=0.05,
            reconnect_backoff_max_s=0.5,
        )
        with _running(consumer) as thread:
            accepted = upload("2026-02-01T09:00:00Z")
            assert accepted.status_code == 202, accepted.text
            _wait(lambda: _done(queue, accepted.json()["job_id"]), 60, "the first job")

            filler = _fill_until_out_of_memory(own_redis)
            refused = upload("2026-02-01T09:01:00Z")
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert int(refused.headers["retry-after"]) > 0
            assert refused.json()["code"] == "redis_unavailable"
            assert "memory" in refused.json()["detail"]
            read = http.get("/v1/jobs/" + accepted.json()["job_id"], headers=auth)
            assert read.status_code != 500, read.text  # reads may work; never a 500
            assert thread.is_alive()

            filler.flushdb()  # memory is freed: everything resumes
            filler.close()
            again = upload("2026-02-01T09:02:00Z")
            assert again.status_code == 202, again.text
            _wait(lambda: _done(queue, again.json()["job_id"]), 60, "a job after the outage")
            assert queue.get(again.json()["job_id"]).status is JobStatus.SUCCEEDED
            _wait(lambda: http.get("/readyz").status_code == 200, 10, "/readyz to be ready")
            assert http.get("/readyz").json()["live_workers"] == 1
            assert thread.is_alive()


# --- 2. a worker killed while holding a stream's lock ------------------------------------------


def test_killed_lock_holder_delays_only_its_stream_and_only_for_the_lock_ttl(
    tiny_checkpoint: Path,
    queue: JobQueue,
    store: Store,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    ttl_s = 3.0
    register_model(store, tiny_checkpoint)
    data = tmp_path / "data"
    clip = event_clip(tmp_path / "clip.mp4", [(1.0, 3.0)], duration_s=4.0)
    locked = submit(queue, store, data, clip, "s-1", duration_s=4.0, stream_id="bed-s")
    gate = tmp_path / "gate"
    env = worker_env(redis_url, redis_prefix, data, VIGIL_STREAM_LOCK_TTL_S=str(ttl_s))
    env.update(GATE_AT="put_frames", GATE_MAX_S="90")
    doomed = subprocess.Popen(
        [
            "setpriv",
            "--pdeathsig",
            "KILL",
            "--",
            sys.executable,
            "-m",
            "tests.ops.gated_worker",
            str(gate),
            "--id",
            "doomed",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    spawned.append(doomed)

    def parked() -> bool:
        assert doomed.poll() is None, doomed.stdout.read().decode()[-3000:]
        return (gate / "parked").exists()

    _wait(parked, 120, "the worker to park inside the stream lock")
    lock_key = store.keys.stream_timeline_lock("bed-s")
    assert store.r.exists(lock_key)  # held by the parked worker
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    killed_at = time.monotonic()

    same_stream = submit(
        queue, store, data, clip, "s-2", offset_s=10.0, duration_s=4.0, stream_id="bed-s"
    )
    other_stream = submit(queue, store, data, clip, "t-1", duration_s=4.0, stream_id="bed-t")
    consumer = Consumer(
        queue,
        store,
        _config(data),
        heartbeat_interval_s=0.5,
        worker_id="heir",
        stream_lock_ttl_s=ttl_s,
    )
    with _running(consumer):
        other_done = _wait(lambda: _done(queue, other_stream), 20, "the other stream's job")
        same_done = _wait(lambda: _done(queue, same_stream), 40, "the locked stream's new job")
        reclaimed_done = _wait(lambda: _done(queue, locked), 40, "the killed worker's job")
    timings = {
        "other_stream_s": other_done - killed_at,
        "locked_stream_s": same_done - killed_at,
        "killed_job_s": reclaimed_done - killed_at,
    }
    print(f"\nTIMINGS kill -> done: {timings}")
    for job_id in (other_stream, same_stream, locked):
        job = queue.get(job_id)
        assert job.status is JobStatus.SUCCEEDED, (job_id, job.error)
    assert queue.get(same_stream).attempts == 1  # waiting for the lock is not an attempt
    assert queue.get(locked).attempts == 2 and queue.get(locked).worker == "heir"
    assert other_done < same_done  # the other stream never waited behind the lock
    assert timings["other_stream_s"] < 15.0
    assert timings["locked_stream_s"] < ttl_s + 20.0  # about the TTL, not 300 s
    assert not store.r.exists(lock_key)  # released when the job ended


# --- 3. reclaim while every live worker is busy ------------------------------------------------


def test_dead_workers_job_is_requeued_while_the_live_worker_is_busy(
    tiny_checkpoint: Path, client: redis.Redis, store: Store, tmp_path: Path, redis_prefix: str
) -> None:
    visibility_s = 1.5
    queue = JobQueue(
        client, Keys(redis_prefix), visibility_timeout_s=visibility_s, retry_backoff_s=0.1
    )
    register_model(store, tiny_checkpoint)
    data = tmp_path / "data"
    clip = event_clip(tmp_path / "clip.mp4", [(1.0, 3.0)], duration_s=4.0)
    busy_job = submit(queue, store, data, clip, "b-1", duration_s=4.0, stream_id="bed-b")
    consumer = GatedConsumer(
        queue, store, _config(data), heartbeat_interval_s=0.2, worker_id="busy"
    )
    with _running(consumer):
        assert consumer.parked.wait(120), "the busy worker never got going"
        dead_job = submit(queue, store, data, clip, "d-1", duration_s=4.0, stream_id="bed-d")
        assert queue.claim("dead", block_s=0.5).job_id == dead_job  # then it dies
        claimed_at = time.monotonic()
        requeued_at = _wait(
            lambda: queue.get(dead_job).status is JobStatus.QUEUED,
            visibility_s + 5.0,
            "the dead worker's job to be requeued",
        )
        assert queue.get(busy_job).status is JobStatus.RUNNING  # the live worker is still busy
        print(
            f"\nTIMINGS dead claim -> requeued: {requeued_at - claimed_at:.2f}s "
            f"(visibility {visibility_s}s, heartbeat 0.2s)"
        )
        assert requeued_at - claimed_at < visibility_s + 1.5
        consumer.gate.set()
        _wait(lambda: _done(queue, dead_job), 60, "the requeued job")
    job = queue.get(dead_job)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2 and job.worker == "busy"
    assert queue.get(busy_job).status is JobStatus.SUCCEEDED


# --- 4. vigil serve: supervised worker threads --------------------------------------------------


def test_serve_restarts_a_dead_worker_thread(
    tiny_checkpoint: Path,
    queue: JobQueue,
    store: Store,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
) -> None:
    from cli.serve import running_workers
    from worker.consumer import build_consumer

    settings = Settings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        analysis_fps=2.0,
        device="cpu",
        heartbeat_interval_s=0.2,
    )
    register_model(store, tiny_checkpoint)
    built: list[Consumer] = []

    class Broken(Consumer):
        def run(self, **_kwargs: object) -> int:
            raise RuntimeError("a bug in the worker loop")

    def factory() -> Consumer:
        consumer = build_consumer(settings, grace_s=5.0)
        if not built:  # the first thread dies at once
            consumer = Broken(consumer.queue, consumer.store, consumer.config)
        built.append(consumer)
        return consumer

    clip = event_clip(tmp_path / "clip.mp4", [(1.0, 3.0)], duration_s=4.0)
    with running_workers(settings, 1, grace_s=5.0, factory=factory, restart_backoff_s=0.05) as sup:
        job_id = submit(queue, store, settings.data_dir, clip, "seg-1", duration_s=4.0)
        _wait(lambda: _done(queue, job_id), 60, "the job, run by the restarted worker")
        assert sup.restarts == 1 and len(built) == 2
        assert queue.get(job_id).worker == built[1].worker_id
        assert [c.worker_id for c in sup.consumers] == [built[1].worker_id]
    assert queue.live_workers() == []  # stopped cleanly
