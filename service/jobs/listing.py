"""Listing jobs of one kind, newest first (e.g. the admin's training jobs). No torch.

Every job id is added at enqueue time to ``jobs:kind:{kind}`` (a ZSET scored by creation time,
written by the enqueue script). :func:`index_job_kinds` adds the jobs created before that index
existed, once per deployment (the API's list route calls it; afterwards it costs one EXISTS).
"""

from __future__ import annotations

import logging

from service.jobs.models import Job, JobKind
from service.jobs.queue import JobQueue

logger = logging.getLogger(__name__)

Position = tuple[float, str]
"""Keyset position of a listed job: ``(created_at epoch s, job_id)``."""

_BATCH = 500


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def list_jobs_by_kind(
    queue: JobQueue, kind: JobKind, *, limit: int, before: Position | None = None
) -> tuple[list[Job], Position | None]:
    """Up to ``limit`` jobs of ``kind``, newest first, strictly after ``before``.

    Returns the page and the position of its last job when more jobs follow (else None).
    Within one creation time jobs are ordered by id, so the position is a total order and a
    page resumes exactly where the previous one ended.
    """
    key = queue.keys.jobs_by_kind(kind)
    high = "+inf" if before is None else repr(before[0])
    found: list[tuple[Position, Job]] = []
    offset, batch = 0, min(limit + 1, _BATCH)
    while len(found) <= limit:
        reply = queue.client.zrevrangebyscore(
            key, high, "-inf", start=offset, num=batch, withscores=True
        )
        members = [(float(score), _text(member)) for member, score in reply]
        fresh = [p for p in members if before is None or p < before]
        jobs = queue.get_many([job_id for _, job_id in fresh])
        found.extend((p, job) for p, job in zip(fresh, jobs, strict=True) if job is not None)
        if len(reply) < batch:
            break
        offset += batch
    if len(found) > limit:
        return [job for _, job in found[:limit]], found[limit - 1][0]
    return [job for _, job in found], None


def index_job_kinds(queue: JobQueue) -> int:
    """Add every job of the all-jobs index to its kind's index, once (a marker key remembers).

    Safe to run concurrently with enqueues (adding an id twice changes nothing). Returns the
    number of jobs looked at (0 when the marker was already set).
    """
    keys, client = queue.keys, queue.client
    if client.exists(keys.jobs_kind_index_ready()):
        return 0
    seen = 0
    while True:
        reply = client.zrange(keys.jobs_index(), seen, seen + _BATCH - 1, withscores=True)
        if not reply:
            break
        with client.pipeline(transaction=False) as pipe:
            for member, _ in reply:
                pipe.hget(keys.job(_text(member)), "kind")
            kinds = pipe.execute()
        with client.pipeline(transaction=False) as pipe:
            for (member, score), kind in zip(reply, kinds, strict=True):
                if kind:
                    pipe.zadd(keys.jobs_by_kind(_text(kind)), {_text(member): score})
            pipe.execute()
        seen += len(reply)
        if len(reply) < _BATCH:
            break
    client.set(keys.jobs_kind_index_ready(), "1")
    if seen:
        logger.info("indexed %d existing jobs by kind", seen)
    return seen
