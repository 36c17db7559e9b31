"""The whole path through the API: upload -> job -> events -> overlay -> segment video, audited."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from service.jobs import JobStatus, RenderOverlayResult
from service.schemas import AuditAction, ModelVersion, Role
from tests.service.conftest import T0, Api, jpeg_bytes, simulate_analysis, upload


def test_upload_job_events_overlay_video(api: Api, clip: Path) -> None:
    viewer = api.auth(Role.viewer)
    accepted = upload(api, clip)
    assert accepted.status_code == 202, accepted.text
    segment_id, job_id = accepted.json()["segment_id"], accepted.json()["job_id"]
    job = api.client.get(f"/v1/jobs/{job_id}", headers=viewer).json()
    assert (job["status"], job["kind"], job["attempts"]) == ("queued", "analyze_segment", 0)
    assert api.client.get(f"/v1/segments/{segment_id}", headers=viewer).json()["status"] == "queued"

    simulate_analysis(api, segment_id)

    assert api.client.get(f"/v1/jobs/{job_id}", headers=viewer).json()["status"] == "succeeded"
    streams = api.client.get("/v1/streams", headers=viewer).json()["data"]
    assert streams == [
        {
            "stream_id": "bed-1",
            "last_segment_end": (T0 + timedelta(seconds=4)).isoformat().replace("+00:00", "Z"),
            "segment_count": 1,
            "event_count": 1,
            "event_counts": {"fall": 1},
        }
    ]
    timeline = api.client.get("/v1/streams/bed-1/events", headers=viewer).json()
    (event,) = timeline["data"]
    assert timeline["next_cursor"] is None
    assert event["label"] == "fall" and event["open"] is False
    assert event["keyframe"]["overlay_url"] == f"/v1/events/{event['event_id']}/overlay"

    detail = api.client.get(f"/v1/events/{event['event_id']}", headers=viewer).json()
    # Frames every 0.5 s; the event covers [1, 3] s: 1.0, 1.5, 2.0, 2.5, 3.0.
    assert [f["scores"]["fall"] for f in detail["frames"]] == [0.9, 0.9, 0.9, 0.9, 0.05]

    overlay = api.client.get(event["keyframe"]["overlay_url"], headers=viewer)
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/jpeg"
    assert overlay.content[:2] == b"\xff\xd8"
    etag = overlay.headers["etag"]
    cached = api.client.get(
        event["keyframe"]["overlay_url"], headers={**viewer, "If-None-Match": etag}
    )
    assert cached.status_code == 304 and cached.headers["etag"] == etag and not cached.content

    segment = api.client.get(f"/v1/segments/{segment_id}", headers=viewer).json()
    assert segment["status"] == "analysed" and segment["frames_analysed"] == 8
    assert (segment["width"], segment["height"], segment["codec"]) == (128, 96, "h264")
    assert "path" not in segment
    video = api.client.get(segment["video_url"], headers=viewer)
    assert video.status_code == 200 and video.content == clip.read_bytes()
    assert video.headers["content-type"] == "video/mp4"


def test_overlay_of_another_method_is_rendered_by_a_job(api: Api, clip: Path) -> None:
    viewer = api.auth(Role.viewer)
    segment_id = upload(api, clip).json()["segment_id"]
    event = simulate_analysis(api, segment_id)
    url = f"/v1/events/{event.event_id}/overlay"
    at = (event.start + timedelta(seconds=0.5)).isoformat()
    params = {"method": "guided_backprop", "time": at}
    queued = api.client.get(url, params=params, headers=viewer)
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert (
        job["kind"] == "render_overlay"
        and queued.headers["location"] == f"/v1/jobs/{job['job_id']}"
    )
    # A second request while it is queued shares the job instead of queueing another.
    assert api.client.get(url, params=params, headers=viewer).json()["job_id"] == job["job_id"]
    assert api.queue.depth() == 1

    claim = api.queue.claim("test-worker", block_s=0.1)
    payload = claim.job.payload
    assert (payload.method, payload.segment_id, payload.offset_s) == (
        "guided_backprop",
        segment_id,
        1.5,
    )
    target = api.settings.data_dir / payload.overlay_relpath()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(jpeg_bytes(seed=7))
    api.queue.complete(
        claim, RenderOverlayResult(overlay_path=payload.overlay_relpath(), model_version="m")
    )
    assert api.queue.get(job["job_id"]).status is JobStatus.SUCCEEDED

    image = api.client.get(url, params=params, headers=viewer)
    assert image.status_code == 200 and image.content == jpeg_bytes(seed=7)
    keyframe = api.client.get(url, headers=viewer)
    assert keyframe.content != image.content and keyframe.headers["etag"] != image.headers["etag"]


def test_multipart_upload_and_range_requests(api: Api, clip: Path) -> None:
    data = clip.read_bytes()
    response = api.client.post(
        "/v1/streams/icu-3/segments",
        params={"start": "2026-01-05T09:00:00Z"},
        files={"file": ("clip.mp4", data, "application/octet-stream")},
        headers=api.auth(Role.ingest),
    )
    assert response.status_code == 202, response.text
    segment_id = response.json()["segment_id"]
    viewer = api.auth(Role.viewer)
    segment = api.client.get(f"/v1/segments/{segment_id}", headers=viewer).json()
    assert segment["content_type"] == "video/mp4" and segment["size_bytes"] == len(data)
    url = segment["video_url"]
    part = api.client.get(url, headers={**viewer, "Range": "bytes=10-109"})
    assert part.status_code == 206 and part.content == data[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(data)}"
    tail = api.client.get(url, headers={**viewer, "Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    beyond = api.client.get(url, headers={**viewer, "Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.json()["code"] == "range_not_satisfiable"
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert beyond.headers["content-type"] == "application/problem+json"


def test_idempotency_key_returns_first_response_and_queues_once(api: Api, clip: Path) -> None:
    first = upload(api, clip, **{"Idempotency-Key": "rec-7-0001"})
    again = upload(api, clip, **{"Idempotency-Key": "rec-7-0001"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert api.queue.depth() == 1
    assert len(api.store.segments.in_range("bed-1", T0, T0 + timedelta(hours=1))) == 1
    other = upload(api, clip, start=T0 + timedelta(minutes=5), **{"Idempotency-Key": "rec-7-0001"})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    fresh = upload(api, clip, **{"Idempotency-Key": "rec-7-0002"})
    assert fresh.status_code == 202 and fresh.json()["segment_id"] != first.json()["segment_id"]
    assert api.queue.depth() == 2


def test_reads_are_audited_without_patient_data(api: Api, clip: Path) -> None:
    segment_id = upload(api, clip).json()["segment_id"]
    event = simulate_analysis(api, segment_id)
    viewer = api.auth(Role.viewer)
    viewer_id = api.store.api_keys.verify(api.keys[Role.viewer]).key_id
    for path in (
        "/v1/streams/bed-1/events",
        f"/v1/events/{event.event_id}",
        f"/v1/events/{event.event_id}/overlay",
        f"/v1/segments/{segment_id}",
        f"/v1/segments/{segment_id}/video",
    ):
        assert api.client.get(path, headers=viewer).status_code == 200, path
    entries = api.client.get(
        "/v1/admin/audit", params={"key_id": viewer_id}, headers=api.auth()
    ).json()["data"]
    got = [(e["action"], e["resource"]) for e in reversed(entries)]
    assert got == [
        (AuditAction.read_timeline, "stream:bed-1"),
        (AuditAction.read_event, f"event:{event.event_id}"),
        (AuditAction.read_overlay, f"event:{event.event_id}"),
        (AuditAction.read_segment, f"segment:{segment_id}"),
        (AuditAction.read_video, f"segment:{segment_id}"),
    ]
    assert set(entries[0]) == {
        "id",
        "time",
        "key_id",
        "key_hash",
        "action",
        "route",
        "resource",
        "status",
        "count",
    }
    assert all(e["status"] == 200 and e["count"] == 1 for e in entries)
    # A failed read (unknown event) is an access attempt too: it is logged with its status.
    api.client.get("/v1/events/nope", headers=viewer)
    latest = api.client.get(
        "/v1/admin/audit", params={"key_id": viewer_id}, headers=api.auth()
    ).json()["data"]
    assert len(latest) == 6
    assert (latest[0]["resource"], latest[0]["status"]) == ("event:nope", 404)


def test_labels_models_and_keys(api: Api, clip: Path) -> None:
    upload(api, clip)
    ingest, admin = api.auth(Role.ingest), api.auth(Role.admin)
    body = {"label": "fall", "start": "2026-01-05T08:00:01Z", "end": "2026-01-05T08:00:03Z"}
    created = api.client.post("/v1/streams/bed-1/labels", json=body, headers=ingest)
    assert created.status_code == 201
    labels = api.client.get("/v1/streams/bed-1/labels", headers=api.auth(Role.viewer)).json()[
        "data"
    ]
    assert [(lb["label"], lb["label_id"]) for lb in labels] == [
        ("fall", created.json()["label_id"])
    ]

    new = api.client.post(
        "/v1/admin/keys", json={"name": "dashboard", "role": "viewer"}, headers=admin
    )
    assert new.status_code == 201
    key = new.json()["key"]
    me = api.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
    assert me == {"key_id": new.json()["key_id"], "name": "dashboard", "role": "viewer"}
    listed = api.client.get("/v1/admin/keys", headers=admin).json()["data"]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    revoked = api.client.delete(f"/v1/admin/keys/{new.json()['key_id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert api.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_training_job_models_activate_and_rollback(api: Api, clip: Path) -> None:
    from service.jobs import TrainResult, ValidationMetrics

    admin = api.auth(Role.admin)
    upload(api, clip)
    api.queue.claim("test-worker", block_s=0.1)  # the analysis job, out of the way
    spec = {
        "streams": [{"stream_id": "bed-1"}],
        "method": "atcon_guided_backprop",
        "hyperparameters": {"epochs": 2, "consistency_weight": 0.3},
        "promotion": "auto",
    }
    created = api.client.post("/v1/admin/training-jobs", json=spec, headers=admin)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["kind"] == "train" and job["status"] == "queued" and job["result"] is None
    assert (
        job["spec"]["method"] == "atcon_guided_backprop"
        and job["spec"]["hyperparameters"]["epochs"] == 2
    )

    # What the retraining worker does: register both versions, complete with the metrics.
    models = api.settings.data_dir / "models"
    models.mkdir(parents=True)
    for i, version in enumerate(["m-old", "m-new"]):
        (models / f"{version}.safetensors").write_bytes(b"weights")
        api.store.models.register(
            ModelVersion(
                version=version,
                path=f"models/{version}.safetensors",
                arch="resnet18",
                classes=["fall"],
                metrics={"macro_f1": 0.6 + i / 10},
                created_at=T0 + timedelta(minutes=i),
            )
        )
    api.store.models.activate("m-old")
    claim = api.queue.claim("trainer", block_s=0.1)
    assert claim.job_id == job["job_id"]
    api.queue.complete(
        claim,
        TrainResult(
            version="m-new",
            parent_version="m-old",
            metrics=ValidationMetrics(macro_f1=0.7),
            active_metrics=ValidationMetrics(macro_f1=0.6),
            promoted=False,
        ),
    )
    done = api.client.get(f"/v1/admin/training-jobs/{job['job_id']}", headers=admin).json()
    assert done["status"] == "succeeded"
    assert (
        done["result"]["metrics"]["macro_f1"],
        done["result"]["active_metrics"]["macro_f1"],
    ) == (0.7, 0.6)

    listed = api.client.get("/v1/admin/models", headers=admin).json()["data"]
    assert [(m["version"], m["active"]) for m in listed] == [("m-new", False), ("m-old", True)]
    activated = api.client.post("/v1/admin/models/m-new/activate", headers=admin)
    assert activated.status_code == 200 and activated.json()["active"] is True
    assert api.store.models.active_version() == "m-new"
    rollback = api.client.post("/v1/admin/models/m-old/activate", headers=admin)
    assert rollback.json()["version"] == "m-old" and api.store.models.active_version() == "m-old"
    page = api.client.get("/v1/admin/models", params={"limit": 1}, headers=admin).json()
    rest = api.client.get(
        "/v1/admin/models", params={"cursor": page["next_cursor"]}, headers=admin
    ).json()
    assert [m["version"] for m in page["data"] + rest["data"]] == ["m-new", "m-old"]

    (models / "m-new.safetensors").unlink()
    missing = api.client.post("/v1/admin/models/m-new/activate", headers=admin)
    assert missing.status_code == 409 and missing.json()["code"] == "model_file_missing"
    assert api.store.models.active_version() == "m-old"
    entries = api.client.get("/v1/admin/audit", headers=admin).json()["data"]
    activations = [e["status"] for e in entries if e["action"] == "activate_model"]
    assert sorted(activations) == [200, 200, 409]  # the failed attempt is audited too
    assert "create_training_job" in [e["action"] for e in entries]
