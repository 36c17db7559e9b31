"""Jobs: ``GET /v1/jobs/{job_id}``."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import QueueDep, ViewerKey
from service.errors import NotFound, problem_responses
from service.present import job_public
from service.routing import VigilRoute
from service.schemas import JobPublic

router = APIRouter(tags=["jobs"], route_class=VigilRoute)


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404),
    summary="A job's status, progress and error",
)
def get_job(job_id: str, _key: ViewerKey, queue: QueueDep) -> JobPublic:
    job = queue.get(job_id)
    if job is None:
        raise NotFound("no such job", code="job_not_found")
    return job_public(job)
