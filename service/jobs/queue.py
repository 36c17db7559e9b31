"""The job queue: one Redis Stream, one consumer group (``workers``).

The API enqueues (``JobQueue.enqueue``) and reads (``JobQueue.get``); ``worker.consumer`` claims,
reports progress, and settles jobs. The record of a job is a Redis HASH whose scalar fields
(``status``, ``worker``, ``attempts``, ...) are changed only by the Lua scripts in
``service.jobs.scripts``, and whose structured fields (``payload``, ``error``, ``result``) hold
JSON.

Semantics (see ``docs/operations.md``, "Queue semantics"):

* **Claim.** ``XREADGROUP`` hands a stream entry to one consumer; the ``start`` script then moves
  the job to ``running`` *only if that entry is still pending for that consumer* (``XPENDING``
  checked inside the script). Claim and state change are one atomic step, so two workers never
  both run one job, even when a reclaim races a slow claim.
* **Lease.** A running job's entry stays in the consumer's pending list; the worker's heartbeat
  ``touch``-es it (``XCLAIM ... JUSTID`` by its owner), which resets its idle time. An entry idle
  longer than the visibility timeout belongs to a dead worker and is reclaimed with
  ``XAUTOCLAIM``: by an idle worker's claim, which starts it, and by every worker's heartbeat
  (``requeue_expired``), which puts it back onto the stream even while that worker is busy;
  after ``max_attempts`` starts it fails with ``worker_lost``.
* **Stream locks.** ``lock_stream`` takes a stream's lock as a lease (``SET NX PX``; renewed by
  the holder's heartbeat, released with a token check); it never blocks. A job whose stream is
  locked is ``defer``-red: back to the delayed set for a moment, the attempt not counted.
* **Settle.** ``complete``/``fail``/``release`` check ownership and acknowledge + delete the
  entry in the same script; a worker that lost its lease gets :class:`LeaseLost` and must drop
  its result (results are written idempotently anyway).
* **Retry.** A transient failure re-queues the job into a delayed set with exponential backoff;
  any worker moves due jobs back onto the stream before it reads. Permanent failures (bad video)
  and exhausted retries end as ``failed`` with ``{code, message}``; so does a job whose every
  allowed start died (``worker_lost``, found by the next claim). A failed analysis also moves
  its segment from ``queued`` to ``failed`` with that error (``SegmentRepo.mark_failed``).

Nothing here imports torch; the module is used by the API image.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from service.jobs import scripts
from service.jobs.models import (
    GROUP,
    PAYLOAD_ADAPTER,
    RESULT_ADAPTER,
    AnalyzeSegmentPayload,
    AnalyzeSegmentResult,
    Claim,
    Job,
    JobError,
    JobStatus,
    LeaseLost,
    QueueFull,
    RenderOverlayPayload,
    RenderOverlayResult,
    TrainPayload,
    TrainResult,
    WorkerInfo,
    new_job_id,
)
from service.keys import Keys

logger = logging.getLogger(__name__)


def _text(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def _time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


@dataclass(frozen=True)
class StreamLease:
    """A per-stream lock held by one worker: a Redis STRING ``key`` holding ``token`` that
    expires ``ttl_s`` after its last renewal (the holder's heartbeat renews it)."""

    stream_id: str
    key: str
    token: str
    ttl_s: float


# --- the queue ------------------------------------------------------------------------------


class JobQueue:
    """The job queue over a Redis Stream (synchronous redis-py client; either response mode).

    Args:
        client: a ``redis.Redis`` (``decode_responses`` may be on or off).
        keys: key names under the deployment prefix.
        max_length: most queued jobs before ``enqueue`` raises :class:`QueueFull`.
        visibility_timeout_s: an entry idle this long belongs to a dead worker and is reclaimed.
        max_attempts: starts of a job before a transient failure becomes final.
        retry_backoff_s: first retry delay; doubles per attempt, capped at ``retry_backoff_max_s``.
        worker_ttl_s: a worker is live while its last heartbeat is younger than this.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        max_length: int = 1000,
        visibility_timeout_s: float = 120.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 2.0,
        retry_backoff_max_s: float = 300.0,
        worker_ttl_s: float = 30.0,
    ) -> None:
        self.client = client
        self.keys = keys
        self.max_length = max_length
        self.visibility_timeout_s = visibility_timeout_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.worker_ttl_s = worker_ttl_s
        self._scripts = scripts.register(client)
        self._group_ready = False

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: object) -> JobQueue:
        """Build from a ``service.config.Settings`` (typed loosely to keep imports one-way)."""
        from service.config import Settings

        assert isinstance(settings, Settings)
        return cls(
            client,
            Keys(settings.redis_prefix),
            max_length=settings.queue_max_length,
            visibility_timeout_s=settings.job_visibility_timeout_s,
            max_attempts=settings.job_max_attempts,
            retry_backoff_s=settings.job_retry_backoff_s,
            worker_ttl_s=settings.worker_ttl_s,
        )

    # -- producer side ------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the stream and its consumer group if absent (idempotent)."""
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.keys.jobs_stream(), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def enqueue(
        self,
        payload: AnalyzeSegmentPayload | RenderOverlayPayload | TrainPayload,
        *,
        job_id: str | None = None,
    ) -> Job:
        """Add a job; raises :class:`QueueFull` when ``max_length`` jobs are queued already.

        With an explicit ``job_id`` that exists already, the existing job is returned and
        nothing is added (lets callers make enqueueing idempotent).
        """
        self.ensure_group()
        job_id = job_id or new_job_id()
        now = time.time()
        outcome, depth = self._scripts.enqueue(
            keys=[
                *self._queue_keys(job_id),
                self.keys.jobs_delayed(),
                self.keys.jobs_by_kind(payload.kind),
            ],
            args=[job_id, payload.kind, payload.model_dump_json(), repr(now), self.max_length],
        )
        outcome = _text(outcome)
        if outcome == "full":
            raise QueueFull(int(depth), self.max_length)
        if outcome == "ok":
            logger.info("job %s queued (%s)", job_id, payload.kind)
        job = self.get(job_id)
        assert job is not None
        return job

    def commit_upload(
        self,
        payload: AnalyzeSegmentPayload,
        *,
        job_id: str,
        upload_keys: list[str],
        upload_args: list[str | int | float],
    ) -> tuple[str, int]:
        """Run the upload commit script (``scripts.COMMIT_UPLOAD``: segment record, job, audit
        entry and byte counters in one atomic step; ``service.ingest`` passes the segment side's
        keys and arguments). Returns the script's ``(outcome, n)``; nothing is written unless
        the outcome is ``ok``."""
        self.ensure_group()
        outcome, n = self._scripts.commit_upload(
            keys=[
                *self._queue_keys(job_id),
                self.keys.jobs_delayed(),
                self.keys.jobs_by_kind(payload.kind),
                *upload_keys,
            ],
            args=[
                job_id,
                payload.kind,
                payload.model_dump_json(),
                repr(time.time()),
                self.max_length,
                *upload_args,
            ],
        )
        return _text(outcome) or "", int(n)

    def get(self, job_id: str) -> Job | None:
        """The job record, or None."""
        raw = self.client.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return _job_from_fields(job_id, fields)

    def get_many(self, job_ids: list[str]) -> list[Job | None]:
        """The records of ``job_ids`` in one round trip (None where a job does not exist)."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            raws = pipe.execute()
        return [
            _job_from_fields(job_id, {_text(k): _text(v) for k, v in raw.items()}) if raw else None
            for job_id, raw in zip(job_ids, raws, strict=True)
        ]

    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.1) -> Job | None:
        """Poll until the job is finished or ``timeout_s`` passed; returns the last record."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job is None or job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                return job
            if time.monotonic() >= deadline:
                return job
            time.sleep(poll_s)

    def counts(self) -> dict[JobStatus, int]:
        """Number of jobs in each status (queued includes jobs waiting for a retry)."""
        with self.client.pipeline(transaction=False) as pipe:
            for status in JobStatus:
                pipe.scard(self.keys.jobs_by_status(status.value))
            values = pipe.execute()
        return {status: int(n) for status, n in zip(JobStatus, values, strict=True)}

    def depth(self) -> int:
        """Queued jobs (the figure ``max_length`` bounds)."""
        return int(self.client.scard(self.keys.jobs_by_status(JobStatus.QUEUED.value)))

    # -- consumer side ------------------------------------------------------------------------

    def claim(self, consumer: str, *, block_s: float = 1.0) -> Claim | None:
        """Claim the next job for ``consumer``: a dead worker's job first, else a new one.

        Blocks up to ``block_s`` waiting for a new entry. Returns None when there is nothing.
        """
        self.ensure_group()
        try:
            self.promote_due()
            claim = self.reclaim(consumer)
            if claim is not None:
                return claim
            reply = self.client.xreadgroup(
                GROUP,
                consumer,
                {self.keys.jobs_stream(): ">"},
                count=1,
                block=max(1, int(block_s * 1000)),
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or its group is gone (a Redis restarted without its data, or the key
            # deleted): create them again at the next claim.
            logger.warning("job stream has no consumer group (%s); recreating it", exc)
            self._group_ready = False
            return None
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                claim = self._start(consumer, _text(entry_id), fields)
                if claim is not None:
                    return claim
        return None

    def reclaim(self, consumer: str) -> Claim | None:
        """Take over one entry idle longer than the visibility timeout (a dead worker's job)."""
        min_idle_ms = int(self.visibility_timeout_s * 1000)
        reply = self.client.xautoclaim(
            self.keys.jobs_stream(), GROUP, consumer, min_idle_ms, start_id="0-0", count=1
        )
        for entry_id, fields in reply[1] if reply else []:
            if fields:  # None/empty: the entry was deleted meanwhile; nothing to run
                return self._start(consumer, _text(entry_id), fields, reclaimed=True)
        return None

    def requeue_expired(self, consumer: str, limit: int = 10) -> list[str]:
        """Put jobs whose entries sat idle past the visibility timeout (their worker died)
        back onto the stream, so that any free worker takes them now (or fail them with
        ``worker_lost`` when every allowed start is used up). Returns their job ids.

        Called by every worker's heartbeat thread, so a dead worker's job does not wait until
        some worker has finished its current job and claims again. ``consumer`` takes the
        entries over for the instant of the move (if it dies in between, the entries are
        reclaimed again after the visibility timeout).
        """
        self.ensure_group()
        min_idle_ms = int(self.visibility_timeout_s * 1000)
        try:
            reply = self.client.xautoclaim(
                self.keys.jobs_stream(), GROUP, consumer, min_idle_ms, start_id="0-0", count=limit
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            return []
        moved = []
        for raw_entry, fields in reply[1] if reply else []:
            entry_id = _text(raw_entry)
            job_id = self._entry_job(entry_id, fields or {})
            if job_id is None:  # deleted meanwhile, or not one of ours
                continue
            outcome = _text(
                self._scripts.requeue(
                    keys=self._queue_keys(job_id),
                    args=self._claim_args(consumer, entry_id, job_id),
                )
            )
            if outcome == "requeued":
                logger.warning("job %s: its worker stopped renewing the lease; requeued", job_id)
                moved.append(job_id)
            elif outcome == "exhausted":
                logger.warning("job %s failed: worker_lost (every attempt died)", job_id)
                self._settle_failed_segment(job_id)
                moved.append(job_id)
        return moved

    def touch(self, claim: Claim, progress: float | None = None) -> None:
        """Refresh the lease of a running job (and set its progress 0..1 when given).

        Raises :class:`LeaseLost` when the job is no longer this worker's.
        """
        value = "" if progress is None else repr(min(1.0, max(0.0, float(progress))))
        ok = self._scripts.touch(
            keys=[self.keys.job(claim.job_id), self.keys.jobs_stream()],
            args=[claim.consumer, GROUP, claim.entry_id, value],
        )
        if not int(ok):
            raise LeaseLost(claim.job_id)

    def progress(self, claim: Claim, fraction: float) -> None:
        """Publish progress (0..1); also refreshes the lease."""
        self.touch(claim, fraction)

    def complete(
        self, claim: Claim, result: AnalyzeSegmentResult | RenderOverlayResult | TrainResult
    ) -> None:
        """Mark the job succeeded with ``result`` and acknowledge it (raises LeaseLost)."""
        ok = self._scripts.complete(
            keys=self._settle_keys(claim.job_id),
            args=[
                claim.consumer,
                GROUP,
                claim.entry_id,
                repr(time.time()),
                result.model_dump_json(),
                claim.job_id,
            ],
        )
        if not int(ok):
            raise LeaseLost(claim.job_id)
        logger.info("job %s succeeded", claim.job_id)

    def fail(self, claim: Claim, error: JobError, *, permanent: bool) -> JobStatus:
        """Record a failure. Transient failures are retried after a backoff until
        ``max_attempts`` starts; permanent ones end the job. Returns the job's new status."""
        attempts = max(1, claim.job.attempts)
        delay = min(self.retry_backoff_max_s, self.retry_backoff_s * 2 ** (attempts - 1))
        now = time.time()
        outcome = self._scripts.fail(
            keys=self._settle_keys(claim.job_id),
            args=[
                claim.consumer,
                GROUP,
                claim.entry_id,
                repr(now),
                error.model_dump_json(),
                "1" if permanent else "0",
                self.max_attempts,
                repr(now + delay),
                claim.job_id,
            ],
        )
        outcome = _text(outcome)
        if outcome == "lost":
            raise LeaseLost(claim.job_id)
        if outcome == "retry":
            logger.warning(
                "job %s attempt %d failed (%s); retry in %.1fs",
                claim.job_id,
                attempts,
                error.code,
                delay,
            )
            return JobStatus.QUEUED
        logger.warning("job %s failed: %s", claim.job_id, error.code)
        self._settle_failed_segment(claim.job_id)
        return JobStatus.FAILED

    def release(self, claim: Claim) -> None:
        """Give a running job back to the queue without counting the attempt (graceful stop)."""
        ok = self._scripts.release(
            keys=self._settle_keys(claim.job_id),
            args=[claim.consumer, GROUP, claim.entry_id, claim.job_id],
        )
        if not int(ok):
            raise LeaseLost(claim.job_id)
        logger.info("job %s released", claim.job_id)

    def defer(self, claim: Claim, delay_s: float) -> None:
        """Give a running job back for ``delay_s`` seconds without counting the attempt (its
        stream is locked by another worker); raises LeaseLost."""
        ok = self._scripts.defer(
            keys=self._settle_keys(claim.job_id),
            args=[
                claim.consumer,
                GROUP,
                claim.entry_id,
                claim.job_id,
                repr(time.time() + max(0.0, delay_s)),
            ],
        )
        if not int(ok):
            raise LeaseLost(claim.job_id)
        logger.info("job %s deferred for %.1fs (its stream is locked)", claim.job_id, delay_s)

    # -- per-stream locks ---------------------------------------------------------------------

    def lock_stream(self, stream_id: str, owner: str, ttl_s: float) -> StreamLease | None:
        """Take the stream's lock for ``ttl_s`` (renew it with :meth:`renew_stream_lock`), or
        None at once when another worker holds it. Never blocks. A lease that ``owner`` itself
        left behind (one job at a time per worker) is taken over."""
        lease = StreamLease(
            stream_id=stream_id,
            key=self.keys.stream_timeline_lock(stream_id),
            token=f"{owner}:{uuid.uuid4().hex}",
            ttl_s=ttl_s,
        )
        taken = self._scripts.lock_take(
            keys=[lease.key], args=[lease.token, f"{owner}:", _ms(ttl_s)]
        )
        return lease if int(taken) else None

    def stream_lock_remaining_s(self, stream_id: str) -> float:
        """Seconds until the stream's lock expires unless renewed (0 when nobody holds it)."""
        ms = int(self.client.pttl(self.keys.stream_timeline_lock(stream_id)))
        return max(0.0, ms / 1000.0)

    def renew_stream_lock(self, lease: StreamLease) -> bool:
        """Extend the lease by its TTL; False when it expired or another worker holds it."""
        renewed = self._scripts.lock_renew(keys=[lease.key], args=[lease.token, _ms(lease.ttl_s)])
        return bool(int(renewed))

    def unlock_stream(self, lease: StreamLease) -> bool:
        """Release the lease (False when it was not held any more)."""
        return bool(int(self._scripts.lock_release(keys=[lease.key], args=[lease.token])))

    def promote_due(self, limit: int = 100) -> int:
        """Move retried jobs whose backoff has passed back onto the stream; returns how many."""
        due = self.client.zrangebyscore(self.keys.jobs_delayed(), "-inf", time.time(), 0, limit)
        moved = 0
        for raw_id in due:
            job_id = _text(raw_id)
            moved += int(
                self._scripts.promote(
                    keys=[self.keys.jobs_delayed(), self.keys.jobs_stream(), self.keys.job(job_id)],
                    args=[job_id],
                )
            )
        return moved

    # -- heartbeats ---------------------------------------------------------------------------

    def heartbeat(self, info: WorkerInfo) -> None:
        """Record that ``info.worker_id`` is alive (expires after ``worker_ttl_s``)."""
        ttl_ms = max(1, int(self.worker_ttl_s * 1000))
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.worker(info.worker_id), info.model_dump_json(), px=ttl_ms)
            pipe.zadd(self.keys.workers(), {info.worker_id: info.beat_at.timestamp()})
            pipe.execute()

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stops cleanly (and its consumer, when it holds nothing)."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers(), worker_id)
            pipe.execute()
        self._delete_consumer_if_idle(worker_id)

    def live_workers(self) -> list[WorkerInfo]:
        """Workers whose last heartbeat is younger than ``worker_ttl_s`` (for ``/readyz``)."""
        self.client.zremrangebyscore(self.keys.workers(), "-inf", time.time() - self.worker_ttl_s)
        ids = [_text(i) for i in self.client.zrange(self.keys.workers(), 0, -1)]
        if not ids:
            return []
        raws = self.client.mget([self.keys.worker(i) for i in ids])
        live = []
        for raw in raws:
            if raw is None:  # the worker's key expired: its last beat is too old
                continue
            try:
                live.append(WorkerInfo.model_validate_json(raw))
            except ValueError:  # a heartbeat this version cannot read counts as no heartbeat
                logger.warning("unreadable worker heartbeat skipped")
        return live

    # -- internals ----------------------------------------------------------------------------

    def _queue_keys(self, job_id: str) -> list[str]:
        return [
            self.keys.job(job_id),
            self.keys.jobs_stream(),
            self.keys.jobs_index(),
            *(self.keys.jobs_by_status(s.value) for s in JobStatus),
        ]

    def _settle_keys(self, job_id: str) -> list[str]:
        return [*self._queue_keys(job_id), self.keys.jobs_delayed()]

    def _start(
        self, consumer: str, entry_id: str, fields: dict, *, reclaimed: bool = False
    ) -> Claim | None:
        job_id = self._entry_job(entry_id, fields)
        if job_id is None:
            return None
        outcome = _text(
            self._scripts.start(
                keys=self._queue_keys(job_id),
                args=self._claim_args(consumer, entry_id, job_id),
            )
        )
        if outcome != "ok":
            logger.info("entry %s of job %s not started: %s", entry_id, job_id, outcome)
            if outcome == "exhausted":  # failed with worker_lost: no worker will settle it
                self._settle_failed_segment(job_id)
            return None
        job = self.get(job_id)
        assert job is not None
        verb = "reclaimed" if reclaimed else "claimed"
        logger.info("job %s %s by %s (attempt %d)", job_id, verb, consumer, job.attempts)
        return Claim(job=job, entry_id=entry_id, consumer=consumer)

    def _entry_job(self, entry_id: str, fields: dict) -> str | None:
        """The job id of a stream entry; an entry without one (not ours) is acked and deleted so
        that it is not redelivered forever."""
        job_id = _text(fields.get(b"job_id") or fields.get("job_id"))
        if job_id is None:
            self.client.xack(self.keys.jobs_stream(), GROUP, entry_id)
            self.client.xdel(self.keys.jobs_stream(), entry_id)
        return job_id

    def _claim_args(self, consumer: str, entry_id: str, job_id: str) -> list[object]:
        """ARGV of the START and REQUEUE scripts: who takes the entry, when, the attempt bound
        and the error a job gets when its attempts are used up by lost workers."""
        return [consumer, GROUP, entry_id, repr(time.time()), self.max_attempts,
                self._lost_error().model_dump_json(), job_id]

    def _settle_failed_segment(self, job_id: str) -> None:
        """A failed analysis fails its segment too (``queued`` -> ``failed`` with the job's
        error), here where the job is settled, so that no path (``worker_lost`` above all,
        which no worker sees) leaves the segment ``queued`` with no error."""
        job = self.get(job_id)
        if job is None or job.error is None or not isinstance(job.payload, AnalyzeSegmentPayload):
            return
        # service.store imports service.schemas, which imports service.jobs: import late.
        from service.store.segments import SegmentRepo

        try:
            SegmentRepo(self.client, self.keys).mark_failed(
                job.payload.segment_id, job.error.code, job.error.message
            )
        except Exception:  # the job is settled; GET /v1/segments derives the status anyway
            logger.exception("segment of failed job %s not marked failed", job_id)

    @staticmethod
    def _lost_error() -> JobError:
        return JobError(
            code="worker_lost", message="the workers running this job stopped without finishing"
        )

    def _delete_consumer_if_idle(self, consumer: str) -> None:
        try:
            pending = self.client.xpending_range(
                self.keys.jobs_stream(), GROUP, min="-", max="+", count=1, consumername=consumer
            )
            if not pending:
                self.client.xgroup_delconsumer(self.keys.jobs_stream(), GROUP, consumer)
        except redis.ResponseError:  # no stream or group yet
            pass


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _job_from_fields(job_id: str, fields: dict[str, str | None]) -> Job:
    payload = PAYLOAD_ADAPTER.validate_json(fields["payload"] or "{}")
    error = fields.get("error")
    result = fields.get("result")
    return Job(
        job_id=job_id,
        kind=payload.kind,
        status=JobStatus(fields.get("status") or "queued"),
        progress=float(fields.get("progress") or 0.0),
        error=JobError.model_validate_json(error) if error else None,
        attempts=int(fields.get("attempts") or 0),
        created_at=_time(fields.get("created_at")) or datetime.now(UTC),
        started_at=_time(fields.get("started_at")),
        finished_at=_time(fields.get("finished_at")),
        payload=payload,
        result=RESULT_ADAPTER.validate_json(result) if result else None,
        worker=fields.get("worker") or None,
    )
