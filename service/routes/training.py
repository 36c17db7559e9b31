"""Admin retraining: ``POST /v1/admin/training-jobs``, ``GET /v1/admin/training-jobs`` (the
list, newest first) and ``GET /v1/admin/training-jobs/{id}``."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import AdminKey, QueueDep, StoreDep
from service.errors import NotFound, ServiceUnavailable, Unprocessable, problem_responses
from service.jobs import (
    Job,
    QueueFull,
    TrainingJobSpec,
    TrainPayload,
    index_job_kinds,
    list_jobs_by_kind,
)
from service.present import job_public
from service.routes.streams import CursorParam, Limit
from service.routing import VigilRoute
from service.schemas import AuditAction, TrainingJobPublic, TrainingJobsPage
from service.store import InvalidCursor
from service.store._base import Cursor

router = APIRouter(tags=["admin"], route_class=VigilRoute)
_LISTING = "training_jobs"


def training_public(job: Job) -> TrainingJobPublic:
    """The job view plus its request and (once done) the metrics of both models."""
    assert isinstance(job.payload, TrainPayload)
    result = job.result if job.result is not None and job.result.kind == "train" else None
    return TrainingJobPublic(**job_public(job).model_dump(), spec=job.payload.spec, result=result)


@router.post(
    "/v1/admin/training-jobs",
    status_code=202,
    response_model=TrainingJobPublic,
    responses=problem_responses(401, 403, 413, 422, 503),
    summary="Retrain the active model on labeled intervals (supervised or ATCON)",
)
def create_training_job(
    spec: TrainingJobSpec, key: AdminKey, store: StoreDep, queue: QueueDep
) -> TrainingJobPublic:
    """Queue a retraining job. With ``promotion: auto`` the new version becomes active only
    if its validation macro-F1 is not below the active model's."""
    for stream in spec.streams:
        if not store.streams.exists(stream.stream_id):
            raise Unprocessable(f"unknown stream {stream.stream_id!r}", code="unknown_stream")
    for segment_id in spec.unlabeled_segment_ids:
        if store.segments.get(segment_id) is None:
            raise Unprocessable(f"unknown segment {segment_id!r}", code="unknown_segment")
    try:
        job = queue.enqueue(TrainPayload(spec=spec))
    except QueueFull as exc:
        raise ServiceUnavailable(
            "the job queue is full; retry later", code="queue_full", headers={"Retry-After": "10"}
        ) from exc
    store.audit.append(key.key_id, AuditAction.create_training_job, f"job:{job.job_id}")
    return training_public(job)


@router.get(
    "/v1/admin/training-jobs",
    response_model=TrainingJobsPage,
    responses=problem_responses(401, 403, 422),
    summary="Retraining jobs, newest first: status, progress, request and metrics",
)
def list_training_jobs(
    _key: AdminKey, queue: QueueDep, limit: Limit = 100, cursor: CursorParam = None
) -> TrainingJobsPage:
    before = None
    if cursor:
        try:
            after = Cursor.decode(cursor, _LISTING)
        except InvalidCursor as exc:
            raise Unprocessable(str(exc), code="invalid_cursor") from exc
        before = (after.score, after.member)
    index_job_kinds(queue)  # once per deployment (one EXISTS afterwards): jobs queued earlier
    jobs, last = list_jobs_by_kind(queue, "train", limit=limit, before=before)
    next_cursor = Cursor(_LISTING, *last).encode() if last else None
    return TrainingJobsPage(data=[training_public(j) for j in jobs], next_cursor=next_cursor)


@router.get(
    "/v1/admin/training-jobs/{job_id}",
    response_model=TrainingJobPublic,
    responses=problem_responses(401, 403, 404),
    summary="A retraining job: progress, and the new model's metrics next to the active one's",
)
def get_training_job(job_id: str, _key: AdminKey, queue: QueueDep) -> TrainingJobPublic:
    job = queue.get(job_id)
    if job is None or job.kind != "train":
        raise NotFound("no such training job", code="job_not_found")
    return training_public(job)
