"""Write a synthetic dataset: H.264 MP4 clips, interval labels, per-frame boxes, a clip manifest.

Layout under the output root::

    clips/r003_c001.mp4     one clip (room 3, clip 1)
    labels.csv              clip,label,start_s,end_s   (half-open; clip relative to the root)
    boxes.csv               clip,t_s,x0,y0,x1,y1,label (frame pixels, exclusive ends)
    clips.csv               clip,room,seed,duration_s,fps,width,height
    synth.json              the configuration that made it

Everything is a pure function of the configuration (seeded), so the same command makes the same
files (the MP4 bytes depend on the libx264 build; the decoded pictures do not change meaning).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lab.synth.render import DEFAULT_CLASSES, SynthClip, label_boxes, make_clip, render_frame
from lab.synth.room import sample_room
from lab.synth.scenario import ScenarioConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Rooms ``room_offset .. room_offset+rooms-1`` each get ``clips_per_room``
    clips; a room's layout depends only on ``(seed, room id)``, so disjoint room ranges give
    disjoint rooms for pre-training and testing."""

    rooms: int = 4
    clips_per_room: int = 3
    room_offset: int = 0
    duration_s: float = 20.0
    fps: float = 10.0
    width: int = 320
    height: int = 240
    seed: int = 0
    classes: tuple[str, ...] = DEFAULT_CLASSES
    crf: int = 23
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even (H.264 4:2:0)")
        if self.rooms < 1 or self.clips_per_room < 1 or self.duration_s <= 0 or self.fps <= 0:
            raise ValueError("rooms, clips_per_room, duration_s and fps must be positive")


@dataclass(frozen=True)
class ClipRef:
    """Where one clip of a dataset comes from."""

    name: str
    room: int
    seed: int


def clip_refs(cfg: SynthConfig) -> Iterator[ClipRef]:
    """The clips of ``cfg`` in order, with their seeds."""
    for room in range(cfg.room_offset, cfg.room_offset + cfg.rooms):
        for index in range(cfg.clips_per_room):
            seed = int(np.random.SeedSequence([cfg.seed, room, index]).generate_state(1)[0])
            yield ClipRef(name=f"clips/r{room:03d}_c{index:03d}.mp4", room=room, seed=seed)


def build_clip(cfg: SynthConfig, ref: ClipRef) -> SynthClip:
    """The :class:`SynthClip` behind ``ref``."""
    room_seed = np.random.SeedSequence([cfg.seed, ref.room, 1_000_003])
    room = sample_room(np.random.default_rng(room_seed), cfg.width, cfg.height)
    return make_clip(room, ref.seed, cfg.duration_s, cfg.fps, cfg.scenario)


def intervals(flags: np.ndarray, fps: float) -> list[tuple[float, float]]:
    """Maximal runs of ``True`` in per-frame ``flags`` as half-open ``[start_s, end_s)``."""
    padded = np.concatenate([[False], flags.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(start / fps, end / fps) for start, end in zip(edges[::2], edges[1::2], strict=True)]


def write_clip(
    cfg: SynthConfig, ref: ClipRef, root: Path
) -> tuple[list[tuple[str, str, float, float]], list[tuple[str, float, int, int, int, int, str]]]:
    """Render and encode one clip; returns its label rows and box rows."""
    clip = build_clip(cfg, ref)
    path = root / ref.name
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = {label: np.zeros(clip.n_frames, dtype=bool) for label in cfg.classes}
    boxes: list[tuple[str, float, int, int, int, int, str]] = []
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(cfg.fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = cfg.width, cfg.height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(cfg.crf)}
        stream.codec_context.time_base = 1 / Fraction(cfg.fps).limit_denominator(1000)
        for index in range(clip.n_frames):
            rendered = render_frame(clip, index)
            t_s = round(index / cfg.fps, 6)
            for label, (x0, y0, x1, y1) in label_boxes(rendered.people, cfg.classes):
                flags[label][index] = True
                boxes.append((ref.name, t_s, x0, y0, x1, y1, label))
            frame = av.VideoFrame.from_ndarray(rendered.image, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    labels = [
        (ref.name, label, round(s, 6), round(e, 6))
        for label in cfg.classes
        for s, e in intervals(flags[label], cfg.fps)
    ]
    return labels, boxes


def write_dataset(
    cfg: SynthConfig, root: str | Path, *, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Generate every clip of ``cfg`` under ``root`` with its CSV files; returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    refs = list(clip_refs(cfg))
    with (
        (root / "labels.csv").open("w", newline="") as lf,
        (root / "boxes.csv").open("w", newline="") as bf,
        (root / "clips.csv").open("w", newline="") as cf,
    ):
        labels, boxes, clips = csv.writer(lf), csv.writer(bf), csv.writer(cf)
        labels.writerow(["clip", "label", "start_s", "end_s"])
        boxes.writerow(["clip", "t_s", "x0", "y0", "x1", "y1", "label"])
        clips.writerow(["clip", "room", "seed", "duration_s", "fps", "width", "height"])
        for done, ref in enumerate(refs, start=1):
            label_rows, box_rows = write_clip(cfg, ref, root)
            labels.writerows(label_rows)
            boxes.writerows(box_rows)
            clips.writerow(
                [ref.name, ref.room, ref.seed, cfg.duration_s, cfg.fps, cfg.width, cfg.height]
            )
            if progress is not None:
                progress(done, len(refs))
    (root / "synth.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    logger.info("wrote %d synthetic clips to %s", len(refs), root)
    return root
