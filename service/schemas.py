"""Typed records stored in Redis and the request/response bodies of the v1 API.

Stored records (``Segment``, ``Event``, ``FrameScores``, ``Label``, ``ModelVersion``, ``ApiKey``,
...) are what ``service.store`` writes as JSON; ``*Public`` models are what the API returns
(internal paths and hashes stripped, URLs added). Times are timezone-aware UTC ``datetime``
objects (ISO-8601 on the wire); naive inputs are read as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service.jobs.models import JobError, JobKind, JobStatus, TrainingJobSpec, TrainResult

T = TypeVar("T")


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC by convention; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-23:59: past year 9999 in UTC
        raise ValueError("the time in UTC is out of range") from exc


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A datetime normalised to UTC."""

SEGMENT_START_MIN = datetime(2000, 1, 1, tzinfo=UTC)
SEGMENT_START_MAX = datetime(2100, 1, 1, tzinfo=UTC)


def _sane_start(value: datetime) -> datetime:
    """Recording times outside [2000, 2100) are client bugs (and overflow time arithmetic)."""
    if not SEGMENT_START_MIN <= value < SEGMENT_START_MAX:
        raise ValueError("must lie in [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z)")
    return value


SegmentStart = Annotated[datetime, AfterValidator(_as_utc), AfterValidator(_sane_start)]
"""The wall-clock start of a segment: UTC (naive is UTC), year 2000 up to (excluding) 2100."""

STREAM_ID_PATTERN = r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
"""``[A-Za-z0-9._-]``, at least one character that is not a dot (no ``.``/``..`` path tricks)."""
StreamId = Annotated[str, Field(min_length=1, max_length=128, pattern=STREAM_ID_PATTERN)]
LabelName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Score = Annotated[float, Field(ge=0.0, le=1.0)]


def utcnow() -> datetime:
    """The current time, UTC, aware."""
    return datetime.now(UTC)


def to_epoch(value: datetime) -> float:
    """Epoch seconds of an aware datetime (sorted-set scores)."""
    return _as_utc(value).timestamp()


def from_epoch(value: float) -> datetime:
    """Aware UTC datetime of epoch seconds."""
    return datetime.fromtimestamp(value, tz=UTC)


class _Record(BaseModel):
    """Base of stored records: unknown fields are an error (catches writer/reader drift)."""

    model_config = ConfigDict(extra="forbid")


# --- enums --------------------------------------------------------------------------------


class Role(StrEnum):
    """API key roles; each includes the rights of the ones before it."""

    viewer = "viewer"
    ingest = "ingest"
    admin = "admin"

    @property
    def rank(self) -> int:
        """0 for viewer, 1 for ingest, 2 for admin."""
        return list(Role).index(self)

    def allows(self, required: Role) -> bool:
        """Whether a key of this role may call an endpoint that needs ``required``."""
        return self.rank >= required.rank


class SegmentStatus(StrEnum):
    """Life cycle of an uploaded segment."""

    queued = "queued"
    analysed = "analysed"
    failed = "failed"


class OverlayMethod(StrEnum):
    """Attention method of an overlay image."""

    gradcam = "gradcam"
    guided_backprop = "guided_backprop"
    integrated_gradients = "integrated_gradients"


class AuditAction(StrEnum):
    """What an audit entry records. ``read_*`` are reads of patient data (issue 5)."""

    read_timeline = "read_timeline"
    read_event = "read_event"
    read_overlay = "read_overlay"
    read_segment = "read_segment"
    read_video = "read_video"
    upload_segment = "upload_segment"
    create_label = "create_label"
    read_labels = "read_labels"
    create_training_job = "create_training_job"
    activate_model = "activate_model"
    create_key = "create_key"
    revoke_key = "revoke_key"
    read_job = "read_job"
    list_streams = "list_streams"
    list_training_jobs = "list_training_jobs"
    read_training_job = "read_training_job"
    list_models = "list_models"
    read_audit = "read_audit"
    export_audit = "export_audit"
    list_keys = "list_keys"


# --- stored records -------------------------------------------------------------------------


class ErrorInfo(_Record):
    """A stable machine code and a human message (no patient data)."""

    code: str
    message: str


class Segment(_Record):
    """One uploaded video segment of a stream."""

    segment_id: str
    stream_id: str
    start: UtcDatetime = Field(description="Wall-clock time of the segment's first frame.")
    duration_s: float = Field(ge=0)
    size_bytes: int = Field(ge=0)
    content_type: str
    path: str = Field(description="File path relative to DATA_DIR (internal).")
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    codec: str = ""
    status: SegmentStatus = SegmentStatus.queued
    job_id: str | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)
    analysed_at: UtcDatetime | None = None
    model_version: str | None = None
    frames_analysed: int = Field(default=0, ge=0)
    error: ErrorInfo | None = None

    @property
    def end(self) -> datetime:
        """Wall-clock time just after the segment's last frame."""
        return from_epoch(to_epoch(self.start) + self.duration_s)


class FrameScores(_Record):
    """Per-frame sigmoid scores of one segment: ``scores`` is ``(T, C)`` in ``[0, 1]``."""

    segment_id: str
    stream_id: str
    model_version: str
    classes: list[str]
    times: list[float] = Field(description="(T,) wall-clock epoch seconds of each analysed frame.")
    scores: list[list[float]] = Field(description="(T, C) sigmoid scores, rows follow `times`.")
    consistency: list[float | None] | None = Field(
        default=None, description="(T,) ATCON consistency of the frame's top label, if computed."
    )

    @model_validator(mode="after")
    def _shapes(self) -> FrameScores:
        if len(self.scores) != len(self.times):
            raise ValueError("scores must have one row per time")
        if any(len(row) != len(self.classes) for row in self.scores):
            raise ValueError("every score row must have one value per class")
        if self.consistency is not None and len(self.consistency) != len(self.times):
            raise ValueError("consistency must have one value per time")
        return self


class Event(_Record):
    """One detected event of a stream (possibly spanning segments).

    ``event_id`` is deterministic (``worker.timeline``), so rewriting the same results leaves
    one record. ``updated_at`` is set by the store only when the content changes.
    """

    event_id: str
    stream_id: str
    label: str
    start: UtcDatetime
    end: UtcDatetime
    peak_score: Score
    mean_score: Score
    consistency: float | None = Field(default=None, ge=-1.0, le=1.0)
    model_version: str
    open: bool = Field(default=False, description="Still growing at the end of the stream.")
    keyframe_time: UtcDatetime
    keyframe_overlay: str | None = Field(
        default=None, description="Grad-CAM JPEG of the key frame, relative to DATA_DIR."
    )
    segment_ids: list[str] = Field(default_factory=list)
    superseded: bool = False
    updated_at: UtcDatetime = Field(default_factory=utcnow)

    def content_equals(self, other: Event) -> bool:
        """Equal apart from ``updated_at`` (an unchanged rewrite is not an update)."""
        ignore = {"updated_at"}
        return self.model_dump(exclude=ignore) == other.model_dump(exclude=ignore)


class Label(_Record):
    """A clinician's label over an interval of a stream."""

    label_id: str
    stream_id: str
    label: LabelName
    start: UtcDatetime
    end: UtcDatetime
    created_by: str = Field(description="Key id of the author.")
    created_at: UtcDatetime = Field(default_factory=utcnow)


class Thresholds(_Record):
    """How one label's scores become events (``model.checkpoint.LabelThresholds``): an event
    opens at ``on`` and closes below ``off``; per-label minimum length and merge gap; whether
    ``on`` sits on a clamp bound; an unreliable label raises no events."""

    on: Score
    off: Score
    min_length_s: float | None = None
    merge_gap_s: float | None = None
    clamped: Literal["on_min", "on_max"] | None = None
    reliable: bool = True
    val_ap: float | None = None


class ModelVersion(_Record):
    """A model in the registry; ``active`` is filled in on read from the active pointer."""

    version: str
    path: str = Field(description="Checkpoint path (absolute, or relative to DATA_DIR).")
    arch: str
    classes: list[str]
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Validation metrics, e.g. macro_f1, mAP."
    )
    thresholds: dict[str, Thresholds] = Field(
        default_factory=dict,
        description="The checkpoint's per-label event thresholds (empty for versions registered "
        "before thresholds were recorded).",
    )
    parent: str | None = None
    training_job_id: str | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)
    active: bool = False


class ApiKey(_Record):
    """A stored API key: its sha256 only, never the key."""

    key_id: str
    name: str
    role: Role
    key_hash: str
    created_at: UtcDatetime = Field(default_factory=utcnow)
    revoked_at: UtcDatetime | None = None


class AuditEntry(BaseModel):
    """One audited call: who (key id), what, on which resource, when. Never patient data."""

    id: str = Field(description="Redis stream entry id (also the pagination cursor).")
    time: UtcDatetime = Field(description="The first call of the entry.")
    key_id: str = Field(description='The key id, or "anonymous" when no live key was sent.')
    key_hash: str | None = Field(
        default=None,
        description="First 12 hex digits of sha256 of an unknown or revoked key (never the key).",
    )
    action: AuditAction
    route: str | None = Field(default=None, description="Method and route template.")
    resource: str
    status: int | None = Field(default=None, description="HTTP status code of the answer.")
    count: int = Field(
        default=1, description="Identical calls (key, route, resource, status) within a minute."
    )


class UploadAccepted(BaseModel):
    """Response of a segment upload."""

    segment_id: str
    job_id: str


class IdempotencyRecord(_Record):
    """What an ``Idempotency-Key`` is bound to: the request and, once done, the response."""

    state: Literal["pending", "done"]
    request: str = Field(description="Method and path the key was first used with.")
    owner: str | None = Field(
        default=None, description="Random token of the request that holds a pending claim."
    )
    body_sha256: str | None = Field(
        default=None, description="sha256 (hex) of the uploaded video of the first request."
    )
    status_code: int | None = None
    response: UploadAccepted | None = None


# --- API bodies ------------------------------------------------------------------------------


class Problem(BaseModel):
    """RFC 9457 problem details, plus a stable machine ``code``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str


class Page(BaseModel, Generic[T]):
    """A cursor-paginated list: pass ``next_cursor`` back as ``cursor`` for the next page."""

    data: list[T]
    next_cursor: str | None = None


class Keyframe(BaseModel):
    """The event's key frame and the URL of its stored Grad-CAM overlay."""

    time: UtcDatetime
    overlay_url: str


class EventPublic(BaseModel):
    """An event as the API returns it."""

    event_id: str
    stream_id: str
    label: str
    start: UtcDatetime
    end: UtcDatetime
    peak_score: float
    mean_score: float
    consistency: float | None
    model_version: str
    open: bool
    keyframe: Keyframe
    segment_ids: list[str]
    superseded: bool
    updated_at: UtcDatetime


class FramePoint(BaseModel):
    """Scores of every class at one analysed frame."""

    time: UtcDatetime
    scores: dict[str, float]
    consistency: float | None = None


class EventDetail(EventPublic):
    """An event, the per-frame scores of the frames it covers (± ``context_s``) and the
    thresholds of the model version that detected it."""

    frames: list[FramePoint] = Field(
        description="Analysed frames from `start - context_s` to `end + context_s`, by time."
    )
    context_s: float = Field(ge=0, description="Seconds of context around the event in `frames`.")
    thresholds: dict[str, Thresholds] | None = Field(
        default=None,
        description="Per-label `{on, off}` of the event's model version; null when the registry "
        "has none for it.",
    )


class EventsPage(Page[EventPublic]):
    """A page of a stream's timeline."""


class StreamSummary(BaseModel):
    """A stream, its latest segment and its live event counts."""

    stream_id: str
    last_segment_end: UtcDatetime
    segment_count: int
    event_count: int
    event_counts: dict[str, int] = Field(description="Live events per label.")


class StreamsPage(Page[StreamSummary]):
    """A page of streams."""


class SegmentPublic(BaseModel):
    """A segment as the API returns it."""

    segment_id: str
    stream_id: str
    start: UtcDatetime
    end: UtcDatetime
    duration_s: float
    size_bytes: int
    content_type: str
    width: int
    height: int
    codec: str
    status: SegmentStatus
    job_id: str | None
    created_at: UtcDatetime
    analysed_at: UtcDatetime | None
    model_version: str | None
    frames_analysed: int
    error: ErrorInfo | None
    video_url: str


class LabelCreate(BaseModel):
    """Body of ``POST /v1/streams/{id}/labels``."""

    model_config = ConfigDict(extra="forbid")
    label: LabelName
    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _ordered(self) -> LabelCreate:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class LabelsPage(Page[Label]):
    """A page of labels."""


class ModelsPage(Page[ModelVersion]):
    """The model registry, newest first."""


class AuditPage(Page[AuditEntry]):
    """Audit entries, newest first."""


class ApiKeyCreate(BaseModel):
    """Body of ``POST /v1/admin/keys``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: Role


class ApiKeyPublic(BaseModel):
    """An API key without its secret or hash."""

    key_id: str
    name: str
    role: Role
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None


class ApiKeyCreated(ApiKeyPublic):
    """The response of key creation: the only time the key itself is shown."""

    key: str


class KeysPage(Page[ApiKeyPublic]):
    """API keys."""


class JobPublic(BaseModel):
    """A job as ``GET /v1/jobs/{job_id}`` shows it."""

    job_id: str
    kind: JobKind
    status: JobStatus
    progress: float
    error: JobError | None
    attempts: int
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class TrainingJobPublic(JobPublic):
    """A retraining job: its request, and once done the new model's validation metrics next
    to the active model's (``result.metrics`` / ``result.active_metrics``)."""

    spec: TrainingJobSpec
    result: TrainResult | None


class TrainingJobsPage(Page[TrainingJobPublic]):
    """Training jobs, newest first."""


class Me(BaseModel):
    """The calling key."""

    key_id: str
    name: str
    role: Role


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Readiness: Redis reachable and at least one live worker."""

    status: Literal["ready", "not_ready"]
    redis: bool
    live_workers: int
