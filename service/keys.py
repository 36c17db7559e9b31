"""Every Redis key name of Vigil, in one place (pure string functions, no I/O).

Nothing else in the code base formats a key: the store (`service.store`), the queue
(`service.jobs`) and the tests all go through :class:`Keys`. The layout is documented in
``docs/api.md`` ("Redis layout"); change both together.

Conventions: ``{p}`` is the deployment prefix (``Settings.redis_prefix``, default ``vigil:``);
ids are opaque strings chosen by Vigil (segment, event, label, job, key ids) or by the client
(stream ids, restricted to ``[A-Za-z0-9._-]`` by the API), so they never contain ``:``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix, e.g. ``Keys("vigil:").segment("s-1") == "vigil:segment:s-1"``."""

    prefix: str = "vigil:"

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- streams ---------------------------------------------------------------------------
    def streams(self) -> str:
        """ZSET stream_id -> 0 (all scores equal, so ``ZRANGEBYLEX`` pages by stream id)."""
        return self._k("streams")

    def streams_last_end(self) -> str:
        """ZSET stream_id -> epoch seconds of the latest segment end seen (``ZADD GT``)."""
        return self._k("streams", "last_end")

    def stream_segments(self, stream_id: str) -> str:
        """ZSET segment_id -> segment start (epoch seconds)."""
        return self._k("stream", stream_id, "segments")

    def stream_events(self, stream_id: str) -> str:
        """ZSET event_id -> event start (epoch s); live events only (not superseded)."""
        return self._k("stream", stream_id, "events")

    def stream_events_updated(self, stream_id: str) -> str:
        """ZSET event_id -> ``updated_at`` (epoch s); every event, superseded ones included."""
        return self._k("stream", stream_id, "events", "updated")

    def stream_event_counts(self, stream_id: str) -> str:
        """HASH label -> number of live events (kept in step with ``stream_events``)."""
        return self._k("stream", stream_id, "event_counts")

    def stream_max_event_span(self, stream_id: str) -> str:
        """STRING: the longest event duration (s) ever written for the stream.

        Lets a time-window query scan the start index from ``start - span`` instead of from
        the beginning of the stream.
        """
        return self._k("stream", stream_id, "max_event_span")

    def stream_labels(self, stream_id: str) -> str:
        """ZSET label_id -> label start (epoch s)."""
        return self._k("stream", stream_id, "labels")

    # --- records ---------------------------------------------------------------------------
    def segment(self, segment_id: str) -> str:
        """STRING: JSON ``Segment``."""
        return self._k("segment", segment_id)

    def segment_frames(self, segment_id: str) -> str:
        """STRING: JSON ``FrameScores`` of the segment (written by the worker)."""
        return self._k("segment", segment_id, "frames")

    def event(self, event_id: str) -> str:
        """STRING: JSON ``Event``."""
        return self._k("event", event_id)

    def label(self, label_id: str) -> str:
        """STRING: JSON ``Label``."""
        return self._k("label", label_id)

    # --- model registry --------------------------------------------------------------------
    def models(self) -> str:
        """HASH version -> JSON ``ModelVersion``."""
        return self._k("models")

    def models_order(self) -> str:
        """ZSET version -> created_at (epoch s), for listing newest first."""
        return self._k("models", "order")

    def model_active(self) -> str:
        """STRING: the active model version."""
        return self._k("models", "active")

    # --- auth and audit --------------------------------------------------------------------
    def api_keys(self) -> str:
        """HASH key_id -> JSON ``ApiKey`` (hash only, never the key)."""
        return self._k("apikeys")

    def api_key_hashes(self) -> str:
        """HASH sha256(key) -> key_id (lookup when a request presents a key)."""
        return self._k("apikeys", "by_hash")

    def api_keys_bootstrapped(self) -> str:
        """SET of sha256(key) of every ``VIGIL_BOOTSTRAP_ADMIN_KEY`` value ever imported, so a
        revoked bootstrap key is not imported again at the next start."""
        return self._k("apikeys", "bootstrapped")

    def audit(self) -> str:
        """STREAM of audit entries (trimmed by time: ``XTRIM MINID``, never by count)."""
        return self._k("audit")

    def audit_coalesce(self, digest: str) -> str:
        """STRING (TTL 60 s): ``<entry id> <day>`` of the entry that identical calls join."""
        return self._k("audit", "co", digest)

    def audit_counts(self, day: str) -> str:
        """HASH (expires after the retention): entry id -> calls beyond the first, per UTC day."""
        return self._k("audit", "counts", day)

    def audit_trimmed(self) -> str:
        """STRING (TTL): set while the last retention trim is recent (one trim an hour)."""
        return self._k("audit", "trimmed")

    def idempotency(self, key_id: str, idempotency_key: str) -> str:
        """STRING (with TTL): JSON ``IdempotencyRecord`` for one client key of one API key.

        The client's value is hashed so that arbitrary header bytes never end up in a key name.
        """
        digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:32]
        return self._k("idem", key_id, digest)

    # --- upload budgets (used by service.ingest) ----------------------------------------------
    def disk_bytes(self) -> str:
        """STRING counter: bytes of every stored segment video (added by the upload commit)."""
        return self._k("disk", "bytes")

    def stream_disk_bytes(self, stream_id: str) -> str:
        """STRING counter: bytes of the stored segment videos of one stream."""
        return self._k("disk", "stream", stream_id)

    def upload_rate(self, key_id: str, window: int) -> str:
        """STRING counter (with TTL): uploads of one API key in one fixed minute ``window``."""
        return self._k("rate", "upload", key_id, str(window))

    # --- queue (used by service.jobs) -------------------------------------------------------
    def job(self, job_id: str) -> str:
        """STRING or HASH: the job record (owned by ``service.jobs``)."""
        return self._k("job", job_id)

    def jobs_stream(self) -> str:
        """STREAM: the job queue (consumer group ``workers``)."""
        return self._k("jobs", "stream")

    def jobs_index(self) -> str:
        """ZSET job_id -> created_at, every job (for listing and counting)."""
        return self._k("jobs", "index")

    def jobs_by_kind(self, kind: str) -> str:
        """ZSET job_id -> created_at, the jobs of one kind (e.g. ``train``: the admin listing)."""
        return self._k("jobs", "kind", kind)

    def jobs_kind_index_ready(self) -> str:
        """STRING marker: jobs created before ``jobs_by_kind`` existed have been indexed."""
        return self._k("jobs", "kind_index_ready")

    def jobs_by_status(self, status: str) -> str:
        """SET of job ids in one status (queued, running, succeeded, failed)."""
        return self._k("jobs", "status", status)

    def jobs_delayed(self) -> str:
        """ZSET job_id -> epoch s when a retried job becomes due again."""
        return self._k("jobs", "delayed")

    def workers(self) -> str:
        """ZSET worker_id -> last heartbeat (epoch s)."""
        return self._k("workers")

    def worker(self, worker_id: str) -> str:
        """STRING (with TTL): JSON heartbeat of one worker."""
        return self._k("worker", worker_id)

    def stream_timeline_lock(self, stream_id: str) -> str:
        """STRING (a lock with a TTL, ``redis.lock.Lock``): held by the worker that stores a
        segment's frames and recomputes the stream's events, so that two segments of one stream
        analysed at once cannot each miss the other's frames (owned by ``worker.handlers``)."""
        return self._k("stream", stream_id, "timeline_lock")

    def model_reload(self) -> str:
        """PUB/SUB channel on which activation is announced to workers."""
        return self._k("models", "reload")

    def metrics_counter(self, name: str) -> str:
        """STRING counter shared by processes (e.g. frames analysed by all workers)."""
        return self._k("metrics", name)
