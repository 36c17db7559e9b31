"""Synthetic training frames rendered straight into memory (no MP4 round trip).

Used where speed matters more than the codec (the default detector trained on first use, the
pre-training corpus of the experiments): frames are rendered at chosen times, resized to
``size x size`` and labeled exactly like :mod:`lab.synth.writer` labels its CSV files.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lab.datasets import ClipFrames
from lab.synth.render import SynthClip, label_boxes, render_frame
from lab.synth.writer import SynthConfig, build_clip, clip_refs
from model.data import FrameSet


def sample_times(clip: SynthClip, fps: float, event_fps: float) -> list[int]:
    """Frame indices at ``fps``, plus every frame at ``event_fps`` while the patient falls
    (falls last about a second, so a plain 1-2 fps grid would see one or two falling frames)."""
    step = max(1, round(clip.fps / fps))
    chosen = set(range(0, clip.n_frames, step))
    if event_fps > 0:
        event_step = max(1, round(clip.fps / event_fps))
        for seg in clip.actors[0].segments:
            if seg.state == "falling":
                first, last = math.ceil(seg.t0 * clip.fps), math.floor(seg.t1 * clip.fps)
                chosen.update(range(first, min(last + 1, clip.n_frames), event_step))
    return sorted(chosen)


def render_clip_frames(
    cfg: SynthConfig,
    *,
    fps: float,
    size: int,
    event_fps: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> ClipFrames:
    """Every clip of ``cfg`` sampled at ``fps`` (plus falls at ``event_fps``), as frames
    ``(N,3,size,size) uint8`` with targets ``(N,C)`` and union boxes ``(N,C,4)``."""
    classes = tuple(cfg.classes)
    column = {name: i for i, name in enumerate(classes)}
    frames, targets, boxes, names, times = [], [], [], [], []
    refs = list(clip_refs(cfg))
    for done, ref in enumerate(refs, start=1):
        clip = build_clip(cfg, ref)
        for index in sample_times(clip, fps, event_fps):
            rendered = render_frame(clip, index)
            target = torch.zeros(len(classes))
            box = torch.full((len(classes), 4), math.nan)
            for label, (x0, y0, x1, y1) in label_boxes(rendered.people, classes):
                c = column[label]
                target[c] = 1.0
                new = torch.tensor([x0, y0, x1, y1], dtype=torch.float32)
                box[c] = new if torch.isnan(box[c, 0]) else _union(box[c], new)
            frames.append(torch.from_numpy(np.ascontiguousarray(rendered.image)).permute(2, 0, 1))
            targets.append(target)
            boxes.append(box)
            names.append(ref.name)
            times.append(index / clip.fps)
        if progress is not None:
            progress(done, len(refs))
    stack = _resize(torch.stack(frames), size)
    scale = torch.tensor([size / cfg.width, size / cfg.height] * 2)
    data = FrameSet(stack, torch.stack(targets), classes, torch.stack(boxes) * scale)
    return ClipFrames(data, tuple(names), torch.tensor(times, dtype=torch.float64))


def _union(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.minimum(a[:2], b[:2]), torch.maximum(a[2:], b[2:])])


def _resize(frames: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """``(N,3,H,W) uint8 -> (N,3,size,size) uint8`` (bilinear, antialiased), in chunks."""
    out = []
    for start in range(0, frames.shape[0], chunk):
        x = frames[start : start + chunk].float()
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)
