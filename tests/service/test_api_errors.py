"""Every documented error returns its status and a problem+json body with its stable code."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.schemas import AuditAction, Role
from tests.service.conftest import T0, Api, simulate_analysis, upload

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == PROBLEM_FIELDS and body["status"] == status and body["code"] == code
    return body


def post_video(api: Api, data: bytes, content_type: str = "video/mp4", start: str = T0.isoformat()):
    return api.client.post(
        "/v1/streams/bed-1/segments",
        params={"start": start},
        content=data,
        headers={**api.auth(Role.ingest), "Content-Type": content_type},
    )


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MP4 with one AAC audio stream and no video."""
    path = tmp_path_factory.mktemp("audio") / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, i * 1024, Fraction(1, 16000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_upload_errors(api: Api, clip: Path, audio_only: Path) -> None:
    data = clip.read_bytes()
    assert_problem(post_video(api, b"x" * 2_100_000), 413, "payload_too_large")
    assert_problem(post_video(api, data, content_type="text/plain"), 415, "unsupported_media_type")
    assert_problem(post_video(api, audio_only.read_bytes()), 415, "no_video_stream")
    assert_problem(post_video(api, b"\x00garbage" * 500), 422, "undecodable")
    assert_problem(post_video(api, data[: len(data) // 2]), 422, "truncated")
    assert_problem(post_video(api, b""), 422, "empty_file")
    assert_problem(post_video(api, data, start="yesterday"), 422, "invalid_start")
    no_file = api.client.post(
        "/v1/streams/bed-1/segments",
        params={"start": T0.isoformat()},
        files={"other": ("a.mp4", data, "video/mp4")},
        headers=api.auth(Role.ingest),
    )
    assert_problem(no_file, 415, "unsupported_media_type")
    # Nothing was queued or kept by the failed uploads.
    assert api.queue.depth() == 0
    assert not any((api.settings.data_dir / "segments").iterdir())


@pytest.fixture
def tight_api(settings: Settings) -> Iterator[Api]:
    """An app with a one-job queue and 1-second segments."""
    tight = settings.model_copy(update={"queue_max_length": 1, "max_segment_duration_s": 1.0})
    app = create_app(tight)
    with TestClient(app) as client:
        key = app.state.store.api_keys.create("ingest", Role.ingest)[1]
        yield Api(client, app.state.store, app.state.queue, tight, {Role.ingest: key})


def test_queue_full_and_duration_limit(tight_api: Api, clip: Path, tmp_path: Path) -> None:
    from tests.support.clips import write_clip

    short = write_clip(tmp_path / "short.mp4", 0.5, fps=10)
    assert_problem(upload(tight_api, clip), 413, "too_long")
    assert upload(tight_api, short).status_code == 202
    full = assert_problem(upload(tight_api, short), 503, "queue_full")
    assert full["status"] == 503
    response = upload(tight_api, short)
    assert int(response.headers["retry-after"]) > 0
    assert tight_api.queue.depth() == 1


def test_not_found_and_conflict_codes(api: Api, clip: Path) -> None:
    admin, viewer = api.auth(Role.admin), api.auth(Role.viewer)
    get = api.client.get
    assert_problem(get("/v1/events/nope", headers=viewer), 404, "event_not_found")
    assert_problem(get("/v1/events/nope/overlay", headers=viewer), 404, "event_not_found")
    assert_problem(get("/v1/segments/nope", headers=viewer), 404, "segment_not_found")
    assert_problem(get("/v1/segments/nope/video", headers=viewer), 404, "segment_not_found")
    assert_problem(get("/v1/jobs/nope", headers=viewer), 404, "job_not_found")
    assert_problem(get("/v1/streams/ghost/events", headers=viewer), 404, "stream_not_found")
    assert_problem(get("/v1/streams/ghost/labels", headers=viewer), 404, "stream_not_found")
    assert_problem(get("/v1/admin/training-jobs/nope", headers=admin), 404, "job_not_found")
    assert_problem(
        api.client.post("/v1/admin/models/nope/activate", headers=admin), 404, "model_not_found"
    )
    assert_problem(api.client.delete("/v1/admin/keys/nope", headers=admin), 404, "key_not_found")
    assert_problem(get("/v1/no-such-route", headers=viewer), 404, "not_found")
    assert_problem(api.client.put("/v1/streams", headers=viewer), 405, "method_not_allowed")
    admin_id = api.store.api_keys.verify(api.keys[Role.admin]).key_id
    assert_problem(
        api.client.delete(f"/v1/admin/keys/{admin_id}", headers=admin), 409, "last_admin_key"
    )
    # The analysis job of a segment is not a training job.
    job_id = upload(api, clip).json()["job_id"]
    assert_problem(get(f"/v1/admin/training-jobs/{job_id}", headers=admin), 404, "job_not_found")


def test_validation_codes(api: Api, clip: Path) -> None:
    viewer = api.auth(Role.viewer)
    segment_id = upload(api, clip).json()["segment_id"]
    event = simulate_analysis(api, segment_id)
    events = "/v1/streams/bed-1/events"
    assert_problem(
        api.client.get(events, params={"limit": 0}, headers=viewer), 422, "validation_error"
    )
    assert_problem(
        api.client.get(events, params={"cursor": "bogus"}, headers=viewer), 422, "invalid_cursor"
    )
    window = {"start": "2026-01-05T09:00:00Z", "end": "2026-01-05T08:00:00Z"}
    assert_problem(api.client.get(events, params=window, headers=viewer), 422, "invalid_window")
    # A cursor of one listing is refused by another.
    for _ in range(3):
        api.store.audit.append("k", AuditAction.read_event, "event:x")
    audit_cursor = api.client.get(
        "/v1/admin/audit", params={"limit": 1}, headers=api.auth()
    ).json()["next_cursor"]
    assert_problem(
        api.client.get(events, params={"cursor": audit_cursor}, headers=viewer),
        422,
        "invalid_cursor",
    )
    late = {"time": "2030-01-01T00:00:00Z"}
    overlay = f"/v1/events/{event.event_id}/overlay"
    assert_problem(api.client.get(overlay, params=late, headers=viewer), 422, "time_out_of_range")
    assert_problem(
        api.client.get(overlay, params={"method": "lime"}, headers=viewer), 422, "validation_error"
    )
    bad_label = {"label": "fall", "start": "2026-01-05T08:00:03Z", "end": "2026-01-05T08:00:01Z"}
    labels = "/v1/streams/bed-1/labels"
    assert_problem(
        api.client.post(labels, json=bad_label, headers=api.auth(Role.ingest)),
        422,
        "validation_error",
    )
    spec = {"streams": [{"stream_id": "ghost"}]}
    training = api.client.post("/v1/admin/training-jobs", json=spec, headers=api.auth())
    assert_problem(training, 422, "unknown_stream")
    spec = {"streams": [{"stream_id": "bed-1"}], "unlabeled_segment_ids": ["seg-nope"]}
    assert_problem(
        api.client.post("/v1/admin/training-jobs", json=spec, headers=api.auth()),
        422,
        "unknown_segment",
    )


def test_idempotency_in_progress_is_a_conflict(api: Api, clip: Path) -> None:
    key_id = api.store.api_keys.verify(api.keys[Role.ingest]).key_id
    signature = f"POST /v1/streams/bed-1/segments?start={T0.isoformat()}"
    assert (
        api.store.idempotency.begin(key_id, "busy", signature) is None
    )  # another request holds it
    assert_problem(upload(api, clip, **{"Idempotency-Key": "busy"}), 409, "idempotency_in_progress")
    # A failed upload releases its key, so the client may retry with the same key.
    bad = post_video(api, b"junk" * 100)
    assert bad.status_code == 422
    api.client.post(
        "/v1/streams/bed-1/segments",
        params={"start": T0.isoformat()},
        content=b"junk" * 100,
        headers={
            **api.auth(Role.ingest),
            "Content-Type": "video/mp4",
            "Idempotency-Key": "retry-me",
        },
    )
    assert upload(api, clip, **{"Idempotency-Key": "retry-me"}).status_code == 202


def test_redis_down_is_503(settings: Settings) -> None:
    dead = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(dead)) as client:
        response = client.get("/v1/streams", headers={"Authorization": "Bearer whatever"})
        assert_problem(response, 503, "redis_unavailable")
        assert client.get("/readyz").json() == {
            "status": "not_ready",
            "redis": False,
            "live_workers": 0,
        }


def test_naive_times_are_read_as_utc(api: Api, clip: Path) -> None:
    viewer = api.auth(Role.viewer)
    event = simulate_analysis(api, upload(api, clip).json()["segment_id"])
    window = {"start": "2026-01-05T08:00:02", "end": "2026-01-05T08:00:03.5"}
    found = api.client.get("/v1/streams/bed-1/events", params=window, headers=viewer)
    assert [e["event_id"] for e in found.json()["data"]] == [event.event_id]
    after = {"start": "2026-01-05T08:00:04"}
    assert (
        api.client.get("/v1/streams/bed-1/events", params=after, headers=viewer).json()["data"]
        == []
    )
    keyframe = {"time": "2026-01-05T08:00:02"}
    overlay = api.client.get(
        f"/v1/events/{event.event_id}/overlay", params=keyframe, headers=viewer
    )
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/jpeg"
