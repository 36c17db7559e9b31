"""The queue consumer behind ``vigil worker``: claim, run, settle; heartbeats; graceful stop.

One :class:`Consumer` runs one job at a time in the calling thread; a daemon thread sends the
worker's heartbeat and renews the lease of the running job (``JobQueue.touch``) every
``heartbeat_interval_s``. Scale out by running more consumers (processes or machines) on the
same Redis: they share one consumer group.

Failures are recorded on the job, never swallowed:

* a bad video (:class:`worker.decode.DecodeError`) or a :class:`JobFailure` marked permanent
  ends the job as ``failed`` with its code;
* anything else is transient: retried with backoff up to ``max_attempts``;
* a lost lease (another worker reclaimed the job) abandons the run; results are idempotent.

Redis outages never end the worker (``docs/operations.md``, "Redis outages"): every Redis error
of the claim loop (lost connection, timeout, a server loading its data, ``OOM`` under
``noeviction``, ...) is waited out with capped, jittered exponential backoff
(:class:`service.outage.Backoff`), then the worker registers again and claims on. A job that
an outage interrupts is settled once Redis answers again (a transient ``store_unavailable``
failure, retried with the usual backoff); if Redis stays away past the visibility timeout the
job is left to the reclaim path. Either way it is neither lost nor stuck.

Per-stream locks: an analysis holds its stream's lock (``JobQueue.lock_stream``) for the whole
job, as a lease with a short TTL (``stream_lock_ttl_s``) that the heartbeat renews and that is
released on every exit path. A worker that finds a stream locked defers that job for a moment
(``JobQueue.defer``; the attempt is not counted) and takes other work, so a worker killed while
holding a lock delays only its own stream, and only until the lease expires. The handlers'
own ``store.r.lock(<the stream's lock>)`` is that lease (:class:`_LeaseAwareRedis`).

Reclaim: besides the claim loop, the heartbeat thread requeues jobs whose lease expired
(``JobQueue.requeue_expired``), so a dead worker's job is back on the queue about one
visibility timeout after its worker's last renewal even when every live worker is busy.

Stopping: :meth:`Consumer.request_stop` (SIGTERM) lets the running job finish, up to
``grace_s``; after that, or on a second request, the job is interrupted at its next progress
report and *released* back to the queue (its attempt is not counted), so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import redis

from service.jobs import (
    AnalyzeSegmentPayload,
    AnalyzeSegmentResult,
    Claim,
    JobError,
    JobQueue,
    JobStatus,
    LeaseLost,
    RenderOverlayPayload,
    RenderOverlayResult,
    TrainPayload,
    TrainResult,
    WorkerInfo,
)
from service.jobs.queue import StreamLease
from service.outage import Backoff, is_store_unavailable
from service.store import Store
from worker.handlers import (
    JobFailure,
    ModelProvider,
    WorkerConfig,
    analyze_segment,
    mark_segment_failed,
    render_overlay_job,
)

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
STREAM_BUSY_RETRY_S = 2.0  # a job of a locked stream is tried again after at most this long


class Interrupted(Exception):
    """Raised inside a job when the worker must stop now; the job is released, not failed."""


class StreamLockLost(Exception):
    """Raised inside a job whose stream lock lapsed (its lease was not renewed in time, e.g.
    Redis was unreachable longer than the TTL): another worker may be writing the stream's
    events, so the job is given back to the queue and runs again."""


class _HeldStreamLock:
    """What ``store.r.lock(name)`` gives a handler for the stream lock its job already holds.

    The consumer took the lock before the job started and releases it when the job ends, so
    entering this only checks (by renewing the lease) that it is still this worker's; leaving
    it keeps the lease.
    """

    def __init__(self, consumer: Consumer, lease: StreamLease) -> None:
        self._consumer = consumer
        self._lease = lease

    def acquire(self, *_args: object, **_kwargs: object) -> bool:
        self._consumer._confirm_stream_lock(self._lease)
        return True

    def release(self) -> None:
        """Nothing: the lease is released when the job ends."""

    def locked(self) -> bool:
        return True

    def owned(self) -> bool:
        return True

    def __enter__(self) -> _HeldStreamLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


class _LeaseAwareRedis(redis.Redis):
    """The client the handlers get (same connection pool as the worker's): ``lock(name)`` of
    the stream lock the running job holds returns that lease; any other lock is redis-py's."""

    def __init__(self, base: redis.Redis, held: Callable[[str], _HeldStreamLock | None]) -> None:
        super().__init__(connection_pool=base.connection_pool)
        self._vigil_held = held

    def lock(self, name: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        key = name.decode() if isinstance(name, bytes) else str(name)
        held = self._vigil_held(key)
        return held if held is not None else super().lock(name, *args, **kwargs)


def new_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in ``/readyz`` and logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Consumer:
    """Runs jobs from ``queue`` until stopped.

    Args:
        queue: the job queue.
        store: typed Redis access for results.
        config: data folder, analysis rate, device, limits.
        heartbeat_interval_s: heartbeat and lease renewal period (well under the visibility
            timeout).
        grace_s: how long a running job may take to finish after a stop request.
        worker_id: consumer name in the group (default: host, pid, random suffix).
        stream_lock_ttl_s: life of a per-stream lock lease unless renewed (at least 3
            heartbeat intervals, so that two missed beats do not lose it).
        reconnect_backoff_s: first wait after a Redis error; doubles per failure...
        reconnect_backoff_max_s: ...up to this cap (each wait jittered in its upper half).
    """

    def __init__(
        self,
        queue: JobQueue,
        store: Store,
        config: WorkerConfig,
        *,
        heartbeat_interval_s: float = 5.0,
        grace_s: float = 30.0,
        worker_id: str | None = None,
        stream_lock_ttl_s: float = 15.0,
        reconnect_backoff_s: float = 0.5,
        reconnect_backoff_max_s: float = 30.0,
    ) -> None:
        self.queue = queue
        self.store = store
        self.config = config
        self.models = ModelProvider(config)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.grace_s = grace_s
        self.worker_id = worker_id or new_worker_id()
        self.started_at = datetime.now(UTC)
        self.stream_lock_ttl_s = max(stream_lock_ttl_s, 3 * heartbeat_interval_s)
        if self.stream_lock_ttl_s > stream_lock_ttl_s:
            logger.warning(
                "stream lock TTL raised to %.1fs (3 heartbeat intervals)", self.stream_lock_ttl_s
            )
        self._backoff = Backoff(
            reconnect_backoff_s, max(reconnect_backoff_s, reconnect_backoff_max_s)
        )
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._lease_lost = threading.Event()
        self._stream_lock_lost = threading.Event()
        self._store_down = threading.Event()
        self._stop_requested_at: float | None = None
        self._claim: Claim | None = None
        self._lease: StreamLease | None = None
        self._deferred = False
        self._last_progress = 0.0
        # What the handlers write through: the same Redis, with the job's stream lock as lease.
        self._job_store = Store(_LeaseAwareRedis(store.r, self._held_stream_lock), store.keys)

    # -- control ----------------------------------------------------------------------------

    def request_stop(self, *, immediate: bool = False) -> None:
        """Stop after the running job (or interrupt and release it when ``immediate`` or
        when asked a second time)."""
        if self._stop.is_set() or immediate:
            self._interrupt.set()
        self._stop.set()
        self._stop_requested_at = self._stop_requested_at or time.monotonic()
        logger.info(
            "worker %s stopping (%s)",
            self.worker_id,
            "now" if self._interrupt.is_set() else "after the running job",
        )

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT -> :meth:`request_stop` (main thread only)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            logger.info("signal %s received", signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_for_stop(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s`` unless a stop is requested; True when one is."""
        return self._stop.wait(timeout_s)

    # -- loop -------------------------------------------------------------------------------

    def run(self, *, burst: bool = False, max_jobs: int | None = None, block_s: float = 1.0) -> int:
        """Process jobs until stopped (``burst``: also when the queue is empty). Returns the
        number of jobs handled."""
        beat = threading.Thread(target=self._heartbeat_loop, name="vigil-heartbeat", daemon=True)
        self._beat()
        beat.start()
        handled = 0
        logger.info("worker %s consuming", self.worker_id)
        try:
            while not self._stop.is_set():
                try:
                    claim = self.queue.claim(self.worker_id, block_s=block_s)
                except Exception as exc:  # Redis away (or a bad record): wait, then claim again
                    self._claim_failed(exc)
                    continue
                self._store_back()
                if claim is None:
                    if burst:
                        break
                    continue
                if self._stop.is_set():  # stop arrived while the claim was in flight
                    self._safe_release(claim)
                    break
                try:
                    status = self.process(claim)
                except Exception:  # e.g. an unexpected Redis reply: the job is reclaimed later
                    logger.exception("job %s could not be settled", claim.job_id)
                    self._stop.wait(self._backoff.next_delay())
                    continue
                if status is JobStatus.QUEUED and self._deferred:
                    continue  # its stream was locked: not a handled job
                handled += 1
                if max_jobs is not None and handled >= max_jobs:
                    break
        finally:
            self._stop.set()
            beat.join(timeout=self.heartbeat_interval_s + 1)
            try:
                self.queue.remove_worker(self.worker_id)
            except redis.RedisError as exc:  # its heartbeat expires by itself
                logger.warning("worker %s not deregistered: %s", self.worker_id, exc)
            logger.info("worker %s stopped after %d jobs", self.worker_id, handled)
        return handled

    @property
    def store_available(self) -> bool:
        """False while this worker sees Redis unavailable (and waits to reconnect)."""
        return not self._store_down.is_set()

    def _claim_failed(self, exc: Exception) -> None:
        delay = self._backoff.next_delay()
        if is_store_unavailable(exc):
            self._note_store_down(exc)
        else:
            logger.error(
                "worker %s: claiming failed; again in %.1fs", self.worker_id, delay, exc_info=exc
            )
        logger.debug("worker %s: next claim in %.2fs", self.worker_id, delay)
        self._stop.wait(delay)

    def _note_store_down(self, exc: BaseException) -> None:
        if not self._store_down.is_set():
            self._store_down.set()
            logger.warning(
                "worker %s: Redis unavailable (%s: %s); retrying with backoff",
                self.worker_id,
                type(exc).__name__,
                exc,
            )

    def _store_back(self) -> None:
        """After a successful Redis call of the claim loop: forget the outage, register again."""
        self._backoff.reset()
        if self._store_down.is_set():
            self._store_down.clear()
            logger.info("worker %s: Redis reachable again; resuming", self.worker_id)
            self._beat()

    def process(self, claim: Claim) -> JobStatus | None:
        """Run one claimed job and settle it; returns its new status (None: lease lost, or
        left to the reclaim path). A job whose stream is locked is deferred (``QUEUED``)."""
        self._claim, self._last_progress = claim, 0.0
        self._deferred = False
        self._lease_lost.clear()
        self._stream_lock_lost.clear()
        try:
            try:
                if not self._lock_stream(claim):
                    self._deferred = True
                    return JobStatus.QUEUED
                result = self._dispatch(claim)
            except LeaseLost:
                logger.warning("job %s: lease lost to another worker; result dropped", claim.job_id)
                return None
            except Interrupted:
                return JobStatus.QUEUED if self._settle(claim, self.queue.release) else None
            except StreamLockLost:
                logger.warning("job %s: its stream lock lapsed; the job runs again", claim.job_id)
                return JobStatus.QUEUED if self._settle(claim, self.queue.release) else None
            except Exception as exc:  # every failure is recorded on the job
                return self._fail(claim, exc)
            if not self._settle(claim, lambda c: self.queue.complete(c, result)):
                return None
            if isinstance(claim.job.payload, AnalyzeSegmentPayload):
                try:
                    self.store.add_frames_analysed(getattr(result, "frames", 0))
                except redis.RedisError as exc:  # a metric; the job is settled
                    logger.warning("frames counter not updated: %s", exc)
            return JobStatus.SUCCEEDED
        finally:
            self._claim = None
            self._unlock_stream()

    # -- internals --------------------------------------------------------------------------

    def _dispatch(self, claim: Claim) -> AnalyzeSegmentResult | RenderOverlayResult | TrainResult:
        payload = claim.job.payload
        progress = self._progress_fn(claim)
        loaded = self.models.current(self.store)
        store = self._job_store
        if isinstance(payload, AnalyzeSegmentPayload):
            return analyze_segment(store, self.config, loaded, payload, progress)
        if isinstance(payload, RenderOverlayPayload):
            return render_overlay_job(store, self.config, loaded, payload, progress)
        if isinstance(payload, TrainPayload):
            from worker.retrain import run_training

            return run_training(store, self.config, loaded, claim.job_id, payload.spec, progress)
        raise JobFailure("unknown_kind", f"no handler for {payload.kind}", permanent=True)

    def _progress_fn(self, claim: Claim) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            if self._interrupt.is_set():
                raise Interrupted(claim.job_id)
            if self._lease_lost.is_set():
                raise LeaseLost(claim.job_id)
            if self._stream_lock_lost.is_set():
                raise StreamLockLost(claim.job_id)
            now = time.monotonic()
            if self._store_down.is_set():  # the heartbeat keeps trying to renew the lease
                return
            if now - self._last_progress >= PROGRESS_EVERY_S or fraction >= 1.0:
                self._last_progress = now
                try:
                    self.queue.progress(claim, fraction)
                except redis.RedisError as exc:
                    if not is_store_unavailable(exc):
                        raise
                    self._note_store_down(exc)  # a blip must not cost the job its work

        return report

    # -- per-stream locks -------------------------------------------------------------------

    def _lock_stream(self, claim: Claim) -> bool:
        """Take the lock of the job's stream (analyses only); when another worker holds it,
        defer the job for a moment and return False."""
        payload = claim.job.payload
        if not isinstance(payload, AnalyzeSegmentPayload):
            return True
        lease = self.queue.lock_stream(payload.stream_id, self.worker_id, self.stream_lock_ttl_s)
        if lease is not None:
            self._lease = lease
            return True
        remaining = self.queue.stream_lock_remaining_s(payload.stream_id)
        delay = min(STREAM_BUSY_RETRY_S, max(0.1, remaining))
        logger.info(
            "job %s: stream %s is locked by another worker (%.1fs left); deferred %.1fs",
            claim.job_id,
            payload.stream_id,
            remaining,
            delay,
        )
        self._settle(claim, lambda c: self.queue.defer(c, delay))
        return False

    def _held_stream_lock(self, key: str) -> _HeldStreamLock | None:
        lease = self._lease
        return _HeldStreamLock(self, lease) if lease is not None and lease.key == key else None

    def _confirm_stream_lock(self, lease: StreamLease) -> None:
        if self._stream_lock_lost.is_set() or not self.queue.renew_stream_lock(lease):
            self._stream_lock_lost.set()
            raise StreamLockLost(lease.stream_id)

    def _unlock_stream(self) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            self.queue.unlock_stream(lease)
        except redis.RedisError as exc:  # it expires by itself within its TTL
            logger.warning("stream lock of %s not released: %s", lease.stream_id, exc)

    # -- settling through outages -----------------------------------------------------------

    def _settle(self, claim: Claim, action: Callable[[Claim], object]) -> bool:
        """Run one settlement of ``claim`` (complete, fail, release, defer), waiting out Redis
        outages with backoff. False when the lease was lost, or when Redis stayed unavailable
        past the visibility timeout (or an immediate stop came first): the job is then left to
        the reclaim path."""
        deadline = time.monotonic() + self.queue.visibility_timeout_s
        backoff = Backoff(self._backoff.base_s, self._backoff.max_s)
        while True:
            try:
                action(claim)
                return True
            except LeaseLost:
                logger.warning("job %s: lease lost before it was settled", claim.job_id)
                return False
            except redis.RedisError as exc:
                if not is_store_unavailable(exc):
                    raise
                self._note_store_down(exc)
                delay = backoff.next_delay()
                if self._interrupt.is_set() or time.monotonic() + delay >= deadline:
                    logger.warning(
                        "job %s not settled (Redis unavailable); left to the reclaim path",
                        claim.job_id,
                    )
                    return False
                self._interrupt.wait(delay)

    def _fail(self, claim: Claim, exc: Exception) -> JobStatus | None:
        from worker.decode import DecodeError

        if isinstance(exc, DecodeError):
            code, message, permanent = exc.code, exc.message, True
        elif isinstance(exc, JobFailure):
            code, message, permanent = exc.code, exc.message, exc.permanent
        elif is_store_unavailable(exc):  # an outage, not the job's fault: retried
            self._note_store_down(exc)
            logger.warning("job %s interrupted: Redis unavailable", claim.job_id)
            code, message = "store_unavailable", f"Redis unavailable: {type(exc).__name__}: {exc}"
            permanent = False
        else:
            logger.exception("job %s raised", claim.job_id)
            code, message, permanent = "internal_error", f"{type(exc).__name__}: {exc}", False
        error = JobError(code=code, message=message[:500])
        outcome: list[JobStatus] = []
        if not self._settle(
            claim, lambda c: outcome.append(self.queue.fail(c, error, permanent=permanent))
        ):
            return None
        status = outcome[0]
        payload = claim.job.payload
        if status is JobStatus.FAILED and isinstance(payload, AnalyzeSegmentPayload):
            try:
                mark_segment_failed(self.store, payload.segment_id, code, message[:500])
            except redis.RedisError as exc2:  # the job holds the error too
                logger.warning("segment of job %s not marked failed: %s", claim.job_id, exc2)
        return status

    def _safe_release(self, claim: Claim) -> None:
        with contextlib.suppress(LeaseLost, redis.RedisError):
            self.queue.release(claim)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s) or self._claim is not None:
            try:
                self._check_grace()
                self._beat()
                if not self._stop.is_set():
                    self._requeue_expired()
            except Exception:  # the heartbeat thread must outlive any surprise
                logger.exception("heartbeat of %s failed", self.worker_id)
            if self._stop.is_set() and self._claim is not None:
                time.sleep(min(1.0, self.heartbeat_interval_s))

    def _requeue_expired(self) -> None:
        """Dead workers' jobs back onto the queue, even while this worker is busy."""
        try:
            self.queue.requeue_expired(self.worker_id)
        except redis.RedisError as exc:
            if not is_store_unavailable(exc):
                logger.warning("requeueing expired jobs failed: %s", exc)

    def _check_grace(self) -> None:
        started = self._stop_requested_at
        if started is not None and time.monotonic() - started > self.grace_s:
            self._interrupt.set()

    def _beat(self) -> None:
        """Renew the running job's lease and its stream lock first (both still work when Redis
        is out of memory), then the worker's registration (refused then, so that ``/readyz``
        stops counting a worker that cannot write)."""
        claim, lease = self._claim, self._lease
        info = WorkerInfo(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            beat_at=datetime.now(UTC),
            current_job=None if claim is None else claim.job_id,
            model_version=self.models.version,
            device=self.config.device,
        )
        try:
            try:
                if claim is not None:
                    self.queue.touch(claim)
            except LeaseLost:
                if self._claim is claim:  # not a job that finished meanwhile
                    self._lease_lost.set()
            lapsed = lease is not None and not self.queue.renew_stream_lock(lease)
            if lapsed and self._lease is lease:  # not a lock released meanwhile
                logger.warning("worker %s lost its stream lock", self.worker_id)
                self._stream_lock_lost.set()
            self.queue.heartbeat(info)
        except Exception as exc:  # Redis hiccup: try again next beat; the lease has slack
            if is_store_unavailable(exc):
                self._note_store_down(exc)
            else:
                logger.warning("heartbeat of %s failed", self.worker_id, exc_info=True)
            return
        if self._store_down.is_set() and self._claim is not None:
            # Redis is back while a job runs (the claim loop, which would notice, is busy).
            self._store_down.clear()
            logger.info("worker %s: Redis reachable again", self.worker_id)


def build_consumer(
    settings: object,
    *,
    redis_url: str | None = None,
    grace_s: float = 30.0,
    worker_id: str | None = None,
) -> Consumer:
    """A consumer wired from ``service.config.Settings`` (entry points only)."""
    from service.config import Settings
    from service.keys import Keys

    assert isinstance(settings, Settings)
    url = redis_url or settings.redis_url
    if not url:
        raise ValueError("no Redis URL: set VIGIL_REDIS_URL (or run `vigil serve`)")
    # Timeouts: a Redis behind a dead network path fails the call (then the worker backs off)
    # instead of hanging it; the claim's blocking read lasts 1 s. (These options suit TCP and
    # unix sockets alike: the embedded Redis of `vigil serve` is a unix socket.)
    client = redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5.0,
        socket_timeout=15.0,
        health_check_interval=30,
    )
    store = Store(client, Keys(settings.redis_prefix))
    queue = JobQueue.from_settings(client, settings)
    return Consumer(
        queue,
        store,
        WorkerConfig.from_settings(settings),
        heartbeat_interval_s=settings.heartbeat_interval_s,
        grace_s=grace_s,
        worker_id=worker_id,
        stream_lock_ttl_s=settings.stream_lock_ttl_s,
        reconnect_backoff_max_s=settings.reconnect_backoff_max_s,
    )
