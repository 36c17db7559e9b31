"""Worker fixtures: generated clips with known events and a tiny detector trained on them.

``tiny_checkpoint`` is a real (if tiny) resnet18 detector, trained from scratch for a few seconds
on frames decoded from a generated clip, seeded. Classes: ``red_square`` and ``blue_square``,
each drawn during known intervals. Other worker tests (consumer, timeline) may reuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.support.clips import write_clip

Intervals = list[tuple[float, float]]
CLASSES = ["red_square", "blue_square"]
HEIGHT, WIDTH = 96, 128
# Every combination (none, red, blue, both) appears, so the two labels are learnt independently.
TRAIN_EVENTS: dict[str, Intervals] = {
    "red_square": [(1.0, 3.0), (5.0, 7.0), (9.0, 11.0)],
    "blue_square": [(2.0, 4.0), (6.0, 8.0), (11.0, 13.0)],
}
TRAIN_SECONDS = 14.0


def two_square_frames(events: dict[str, Intervals]) -> Callable[[float], np.ndarray]:
    """Frame function: grey room; a red square (left) and/or a blue square (right) during
    their intervals. ``(H,W,3) uint8``."""
    rng = np.random.default_rng(0)
    base = np.clip(rng.normal(60, 6, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)

    def frame_at(t: float) -> np.ndarray:
        frame = base.copy()
        if any(s <= t < e for s, e in events.get("red_square", [])):
            frame[20:52, 10:42] = (220, 40, 40)
        if any(s <= t < e for s, e in events.get("blue_square", [])):
            frame[44:76, 80:112] = (40, 60, 220)
        return frame

    return frame_at


def event_clip(path: Path, events: dict[str, Intervals], duration_s: float, fps: int = 10) -> Path:
    """An H.264 clip of :func:`two_square_frames`."""
    return write_clip(path, duration_s, fps=fps, frame_fn=two_square_frames(events))


def remux(
    src: Path, dst: Path, container_format: str | None = None, options: dict[str, str] | None = None
) -> Path:
    """The same H.264 packets in another file (container from ``dst``'s suffix unless given)."""
    with av.open(str(src)) as inp, av.open(
        str(dst), "w", format=container_format, options=options or {}
    ) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def remux_faststart(src: Path, dst: Path) -> Path:
    """Same packets, ``moov`` index first (as ``-movflags faststart`` or a streaming camera)."""
    return remux(src, dst, options={"movflags": "faststart"})


def _targets(times: list[float], events: dict[str, Intervals]) -> torch.Tensor:
    return torch.tensor(
        [[float(any(s <= t < e for s, e in events[c])) for c in CLASSES] for t in times]
    )


def train_tiny_detector(out: Path, clip: Path, *, steps: int = 40, seed: int = 0) -> Path:
    """Train a resnet18 at 64 px on the clip's decoded frames (BCE, Adam) and save it."""
    from model.checkpoint import CheckpointMeta, LabelThresholds, save_checkpoint
    from model.detector import build_detector
    from model.preprocess import Preprocessing
    from worker.decode import DecodeOptions, decode_frames

    torch.manual_seed(seed)
    samples = decode_frames(clip, DecodeOptions(fps=5.0, max_side=None))
    frames = torch.stack([s.frame for s in samples])
    targets = _targets([s.t_s for s in samples], TRAIN_EVENTS)
    prep = Preprocessing(input_size=64)
    inputs = prep(frames)
    model = build_detector("resnet18", len(CLASSES))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    threads = torch.get_num_threads()
    # One intra-op thread: on a shared 2-core machine OpenMP spinning made 2 threads ~10x slower.
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            pick = torch.randint(0, len(inputs), (16,), generator=generator)
            logits = model(inputs[pick])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[pick])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    meta = CheckpointMeta(
        version="m-test-tiny",
        arch="resnet18",
        classes=CLASSES,
        input_size=64,
        thresholds={c: LabelThresholds(on=0.5, off=0.4) for c in CLASSES},
        training_config={"steps": steps, "seed": seed, "lr": 1e-3, "batch": 16},
    )
    save_checkpoint(out, model, meta)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny trained two-class detector (``red_square``, ``blue_square``)."""
    root = tmp_path_factory.mktemp("tiny-detector")
    clip = event_clip(root / "train.mp4", TRAIN_EVENTS, TRAIN_SECONDS)
    return train_tiny_detector(root / "tiny.safetensors", clip)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_checkpoint: Path):  # -> model.checkpoint.LoadedModel
    """The tiny detector, loaded on the CPU (shared: do not modify)."""
    from model.checkpoint import load_checkpoint

    return load_checkpoint(tiny_checkpoint)
