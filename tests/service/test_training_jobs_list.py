"""``GET /v1/admin/training-jobs``: training jobs only, newest first, cursor pages; the by-kind
index of ``service.jobs`` (written on enqueue, back-filled once for older jobs)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from service.jobs import (
    TrainingJobSpec,
    TrainPayload,
    TrainResult,
    ValidationMetrics,
    index_job_kinds,
)
from service.schemas import ModelVersion, Role
from tests.service.conftest import Api, upload

URL = "/v1/admin/training-jobs"


def _create(api: Api, epochs: int) -> str:
    spec = {"streams": [{"stream_id": "bed-1"}], "hyperparameters": {"epochs": epochs}}
    created = api.client.post(URL, json=spec, headers=api.auth(Role.admin))
    assert created.status_code == 202, created.text
    return created.json()["job_id"]


def _pages(api: Api, limit: int) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        reply = api.client.get(URL, params=params, headers=api.auth(Role.admin))
        assert reply.status_code == 200, reply.text
        body = reply.json()
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_training_jobs_newest_first_in_pages(api: Api, clip: Path) -> None:
    assert api.client.get(URL, headers=api.auth(Role.admin)).json() == {
        "data": [], "next_cursor": None
    }
    assert upload(api, clip).status_code == 202  # an analysis job: never listed here
    created = [_create(api, epochs) for epochs in (1, 2, 3, 4, 5)]
    # The oldest training job finishes: the list shows its result next to its request.
    api.queue.claim("test-worker", block_s=0.1)  # the analysis job
    claim = api.queue.claim("trainer", block_s=0.1)
    assert claim is not None and claim.job_id == created[0]
    metrics = ValidationMetrics(macro_f1=0.7)
    api.queue.complete(claim, TrainResult(version="m-new", parent_version="m-old",
                                          metrics=metrics, active_metrics=metrics, promoted=True))

    pages = _pages(api, limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [job for page in pages for job in page]
    assert [job["job_id"] for job in listed] == created[::-1]
    assert [job["spec"]["hyperparameters"]["epochs"] for job in listed] == [5, 4, 3, 2, 1]
    assert {job["kind"] for job in listed} == {"train"}
    oldest = listed[-1]
    assert oldest["status"] == "succeeded" and oldest["result"]["version"] == "m-new"
    assert listed[0]["status"] == "queued" and listed[0]["result"] is None
    # One page holds everything when the limit allows.
    assert _pages(api, limit=100) == [listed]


def test_foreign_or_malformed_cursors_are_refused(api: Api) -> None:
    admin = api.auth(Role.admin)
    for i in range(2):
        api.store.models.register(
            ModelVersion(version=f"m-{i}", path="x", arch="resnet18", classes=["fall"])
        )
    models_cursor = api.client.get(
        "/v1/admin/models", params={"limit": 1}, headers=admin
    ).json()["next_cursor"]
    for cursor in (models_cursor, "not-a-cursor"):
        reply = api.client.get(URL, params={"cursor": cursor}, headers=admin)
        assert reply.status_code == 422 and reply.json()["code"] == "invalid_cursor"
    assert api.client.get(URL, headers=api.auth(Role.ingest)).status_code == 403


def test_jobs_queued_before_the_kind_index_are_indexed_once(api: Api) -> None:
    spec = TrainingJobSpec.model_validate({"streams": [{"stream_id": "bed-1"}]})
    old = api.queue.enqueue(TrainPayload(spec=spec))
    keys = api.store.keys

    def forget_index() -> None:  # a deployment from before the index: no index, no marker
        api.store.r.delete(keys.jobs_by_kind("train"), keys.jobs_kind_index_ready())

    forget_index()
    assert index_job_kinds(api.queue) == 1
    assert index_job_kinds(api.queue) == 0  # the marker: done once
    assert api.store.r.zrange(keys.jobs_by_kind("train"), 0, -1) == [old.job_id]

    forget_index()  # the list route back-fills by itself
    (listed,) = api.client.get(URL, headers=api.auth(Role.admin)).json()["data"]
    assert listed["job_id"] == old.job_id
    assert datetime.fromisoformat(listed["created_at"]) == old.created_at
    assert api.store.r.exists(keys.jobs_kind_index_ready())
