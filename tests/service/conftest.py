"""API fixtures: an app on the test Redis (own prefix), keys of each role, a tiny clip, and a
stand-in for the worker that writes results through the store as ``worker.handlers`` does."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.jobs import AnalyzeSegmentResult, JobQueue
from service.main import create_app
from service.schemas import Event, FrameScores, Role, SegmentStatus, to_epoch
from service.server import uvicorn_config
from service.store import Store
from tests.support.clips import square_event_frames, write_clip

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@dataclass
class Api:
    """A running app, its store and queue, and one key per role."""

    client: TestClient
    store: Store
    queue: JobQueue
    settings: Settings
    keys: dict[Role, str]

    def auth(self, role: Role = Role.admin) -> dict[str, str]:
        """Authorization header of the ``role`` key."""
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s, 10 fps, 128x96 H.264 MP4 with a red square during [1, 3) s."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    return write_clip(path, 4.0, fps=10, frame_fn=square_event_frames([(1.0, 3.0)]))


@pytest.fixture
def settings(redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        max_upload_bytes=2_000_000,
        max_segment_duration_s=60.0,
        queue_max_length=50,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    app = create_app(settings)
    with TestClient(app) as client:
        store: Store = app.state.store
        keys = {role: store.api_keys.create(f"test-{role.value}", role)[1] for role in Role}
        yield Api(client, store, app.state.queue, settings, keys)


def jpeg_bytes(seed: int = 0) -> bytes:
    """A small real JPEG (PyAV's mjpeg encoder)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = 64, 48, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    packets = codec.encode(frame) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def simulate_analysis(api: Api, segment_id: str, *, score: float = 0.9) -> Event:
    """Do what an analysis worker does for one segment: claim its job, store frame scores,
    one event with a key-frame overlay, mark the segment analysed, complete the job."""
    claim = api.queue.claim("test-worker", block_s=0.1)
    assert claim is not None and claim.job.payload.segment_id == segment_id
    segment = api.store.segments.get(segment_id)
    assert segment is not None
    t0 = to_epoch(segment.start)
    times = [t0 + i * 0.5 for i in range(8)]
    scores = [[score if 1.0 <= t - t0 < 3.0 else 0.05] for t in times]
    api.store.segments.put_frames(
        FrameScores(
            segment_id=segment_id,
            stream_id=segment.stream_id,
            model_version="m-test",
            classes=["fall"],
            times=times,
            scores=scores,
        )
    )
    overlay = Path("overlays") / segment_id / "keyframe-fall.jpg"
    (api.settings.data_dir / overlay).parent.mkdir(parents=True, exist_ok=True)
    (api.settings.data_dir / overlay).write_bytes(jpeg_bytes())
    event = Event(
        event_id=f"ev-{segment_id}",
        stream_id=segment.stream_id,
        label="fall",
        start=segment.start + timedelta(seconds=1),
        end=segment.start + timedelta(seconds=3),
        peak_score=score,
        mean_score=score,
        consistency=0.8,
        model_version="m-test",
        keyframe_time=segment.start + timedelta(seconds=2),
        keyframe_overlay=str(overlay),
        segment_ids=[segment_id],
    )
    api.store.events.write(segment.stream_id, [event], window=(segment.start, segment.end))
    api.store.segments.put(
        segment.model_copy(
            update={
                "status": SegmentStatus.analysed,
                "model_version": "m-test",
                "frames_analysed": 8,
            }
        )
    )
    api.store.add_frames_analysed(8)
    api.queue.complete(
        claim,
        AnalyzeSegmentResult(
            segment_id=segment_id, model_version="m-test", frames=8, events=1, overlays=1
        ),
    )
    return event


def upload(api: Api, clip: Path, stream: str = "bed-1", start: datetime = T0, **headers: str):
    """POST the clip as a raw video/mp4 body."""
    return api.client.post(
        f"/v1/streams/{stream}/segments",
        params={"start": start.isoformat()},
        content=clip.read_bytes(),
        headers={**api.auth(Role.ingest), "Content-Type": "video/mp4", **headers},
    )


@dataclass
class LiveApi:
    """The app served by uvicorn (Vigil's protocol class) in a thread, on a real socket."""

    port: int
    store: Store
    queue: JobQueue
    settings: Settings
    keys: dict[Role, str]

    def connect(self, timeout_s: float = 5.0) -> socket.socket:
        """A new TCP connection to the server."""
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s)
        conn.settimeout(timeout_s)
        return conn


def read_response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (status, lower-case headers, body) with Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


@contextlib.contextmanager
def live_server(settings: Settings) -> Iterator[LiveApi]:
    """Serve ``create_app(settings)`` with ``service.server.uvicorn_config`` until exit."""
    import uvicorn

    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        store: Store = app.state.store
        keys = {role: store.api_keys.create(f"live-{role.value}", role)[1] for role in Role}
        yield LiveApi(port, store, app.state.queue, settings, keys)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def live_api(settings: Settings) -> Iterator[LiveApi]:
    with live_server(settings) as live:
        yield live
