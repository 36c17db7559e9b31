"""The queue consumer in-process on the real Redis: analysis results, idempotent reruns, bad
inputs failing with their reason while the worker keeps serving, model swaps between jobs."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from service.jobs import AnalyzeSegmentPayload, JobQueue, JobStatus
from service.schemas import SegmentStatus
from service.store import EventQuery, Store
from tests.ops.conftest import T0, TORCHVISION_JPEG, add_segment, event_clip, register_model
from tests.support.clips import solid_frames, write_clip
from worker.consumer import Consumer
from worker.handlers import WorkerConfig

STEP = 0.5
pytestmark = TORCHVISION_JPEG


def make_consumer(queue: JobQueue, store: Store, data_dir: Path, **config: object) -> Consumer:
    cfg = WorkerConfig(data_dir=data_dir, analysis_fps=2.0, device="cpu", **config)
    return Consumer(queue, store, cfg, heartbeat_interval_s=0.5, worker_id="w-test")


def submit(
    queue: JobQueue,
    store: Store,
    data_dir: Path,
    clip: Path,
    segment_id: str,
    *,
    offset_s: float = 0.0,
    duration_s: float = 8.0,
    stream_id: str = "bed-1",
) -> str:
    segment = add_segment(
        store, data_dir, stream_id, segment_id, clip, T0 + timedelta(seconds=offset_s), duration_s
    )
    payload = AnalyzeSegmentPayload(
        stream_id=stream_id, segment_id=segment_id, video_path=segment.path, start=segment.start
    )
    return queue.enqueue(payload).job_id


def live_events(store: Store, stream_id: str = "bed-1") -> list:
    events, _ = store.events.list(stream_id, EventQuery(limit=100))
    return events


def test_analysis_stores_frames_events_and_overlays(
    tiny_checkpoint: Path, queue: JobQueue, store: Store, tmp_path: Path
) -> None:
    register_model(store, tiny_checkpoint)
    clip = event_clip(tmp_path / "clip.mp4", [(2.0, 5.0)], duration_s=8.0)
    job_id = submit(queue, store, tmp_path / "data", clip, "seg-a")
    assert make_consumer(queue, store, tmp_path / "data").run(burst=True) == 1
    job = queue.get(job_id)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.result.frames == 16 and job.attempts == 1
    [event] = [e for e in live_events(store) if e.label == "square"]
    assert abs((event.start - T0).total_seconds() - 2.0) <= STEP
    assert abs((event.end - T0).total_seconds() - 5.0) <= STEP
    overlay = tmp_path / "data" / event.keyframe_overlay
    assert overlay.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    segment = store.segments.get("seg-a")
    assert segment.status is SegmentStatus.analysed and segment.frames_analysed == 16
    assert len(store.segments.get_frames("seg-a").times) == 16
    assert store.frames_analysed() == 16


def test_rerun_of_a_job_leaves_one_set_of_events(
    tiny_checkpoint: Path, queue: JobQueue, store: Store, tmp_path: Path
) -> None:
    register_model(store, tiny_checkpoint)
    clip = event_clip(tmp_path / "clip.mp4", [(1.0, 3.0), (5.0, 7.0)], duration_s=8.0)
    data = tmp_path / "data"
    first = submit(queue, store, data, clip, "seg-a")
    consumer = make_consumer(queue, store, data)
    consumer.run(burst=True)
    before = {e.event_id: e for e in live_events(store)}
    assert len([e for e in before.values() if e.label == "square"]) == 2
    again = queue.enqueue(queue.get(first).payload)  # e.g. a crash after results were written
    make_consumer(queue, store, data).run(burst=True)
    assert queue.get(again.job_id).status is JobStatus.SUCCEEDED
    after = {e.event_id: e for e in live_events(store)}
    assert after == before  # same ids, same content, updated_at untouched


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = 16000, i * 1024, Fraction(1, 16000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_bad_inputs_fail_with_their_reason_while_others_succeed(
    tiny_checkpoint: Path, queue: JobQueue, store: Store, tmp_path: Path
) -> None:
    register_model(store, tiny_checkpoint)
    data = tmp_path / "data"
    good = event_clip(tmp_path / "good.mp4", [(1.0, 3.0)], duration_s=4.0)
    full = good.read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "cut.mp4").write_bytes(full[: len(full) // 2])
    (tmp_path / "notes.mp4").write_text("not a video\n" * 50)
    _audio_only(tmp_path / "audio.mp4")
    big = write_clip(tmp_path / "big.mp4", 2.0, fps=10, frame_fn=solid_frames(240, 320))
    inputs = [
        ("empty", tmp_path / "empty.mp4"),
        ("good-1", good),
        ("cut", tmp_path / "cut.mp4"),
        ("text", tmp_path / "notes.mp4"),
        ("audio", tmp_path / "audio.mp4"),
        ("big", big),
        ("good-2", good),
    ]
    jobs = {
        name: submit(
            queue,
            store,
            data,
            path,
            f"seg-{name}",
            offset_s=10.0 * i,
            duration_s=4.0,
            stream_id=f"s-{name}",
        )
        for i, (name, path) in enumerate(inputs)
    }
    # Oversized: 320x240 is above this limit, the 128x96 clips are below it.
    consumer = make_consumer(queue, store, data, max_pixels=200 * 200)
    assert consumer.run(burst=True) == len(inputs)
    outcome = {name: queue.get(job) for name, job in jobs.items()}
    assert outcome["good-1"].status is JobStatus.SUCCEEDED, outcome["good-1"].error
    assert outcome["good-2"].status is JobStatus.SUCCEEDED, outcome["good-2"].error
    codes = {n: (j.status, j.error.code if j.error else None) for n, j in outcome.items()}
    assert codes["empty"] == (JobStatus.FAILED, "empty_file")
    assert codes["cut"] == (JobStatus.FAILED, "truncated")
    assert codes["text"][0] is JobStatus.FAILED
    assert codes["text"][1] in {"undecodable", "no_video_stream"}
    assert codes["audio"] == (JobStatus.FAILED, "no_video_stream")
    assert codes["big"] == (JobStatus.FAILED, "too_large")
    for name in ("empty", "cut", "text", "audio", "big"):
        assert outcome[name].attempts == 1  # permanent: never retried
        assert store.segments.get(f"seg-{name}").status is SegmentStatus.failed
