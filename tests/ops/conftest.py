"""Fixtures of the ops tests: a tiny detector trained here, clips with known events, a queue,
a store and worker settings on the test Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import redis

from service.jobs import JobQueue
from service.keys import Keys
from service.schemas import ModelVersion, Segment, Thresholds
from service.store import Store
from tests.support.clips import square_event_frames, write_clip

CLASSES = ["square", "other"]
TINY_RECIPE = "v4"  # bump when the recipe below changes (invalidates the cached checkpoint)
FPS = 2.0
REPO = Path(__file__).resolve().parents[2]


def _frames(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip-like frames (96x128): grey background, a red square in half of them, with noise."""
    rng = np.random.default_rng(seed)
    with_square = square_event_frames([(0.0, 1.0)])
    frames, targets = [], []
    for i in range(n):
        present = i % 2 == 0
        image = with_square(0.5 if present else 2.0).astype(np.int16)
        image = image + rng.integers(-6, 7, size=image.shape)
        frames.append(np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1))
        targets.append([1.0 if present else 0.0, 0.0])
    return np.stack(frames), np.array(targets, dtype=np.float32)


@pytest.fixture(scope="session")
def tiny_checkpoint(pytestconfig: pytest.Config) -> Path:
    """A resnet18 at 64 px trained here for a few seconds to see the red square of the clips.

    Kept in pytest's cache folder (keyed by the training recipe) so that repeated runs on a
    busy machine do not retrain it; a fresh checkout trains it from scratch.
    """
    import torch

    from model.checkpoint import read_meta
    from model.data import FrameSet
    from model.train import TrainConfig, train

    out = Path(pytestconfig.cache.mkdir(f"vigil-ops-tiny-model-{TINY_RECIPE}"))
    target = out / "tiny.safetensors"
    if target.exists():
        return target
    if not (out / "best.safetensors").exists():
        frames, targets = _frames(48, seed=0)
        val_frames, val_targets = _frames(16, seed=1)
        labeled = FrameSet(torch.from_numpy(frames), torch.from_numpy(targets), tuple(CLASSES))
        val = FrameSet(torch.from_numpy(val_frames), torch.from_numpy(val_targets), tuple(CLASSES))
        config = TrainConfig(
            classes=CLASSES,
            input_size=64,
            mode="supervised",
            epochs=1,
            steps_per_epoch=12,
            batch_size=8,
            lr=1e-3,
            seed=0,
            val_consistency_frames=0,
            freeze_bn=True,
        )
        result = train(config, labeled, None, val, out_dir=out, progress=False, resume=False)
        assert result.history[-1].val_map is not None and result.history[-1].val_map > 0.9
    # The trainer's own event thresholds are used as they are (model.thresholds: the middle of
    # the gap between background ~0.1 and the square ~0.97); the clips' events must close.
    meta = read_meta(out / "best.safetensors")
    assert all(0.3 <= meta.thresholds_for(c).on <= 0.7 for c in CLASSES), meta.thresholds
    shutil.copyfile(out / "best.safetensors", target)
    (out / "last.safetensors").unlink(missing_ok=True)  # 130 MB of optimizer state
    return target


def event_clip(path: Path, intervals: list[tuple[float, float]], duration_s: float) -> Path:
    """A 96x128 H.264 clip at 10 fps with the red square during ``intervals``."""
    return write_clip(path, duration_s, fps=10, frame_fn=square_event_frames(intervals))


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def store(client: redis.Redis, redis_prefix: str) -> Store:
    return Store(client, Keys(redis_prefix))


@pytest.fixture
def queue(client: redis.Redis, redis_prefix: str) -> JobQueue:
    return JobQueue(
        client,
        Keys(redis_prefix),
        visibility_timeout_s=3.0,
        max_attempts=3,
        retry_backoff_s=0.1,
        worker_ttl_s=5.0,
    )


def register_model(store: Store, checkpoint: Path, *, activate: bool = True) -> ModelVersion:
    """Add a checkpoint to the registry (and make it active)."""
    from model.checkpoint import read_meta

    meta = read_meta(checkpoint)
    model = ModelVersion(
        version=meta.version,
        path=str(checkpoint),
        arch=meta.arch,
        classes=meta.classes,
        metrics={},
        thresholds={c: Thresholds(**meta.thresholds_for(c).model_dump()) for c in meta.classes},
    )
    store.models.register(model)
    if activate:
        store.models.activate(meta.version)
    return model


def add_segment(
    store: Store,
    data_dir: Path,
    stream_id: str,
    segment_id: str,
    clip: Path,
    start: datetime,
    duration_s: float,
) -> Segment:
    """What the API does on upload: the file under DATA_DIR/segments and a segment record."""
    target = data_dir / "segments" / f"{segment_id}{clip.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(clip.read_bytes())
    segment = Segment(
        segment_id=segment_id,
        stream_id=stream_id,
        start=start,
        duration_s=duration_s,
        size_bytes=target.stat().st_size,
        content_type="video/mp4",
        path=str(target.relative_to(data_dir)),
        width=128,
        height=96,
        job_id=None,
    )
    store.segments.put(segment)
    return segment


def worker_env(redis_url: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a `python -m worker` subprocess on the test Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        {
            "VIGIL_REDIS_URL": redis_url,
            "VIGIL_REDIS_PREFIX": prefix,
            "VIGIL_DATA_DIR": str(data_dir),
            "VIGIL_DEVICE": "cpu",
            "VIGIL_HEARTBEAT_INTERVAL_S": "0.5",
            "VIGIL_JOB_VISIBILITY_TIMEOUT_S": "3",
            "VIGIL_ANALYSIS_FPS": str(FPS),
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
        }
    )
    env.update(extra)
    return env


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker", *args]


T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)

# torchvision 0.29 deprecates its JPEG encoder (worker.overlay uses it, as issue 4 asks);
# the warning must not turn overlay rendering into a test error.
TORCHVISION_JPEG = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill what is still running of ``procs`` (emptying the list) and close their pipes."""
    while procs:
        proc = procs.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts: stopped when it ends, also when it fails."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    stop_processes(procs)
