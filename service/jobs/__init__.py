"""Job records and the job queue (one Redis Stream, one consumer group). No torch.

The API enqueues and reads jobs; ``worker.consumer`` claims, runs and settles them. Import
from here: ``from service.jobs import JobQueue, Job, QueueFull, TrainingJobSpec``.
"""

from service.jobs.listing import Position, index_job_kinds, list_jobs_by_kind
from service.jobs.models import (
    GROUP,
    AnalyzeSegmentPayload,
    AnalyzeSegmentResult,
    AttributionMethod,
    Claim,
    Job,
    JobError,
    JobKind,
    JobPayload,
    JobResult,
    JobStatus,
    LabeledInterval,
    LabeledStream,
    LeaseLost,
    Promotion,
    QueueFull,
    RenderOverlayPayload,
    RenderOverlayResult,
    TrainingHyperParams,
    TrainingJobSpec,
    TrainingMethod,
    TrainPayload,
    TrainResult,
    ValidationMetrics,
    WorkerInfo,
    new_job_id,
)
from service.jobs.queue import JobQueue

__all__ = [
    "GROUP",
    "AnalyzeSegmentPayload",
    "AnalyzeSegmentResult",
    "AttributionMethod",
    "Claim",
    "Job",
    "JobError",
    "JobKind",
    "JobPayload",
    "JobQueue",
    "JobResult",
    "JobStatus",
    "LabeledInterval",
    "LabeledStream",
    "LeaseLost",
    "Position",
    "Promotion",
    "QueueFull",
    "RenderOverlayPayload",
    "RenderOverlayResult",
    "TrainPayload",
    "TrainResult",
    "TrainingHyperParams",
    "TrainingJobSpec",
    "TrainingMethod",
    "ValidationMetrics",
    "WorkerInfo",
    "index_job_kinds",
    "list_jobs_by_kind",
    "new_job_id",
]
