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


class Interrupted(Exception):
    """Raised inside a job when the worker must stop now; the job is released, not failed."""


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
    ) -> None:
        self.queue = queue
        self.store = store
        self.config = config
        self.models = ModelProvider(config)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.grace_s = grace_s
        self.worker_id = worker_id or new_worker_id()
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._lease_lost = threading.Event()
        self._stop_requested_at: float | None = None
        self._claim: Claim | None = None
        self._last_progress = 0.0

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
                claim = self.queue.claim(self.worker_id, block_s=block_s)
                if claim is None:
                    if burst:
                        break
                    continue
                if self._stop.is_set():  # stop arrived while the claim was in flight
                    self._safe_release(claim)
                    break
                self.process(claim)
                handled += 1
                if max_jobs is not None and handled >= max_jobs:
                    break
        finally:
            self._stop.set()
            beat.join(timeout=self.heartbeat_interval_s + 1)
            self.queue.remove_worker(self.worker_id)
            logger.info("worker %s stopped after %d jobs", self.worker_id, handled)
        return handled

    def process(self, claim: Claim) -> JobStatus | None:
        """Run one claimed job and settle it; returns its new status (None: lease lost)."""
        self._claim, self._last_progress = claim, 0.0
        self._lease_lost.clear()
        try:
            result = self._dispatch(claim)
            self.queue.complete(claim, result)
            if isinstance(claim.job.payload, AnalyzeSegmentPayload):
                self.store.add_frames_analysed(getattr(result, "frames", 0))
            return JobStatus.SUCCEEDED
        except LeaseLost:
            logger.warning("job %s: lease lost to another worker; result dropped", claim.job_id)
            return None
        except Interrupted:
            self._safe_release(claim)
            return JobStatus.QUEUED
        except Exception as exc:  # every failure is recorded on the job
            return self._fail(claim, exc)
        finally:
            self._claim = None

    # -- internals --------------------------------------------------------------------------

    def _dispatch(self, claim: Claim) -> AnalyzeSegmentResult | RenderOverlayResult | TrainResult:
        payload = claim.job.payload
        progress = self._progress_fn(claim)
        loaded = self.models.current(self.store)
        if isinstance(payload, AnalyzeSegmentPayload):
            return analyze_segment(self.store, self.config, loaded, payload, progress)
        if isinstance(payload, RenderOverlayPayload):
            return render_overlay_job(self.store, self.config, loaded, payload, progress)
        if isinstance(payload, TrainPayload):
            from worker.retrain import run_training

            return run_training(
                self.store, self.config, loaded, claim.job_id, payload.spec, progress
            )
        raise JobFailure("unknown_kind", f"no handler for {payload.kind}", permanent=True)

    def _progress_fn(self, claim: Claim) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            if self._interrupt.is_set():
                raise Interrupted(claim.job_id)
            if self._lease_lost.is_set():
                raise LeaseLost(claim.job_id)
            now = time.monotonic()
            if now - self._last_progress >= PROGRESS_EVERY_S or fraction >= 1.0:
                self._last_progress = now
                self.queue.progress(claim, fraction)

        return report

    def _fail(self, claim: Claim, exc: Exception) -> JobStatus | None:
        from worker.decode import DecodeError

        if isinstance(exc, DecodeError):
            code, message, permanent = exc.code, exc.message, True
        elif isinstance(exc, JobFailure):
            code, message, permanent = exc.code, exc.message, exc.permanent
        else:
            logger.exception("job %s raised", claim.job_id)
            code, message, permanent = "internal_error", f"{type(exc).__name__}: {exc}", False
        try:
            status = self.queue.fail(
                claim, JobError(code=code, message=message[:500]), permanent=permanent
            )
        except LeaseLost:
            return None
        payload = claim.job.payload
        if status is JobStatus.FAILED and isinstance(payload, AnalyzeSegmentPayload):
            mark_segment_failed(self.store, payload.segment_id, code, message[:500])
        return status

    def _safe_release(self, claim: Claim) -> None:
        with contextlib.suppress(LeaseLost):
            self.queue.release(claim)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s) or self._claim is not None:
            self._check_grace()
            self._beat()
            if self._stop.is_set() and self._claim is not None:
                time.sleep(min(1.0, self.heartbeat_interval_s))

    def _check_grace(self) -> None:
        started = self._stop_requested_at
        if started is not None and time.monotonic() - started > self.grace_s:
            self._interrupt.set()

    def _beat(self) -> None:
        claim = self._claim
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
            self.queue.heartbeat(info)
            if claim is not None:
                self.queue.touch(claim)
        except LeaseLost:
            if self._claim is claim:  # not a job that finished meanwhile
                self._lease_lost.set()
        except Exception:  # Redis hiccup: try again next beat; the lease has slack
            logger.warning("heartbeat of %s failed", self.worker_id, exc_info=True)


def build_consumer(
    settings: object,
    *,
    redis_url: str | None = None,
    grace_s: float = 30.0,
    worker_id: str | None = None,
) -> Consumer:
    """A consumer wired from ``service.config.Settings`` (entry points only)."""
    import redis

    from service.config import Settings
    from service.keys import Keys

    assert isinstance(settings, Settings)
    url = redis_url or settings.redis_url
    if not url:
        raise ValueError("no Redis URL: set VIGIL_REDIS_URL (or run `vigil serve`)")
    client = redis.Redis.from_url(url, decode_responses=True)
    store = Store(client, Keys(settings.redis_prefix))
    queue = JobQueue.from_settings(client, settings)
    return Consumer(
        queue,
        store,
        WorkerConfig.from_settings(settings),
        heartbeat_interval_s=settings.heartbeat_interval_s,
        grace_s=grace_s,
        worker_id=worker_id,
    )
