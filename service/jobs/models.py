"""Job records, payloads and results (pure pydantic; no Redis, no torch).

A job has a ``kind`` and a typed payload per kind; its ``result`` is typed per kind too. Values
are stored in Redis as JSON by :mod:`service.jobs.queue`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

GROUP = "workers"
"""The one consumer group every worker joins."""

JobKind = Literal["analyze_segment", "render_overlay", "train"]
AttributionMethod = Literal["gradcam", "guided_backprop", "integrated_gradients"]
TrainingMethod = Literal["supervised", "atcon_guided_backprop", "atcon_integrated_gradients"]
Promotion = Literal["auto", "manual"]


class JobStatus(StrEnum):
    """Life cycle: queued -> running -> succeeded | failed (running -> queued on retry/release)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobError(BaseModel):
    """Why a job failed (or why its last attempt failed, while it waits for a retry)."""

    model_config = ConfigDict(extra="forbid")
    code: str
    message: str


# --- payloads -------------------------------------------------------------------------------


class AnalyzeSegmentPayload(BaseModel):
    """Analyse one stored segment of a stream."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["analyze_segment"] = "analyze_segment"
    stream_id: str
    segment_id: str
    video_path: str = Field(description="Segment file, relative to DATA_DIR (or absolute).")
    start: datetime = Field(description="Wall-clock start of the segment (UTC).")


class RenderOverlayPayload(BaseModel):
    """Render one attribution overlay of a segment at a time within it."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["render_overlay"] = "render_overlay"
    stream_id: str
    segment_id: str
    event_id: str | None = None
    label: str
    offset_s: float = Field(ge=0.0, description="Time within the segment (s).")
    method: AttributionMethod = "gradcam"

    @property
    def time_ms(self) -> int:
        """``offset_s`` in whole milliseconds (part of the overlay's key and file name)."""
        return round(self.offset_s * 1000)

    def overlay_relpath(self) -> str:
        """Where the worker writes the JPEG, relative to DATA_DIR (deterministic, so reruns
        overwrite instead of adding files)."""
        return f"overlays/{self.segment_id}/{self.method}-{self.label}-{self.time_ms}.jpg"


class LabeledInterval(BaseModel):
    """A clinician-confirmed interval of one label on a stream's wall clock."""

    model_config = ConfigDict(extra="forbid")
    label: str
    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> LabeledInterval:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class LabeledStream(BaseModel):
    """A stream whose frames become labeled training data."""

    model_config = ConfigDict(extra="forbid")
    stream_id: str
    intervals: list[LabeledInterval] | None = Field(
        default=None,
        description="Positive intervals; null uses the clinician labels stored for the stream. "
        "Frames of the stream's segments outside every interval are negatives.",
    )


class TrainingHyperParams(BaseModel):
    """Hyper-parameters of a retraining job (small, bounded values: it runs on a worker)."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(default=3, ge=1, le=200)
    batch_size: int = Field(default=16, ge=1, le=512)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    consistency_weight: float = Field(
        default=0.5, ge=0.0, le=100.0, description="λ of the ATCON consistency loss."
    )
    sample_fps: float = Field(
        default=1.0, gt=0.0, le=30.0, description="Frames per second sampled."
    )
    val_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    seed: int = 0


class TrainingJobSpec(BaseModel):
    """The admin retraining request (``POST /v1/admin/training-jobs``)."""

    model_config = ConfigDict(extra="forbid")
    streams: list[LabeledStream] = Field(min_length=1)
    unlabeled_segment_ids: list[str] = Field(default_factory=list)
    method: TrainingMethod = "supervised"
    hyperparameters: TrainingHyperParams = Field(default_factory=TrainingHyperParams)
    promotion: Promotion = "manual"


class TrainPayload(BaseModel):
    """Retrain the active model (it becomes the parent of the new version)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["train"] = "train"
    spec: TrainingJobSpec


JobPayload = Annotated[
    AnalyzeSegmentPayload | RenderOverlayPayload | TrainPayload, Field(discriminator="kind")
]


# --- results --------------------------------------------------------------------------------


class AnalyzeSegmentResult(BaseModel):
    """What an analysis produced."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["analyze_segment"] = "analyze_segment"
    segment_id: str
    model_version: str
    frames: int = Field(ge=0, description="Frames analysed in the segment.")
    events: int = Field(ge=0, description="Live events of the stream around the segment.")
    overlays: int = Field(ge=0)


class RenderOverlayResult(BaseModel):
    """Where the rendered overlay lies."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["render_overlay"] = "render_overlay"
    overlay_path: str = Field(description="Relative to DATA_DIR.")
    model_version: str


class ValidationMetrics(BaseModel):
    """Frame-level validation metrics of one model on one validation set."""

    model_config = ConfigDict(extra="forbid")
    macro_f1: float
    mean_ap: float | None = None
    per_class_f1: dict[str, float] = Field(default_factory=dict)
    frames: int = Field(default=0, ge=0)


class TrainResult(BaseModel):
    """The new version, its metrics next to the active model's, and whether it was promoted."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["train"] = "train"
    version: str
    parent_version: str | None
    metrics: ValidationMetrics
    active_metrics: ValidationMetrics | None
    promoted: bool


JobResult = Annotated[
    AnalyzeSegmentResult | RenderOverlayResult | TrainResult, Field(discriminator="kind")
]
PAYLOAD_ADAPTER = TypeAdapter(JobPayload)
RESULT_ADAPTER = TypeAdapter(JobResult)


class Job(BaseModel):
    """A job record as the API shows it (``GET /v1/jobs/{job_id}``) plus payload and result."""

    model_config = ConfigDict(extra="forbid")
    job_id: str
    kind: JobKind
    status: JobStatus
    progress: float = Field(ge=0.0, le=1.0)
    error: JobError | None = None
    attempts: int = Field(ge=0)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    payload: JobPayload
    result: JobResult | None = None
    worker: str | None = Field(default=None, description="Consumer that runs (or ran) the job.")


class WorkerInfo(BaseModel):
    """A worker's heartbeat (JSON, with a TTL)."""

    model_config = ConfigDict(extra="forbid")
    worker_id: str
    hostname: str
    pid: int
    started_at: datetime
    beat_at: datetime
    current_job: str | None = None
    model_version: str | None = None
    device: str | None = None


# --- errors and claims ----------------------------------------------------------------------


class QueueFull(Exception):
    """The queue holds ``max_length`` queued jobs already; the API answers 503 + Retry-After."""

    def __init__(self, depth: int, max_length: int) -> None:
        super().__init__(f"job queue is full ({depth} queued, max {max_length})")
        self.depth = depth
        self.max_length = max_length


class LeaseLost(Exception):
    """The job is no longer this worker's (reclaimed by another worker, or already settled)."""


@dataclass(frozen=True)
class Claim:
    """A job this worker runs, with the stream entry that proves its ownership."""

    job: Job
    entry_id: str
    consumer: str

    @property
    def job_id(self) -> str:
        return self.job.job_id


def new_job_id() -> str:
    """A unique, roughly time-ordered job id (``j-<hex>``)."""
    return f"j-{int(time.time() * 1000):x}{uuid.uuid4().hex[:10]}"
