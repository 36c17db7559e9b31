"""What an upload must be: a sane start time, a real stream id, a video container; and how the
stored video is served (issue "Never stall, never lose a trace", items 8 and 11)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from service.schemas import Role, Segment
from tests.service.conftest import T0, Api, jpeg_bytes, upload
from tests.service.test_api_errors import assert_problem, post_video
from tests.support.clips import write_clip


@pytest.mark.parametrize(
    "start",
    [
        "9999-12-31T23:59:59Z",  # was a 500 (the segment's end overflows)
        "0001-01-01T00:00:00Z",  # was accepted, then every analysis failed (OverflowError)
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2100-01-01T05:00:00+05:00",
        "9999-12-31T23:59:59-23:59",  # past year 9999 once in UTC: was a 500
        "0001-01-01T00:00:00+23:59",
    ],
)
def test_start_out_of_range_is_422(api: Api, clip: Path, start: str) -> None:
    assert_problem(post_video(api, clip.read_bytes(), start=start), 422, "invalid_start")
    assert api.queue.depth() == 0
    assert not any((api.settings.data_dir / "segments").glob("*"))


@pytest.mark.parametrize("time", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_times_beyond_datetime_in_utc_are_422_everywhere(api: Api, clip: Path, time: str) -> None:
    assert upload(api, clip).status_code == 202
    viewer, ingest = api.auth(Role.viewer), api.auth(Role.ingest)
    for name in ("start", "end", "updated_since"):
        response = api.client.get("/v1/streams/bed-1/events", params={name: time}, headers=viewer)
        assert response.status_code == 422, (name, response.text)
    for body in (
        {"label": "fall", "start": time, "end": "2026-01-05T08:00:01Z"},
        {"label": "fall", "start": "2026-01-05T08:00:00Z", "end": time},
    ):
        response = api.client.post("/v1/streams/bed-1/labels", json=body, headers=ingest)
        assert_problem(response, 422, "validation_error")


def test_start_range_bounds_and_offsets(api: Api, clip: Path) -> None:
    data = clip.read_bytes()
    for start, stored in [
        ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00+00:00"),
        ("2099-12-31T23:00:00Z", "2099-12-31T23:00:00+00:00"),
        ("2100-01-01T03:00:00+05:00", "2099-12-31T22:00:00+00:00"),
        ("2026-01-05T08:00:00", "2026-01-05T08:00:00+00:00"),  # no offset: UTC
    ]:
        response = post_video(api, data, start=start)
        assert response.status_code == 202, (start, response.text)
        segment = api.store.segments.get(response.json()["segment_id"])
        assert segment.start.isoformat() == stored


@pytest.mark.parametrize("stream_id", ["%2E", "%2E%2E", "...", "%2e%2E"])
def test_dot_stream_ids_are_refused(api: Api, clip: Path, stream_id: str) -> None:
    response = api.client.post(
        f"/v1/streams/{stream_id}/segments",
        params={"start": T0.isoformat()},
        content=clip.read_bytes(),
        headers={**api.auth(Role.ingest), "Content-Type": "video/mp4"},
    )
    assert_problem(response, 422, "invalid_stream_id")
    viewer = api.auth(Role.viewer)
    read = api.client.get(f"/v1/streams/{stream_id}/events", headers=viewer)
    assert_problem(read, 422, "invalid_stream_id")
    assert api.queue.depth() == 0
    # Dots inside a name stay allowed.
    assert upload(api, clip, stream="bed.1-a_b").status_code == 202


def _png_bytes() -> bytes:
    image = np.random.default_rng(0).integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = 128, 96, "rgb24"
    codec.time_base = Fraction(1, 25)
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_images_are_not_videos(api: Api, kind: str) -> None:
    data = _png_bytes() if kind == "png" else jpeg_bytes()
    assert_problem(post_video(api, data), 415, "not_a_video")
    multipart = api.client.post(
        "/v1/streams/bed-1/segments",
        params={"start": T0.isoformat()},
        files={"file": (f"frame.{kind}", data, "application/octet-stream")},
        headers=api.auth(Role.ingest),
    )
    assert_problem(multipart, 415, "not_a_video")
    assert api.queue.depth() == 0
    assert not any((api.settings.data_dir / "segments").glob("*"))


def _served_type(api: Api, segment_id: str) -> str:
    viewer = api.auth(Role.viewer)
    metadata = api.client.get(f"/v1/segments/{segment_id}", headers=viewer).json()
    video = api.client.get(metadata["video_url"], headers=viewer)
    assert video.status_code == 200
    assert metadata["content_type"] == video.headers["content-type"]
    return video.headers["content-type"]


def test_videos_are_served_with_their_container_type(api: Api, clip: Path, tmp_path: Path) -> None:
    ts = write_clip(tmp_path / "clip.ts", 1.0, fps=10)
    mkv = write_clip(tmp_path / "clip.mkv", 1.0, fps=10)
    cases = [
        (ts, "application/octet-stream", "video/mp2t"),
        (mkv, "application/octet-stream", "video/x-matroska"),
        (clip, "application/octet-stream", "video/mp4"),
        (clip, "video/x-not-a-real-type", "video/mp4"),  # declared wrongly: the container wins
        (clip, "video/quicktime", "video/quicktime"),  # the same container family: kept
        (mkv, "video/webm", "video/webm"),
    ]
    for path, declared, served in cases:
        if declared.startswith("video/"):
            response = post_video(api, path.read_bytes(), content_type=declared)
        else:
            response = api.client.post(
                "/v1/streams/bed-1/segments",
                params={"start": T0.isoformat()},
                files={"file": (path.name, path.read_bytes(), declared)},
                headers=api.auth(Role.ingest),
            )
        assert response.status_code == 202, response.text
        assert _served_type(api, response.json()["segment_id"]) == served, (path.name, declared)


def test_untyped_records_are_served_by_their_container(api: Api, clip: Path) -> None:
    """Segments stored before uploads were typed by their container carry
    application/octet-stream; their video is still served as what it is."""
    folder = api.settings.data_dir / "segments"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seg-old.video").write_bytes(clip.read_bytes())
    api.store.segments.put(
        Segment(
            segment_id="seg-old",
            stream_id="bed-1",
            start=T0,
            duration_s=4.0,
            size_bytes=clip.stat().st_size,
            content_type="application/octet-stream",
            path="segments/seg-old.video",
            width=128,
            height=96,
        )
    )
    video = api.client.get("/v1/segments/seg-old/video", headers=api.auth(Role.viewer))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content == clip.read_bytes()
