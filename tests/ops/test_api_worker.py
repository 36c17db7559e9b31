"""The real API with a real worker (a consumer thread) on the real Redis: upload -> job ->
events -> overlays; retraining through the admin API; activation and rollback change the model
the worker uses for the next job."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.schemas import Role
from service.store import Store
from tests.ops.conftest import T0, TORCHVISION_JPEG, event_clip, register_model
from worker.consumer import Consumer
from worker.handlers import WorkerConfig

pytestmark = TORCHVISION_JPEG
STEP = 0.5


@dataclass
class Stack:
    """The API client, an admin key, the store and the worker running beside the app."""

    client: TestClient
    admin: dict[str, str]
    store: Store
    consumer: Consumer
    data_dir: Path

    def upload(self, stream_id: str, clip: Path, offset_s: float = 0.0) -> dict:
        start = T0.timestamp() + offset_s
        response = self.client.post(
            f"/v1/streams/{stream_id}/segments",
            params={"start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))},
            content=clip.read_bytes(),
            headers={**self.admin, "Content-Type": "video/mp4"},
        )
        assert response.status_code == 202, response.text
        return response.json()

    def wait_job(self, job_id: str, timeout_s: float = 240.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}", headers=self.admin).json()
            if job["status"] in ("succeeded", "failed"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.fixture
def stack(
    tiny_checkpoint: Path, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[Stack]:
    data = tmp_path / "data"
    settings = Settings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=data,
        analysis_fps=2.0,
        device="cpu",
        heartbeat_interval_s=0.5,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        store: Store = app.state.store
        register_model(store, tiny_checkpoint)
        _, key = store.api_keys.create("ops-admin", Role.admin)
        consumer = Consumer(
            app.state.queue, store, WorkerConfig.from_settings(settings), heartbeat_interval_s=0.5
        )
        thread = threading.Thread(target=consumer.run, kwargs={"block_s": 0.2}, daemon=True)
        thread.start()
        try:
            yield Stack(client, {"Authorization": f"Bearer {key}"}, store, consumer, data)
        finally:
            consumer.request_stop(immediate=True)
            thread.join(timeout=60)


def test_upload_job_events_and_overlays_through_the_api(stack: Stack, tmp_path: Path) -> None:
    clip = event_clip(tmp_path / "clip.mp4", [(2.0, 5.0)], duration_s=8.0)
    accepted = stack.upload("bed-7", clip)
    job = stack.wait_job(accepted["job_id"])
    assert job["status"] == "succeeded" and job["progress"] == 1.0, job
    ready = stack.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["live_workers"] >= 1
    events = stack.client.get("/v1/streams/bed-7/events", headers=stack.admin).json()["data"]
    [event] = [e for e in events if e["label"] == "square"]
    assert abs(_offset(event["start"]) - 2.0) <= STEP and abs(_offset(event["end"]) - 5.0) <= STEP
    image = stack.client.get(event["keyframe"]["overlay_url"], headers=stack.admin)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content[:2] == b"\xff\xd8"
    url = f"/v1/events/{event['event_id']}/overlay"
    params = {"method": "guided_backprop", "wait": 30}
    guided = stack.client.get(url, params=params, headers=stack.admin)
    if guided.status_code == 202:  # a slow machine: the render job is still running
        stack.wait_job(guided.json()["job_id"])
        guided = stack.client.get(url, params=params, headers=stack.admin)
    assert guided.status_code == 200, guided.text
    assert guided.headers["content-type"] == "image/jpeg" and guided.content != image.content


def _offset(iso: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(iso.replace("Z", "+00:00")) - T0).total_seconds()


@pytest.mark.slow
def test_retraining_registers_a_version_and_activation_switches_the_worker(
    stack: Stack, tmp_path: Path
) -> None:
    clips = [
        event_clip(tmp_path / f"c{i}.mp4", [(1.0 + i, 4.0 + i)], duration_s=8.0) for i in range(3)
    ]
    for i, clip in enumerate(clips):
        stack.wait_job(stack.upload("ward-3", clip, offset_s=20.0 * i)["job_id"])
    for i in range(3):  # what a clinician confirms
        body = {
            "label": "square",
            "start": _iso(20.0 * i + 1.0 + i),
            "end": _iso(20.0 * i + 4.0 + i),
        }
        response = stack.client.post("/v1/streams/ward-3/labels", json=body, headers=stack.admin)
        assert response.status_code == 201, response.text
    original = stack.store.models.active_version()
    spec = {
        "streams": [{"stream_id": "ward-3"}],
        "method": "supervised",
        "promotion": "manual",
        "hyperparameters": {
            "epochs": 1,
            "batch_size": 8,
            "sample_fps": 2.0,
            "learning_rate": 1e-4,
            "val_fraction": 0.34,
        },
    }
    created = stack.client.post("/v1/admin/training-jobs", json=spec, headers=stack.admin)
    assert created.status_code == 202, created.text
    stack.wait_job(created.json()["job_id"], timeout_s=600)
    training = stack.client.get(
        f"/v1/admin/training-jobs/{created.json()['job_id']}", headers=stack.admin
    ).json()
    assert training["status"] == "succeeded", training
    result = training["result"]
    assert result["parent_version"] == original and result["promoted"] is False
    assert 0.0 <= result["metrics"]["macro_f1"] <= 1.0 and result["active_metrics"] is not None
    new = result["version"]
    assert (stack.data_dir / "models" / f"{new}.safetensors").is_file()
    models = stack.client.get("/v1/admin/models", headers=stack.admin).json()["data"]
    assert {m["version"] for m in models} == {original, new}
    assert stack.store.models.active_version() == original  # manual promotion

    for version in (new, original):  # activate, then roll back
        response = stack.client.post(f"/v1/admin/models/{version}/activate", headers=stack.admin)
        assert response.status_code == 200, response.text
        job = stack.wait_job(stack.upload("ward-3", clips[0], offset_s=500.0)["job_id"])
        record = stack.store.segments.get_frames(_segment_of(stack, job["job_id"]))
        assert record.model_version == version


def _iso(offset_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0.timestamp() + offset_s)) + (
        f".{round((offset_s % 1) * 1000):03d}Z"
    )


def _segment_of(stack: Stack, job_id: str) -> str:
    job = stack.consumer.queue.get(job_id)
    return job.payload.segment_id
