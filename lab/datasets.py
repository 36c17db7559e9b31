"""Datasets from labeled video: interval labels -> sampled frames with multi-hot targets.

Labels are CSV ``clip,label,start_s,end_s`` (extra columns such as UP-Fall's ``note`` are ignored),
intervals half-open, ``clip`` relative to a root folder. Optional boxes are CSV
``clip,t_s,x0,y0,x1,y1,label`` in pixels of the clip. Frames are decoded by
:mod:`worker.decode` (the same sampling as the product) at an analysis rate and resized to
``size x size``, as :class:`model.preprocess.Preprocessing` would. Splits are always by clip (or
by a group of clips such as a room or a trial), so no clip has frames on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from model.data import FrameSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interval:
    """``label`` holds in ``clip`` during ``[start_s, end_s)``."""

    clip: str
    label: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class BoxRow:
    """A labeled box at time ``t_s`` of ``clip`` (clip pixels, exclusive ends)."""

    clip: str
    t_s: float
    box: tuple[float, float, float, float]
    label: str


def read_intervals(path: str | Path) -> list[Interval]:
    """Read an interval label CSV (columns ``clip,label,start_s,end_s``; others ignored)."""
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"clip", "label", "start_s", "end_s"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        return [
            Interval(row["clip"], row["label"], float(row["start_s"]), float(row["end_s"]))
            for row in reader
        ]


def read_boxes(path: str | Path) -> list[BoxRow]:
    """Read a box CSV (``clip,t_s,x0,y0,x1,y1,label``)."""
    with Path(path).open(newline="") as handle:
        return [
            BoxRow(
                row["clip"],
                float(row["t_s"]),
                (float(row["x0"]), float(row["y0"]), float(row["x1"]), float(row["y1"])),
                row["label"],
            )
            for row in csv.DictReader(handle)
        ]


def targets_at(
    intervals: Iterable[Interval], t_s: torch.Tensor, classes: Sequence[str]
) -> torch.Tensor:
    """Multi-hot targets ``(N, C) float32`` at times ``t_s (N,)`` from one clip's intervals."""
    column = {name: i for i, name in enumerate(classes)}
    out = torch.zeros(len(t_s), len(classes))
    for iv in intervals:
        c = column.get(iv.label)
        if c is not None:
            out[(t_s >= iv.start_s) & (t_s < iv.end_s), c] = 1.0
    return out


@dataclass(frozen=True)
class ClipFrames:
    """A :class:`FrameSet` that remembers each frame's clip and time.

    ``clips[i]`` and ``t_s[i]`` (``(N,) float64``) belong to frame ``i`` of ``frames``.
    """

    frames: FrameSet
    clips: tuple[str, ...]
    t_s: torch.Tensor

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, index: torch.Tensor | list[int]) -> ClipFrames:
        """The frames at ``index`` (long indices or a bool mask)."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = torch.nonzero(idx).reshape(-1)
        idx = idx.long()
        return ClipFrames(
            self.frames.subset(idx), tuple(self.clips[i] for i in idx.tolist()), self.t_s[idx]
        )

    def of_clips(self, names: Iterable[str]) -> ClipFrames:
        """Only the frames of the clips in ``names``."""
        wanted = set(names)
        return self.subset(torch.tensor([c in wanted for c in self.clips], dtype=torch.bool))

    @property
    def clip_names(self) -> list[str]:
        """Distinct clips, in first-seen order."""
        return list(dict.fromkeys(self.clips))

    @staticmethod
    def concat(parts: Sequence[ClipFrames]) -> ClipFrames:
        return ClipFrames(
            FrameSet.concat([p.frames for p in parts]),
            tuple(c for p in parts for c in p.clips),
            torch.cat([p.t_s for p in parts]),
        )


def load_clip_frames(
    root: str | Path,
    intervals: Sequence[Interval],
    clips: Sequence[str],
    classes: Sequence[str],
    *,
    fps: float,
    size: int,
    boxes: Sequence[BoxRow] | None = None,
    cache_dir: str | Path | None = None,
) -> ClipFrames:
    """Decode ``clips`` (paths relative to ``root``) at ``fps``, resize to ``size``, label them.

    Returns frames ``(N,3,size,size) uint8`` with targets ``(N,C)`` and, when ``boxes`` are given,
    boxes ``(N,C,4)`` (the union of a class's boxes in that frame, scaled to ``size``; NaN where
    none). With ``cache_dir`` the decoded frames of each clip are kept as ``.safetensors``.
    """
    by_clip: dict[str, list[Interval]] = defaultdict(list)
    for iv in intervals:
        by_clip[iv.clip].append(iv)
    boxes_by_clip: dict[str, list[BoxRow]] = defaultdict(list)
    for row in boxes or ():
        boxes_by_clip[row.clip].append(row)
    parts = []
    for clip in clips:
        frames, t_s, scale = decoded_clip(Path(root), clip, fps, size, cache_dir)
        targets = targets_at(by_clip.get(clip, ()), t_s, classes)
        box_t = None
        if boxes is not None:
            box_t = _frame_boxes(boxes_by_clip.get(clip, []), t_s, classes, scale)
        parts.append(
            ClipFrames(FrameSet(frames, targets, tuple(classes), box_t), (clip,) * len(t_s), t_s)
        )
    return ClipFrames.concat(parts)


def decoded_clip(
    root: Path, clip: str, fps: float, size: int, cache_dir: str | Path | None
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """``(N,3,size,size) uint8`` frames, ``(N,)`` times and the (x, y) scale from clip pixels."""
    from safetensors.torch import load_file, save_file

    path = root / clip
    cache = None
    if cache_dir is not None:
        stat = path.stat()
        key = hashlib.sha256(
            f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{fps}|{size}".encode()
        )
        cache = Path(cache_dir) / f"{key.hexdigest()[:24]}.safetensors"
        if cache.is_file():
            data = load_file(str(cache))
            return data["frames"], data["t_s"], (float(data["scale"][0]), float(data["scale"][1]))
    frames, t_s, scale = decode_resized(path, fps, size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"frames": frames, "t_s": t_s, "scale": torch.tensor(scale)}, str(cache))
    return frames, t_s, scale


def decode_resized(
    path: Path, fps: float, size: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """Sample ``path`` at ``fps`` with :mod:`worker.decode` and resize to ``size x size``."""
    from worker.decode import DecodeOptions, decode_frames

    samples = decode_frames(path, DecodeOptions(fps=fps, max_side=None))
    if not samples:
        raise ValueError(f"{path}: no frames")
    h, w = samples[0].frame.shape[1:]
    stack = torch.stack([s.frame for s in samples]).float()
    resized = F.interpolate(
        stack, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    frames = resized.round().clamp(0, 255).to(torch.uint8)
    t_s = torch.tensor([s.t_s for s in samples], dtype=torch.float64)
    return frames, t_s, (size / w, size / h)


def _frame_boxes(
    rows: list[BoxRow], t_s: torch.Tensor, classes: Sequence[str], scale: tuple[float, float]
) -> torch.Tensor:
    """``(N,C,4)`` union box per (frame, class) from rows within half a millisecond of the frame."""
    column = {name: i for i, name in enumerate(classes)}
    out = torch.full((len(t_s), len(classes), 4), math.nan)
    if not rows:
        return out
    times = torch.tensor([r.t_s for r in rows], dtype=torch.float64)
    for i, t in enumerate(t_s.tolist()):
        for j in torch.nonzero((times - t).abs() < 5e-4).reshape(-1).tolist():
            c = column.get(rows[j].label)
            if c is None:
                continue
            x0, y0, x1, y1 = rows[j].box
            new = torch.tensor([x0 * scale[0], y0 * scale[1], x1 * scale[0], y1 * scale[1]])
            old = out[i, c]
            out[i, c] = (
                new
                if torch.isnan(old[0])
                else torch.cat([torch.minimum(old[:2], new[:2]), torch.maximum(old[2:], new[2:])])
            )
    return out


# ----------------------------------------------------------------------------- splits and sampling


def split_groups(
    clips: Sequence[str], group: Callable[[str], str], held_out: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Clips whose ``group(clip)`` is not / is in ``held_out`` (e.g. a room or a trial)."""
    test = set(held_out)
    return [c for c in clips if group(c) not in test], [c for c in clips if group(c) in test]


def split_clips(clips: Sequence[str], n_first: int, *, seed: int) -> tuple[list[str], list[str]]:
    """A seeded random split of clips into ``n_first`` clips and the rest (order kept)."""
    order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(seed)).tolist()
    first = set(order[:n_first])
    return [c for i, c in enumerate(clips) if i in first], [
        c for i, c in enumerate(clips) if i not in first
    ]


def k_shot(data: ClipFrames, k: int, *, seed: int, negatives: bool = True) -> list[int]:
    """Indices of a k-shot labeled set: at least ``k`` frames positive for every class (rarest
    class first; a frame counts for every class it shows), plus ``k`` frames with no label when
    ``negatives`` (so the model also sees empty rooms). Fewer when a class has fewer frames."""
    gen = torch.Generator().manual_seed(seed)
    targets = data.frames.targets > 0.5
    chosen: list[int] = []
    for c in torch.argsort(targets.sum(0)).tolist():
        have = int(targets[chosen, c].sum()) if chosen else 0
        taken = set(chosen)
        pool = [i for i in torch.nonzero(targets[:, c]).reshape(-1).tolist() if i not in taken]
        take = max(k - have, 0)
        picks = torch.randperm(len(pool), generator=gen)[:take].tolist()
        chosen.extend(pool[p] for p in picks)
    if negatives:
        empty = torch.nonzero(~targets.any(1)).reshape(-1).tolist()
        chosen.extend(empty[p] for p in torch.randperm(len(empty), generator=gen)[:k].tolist())
    return sorted(chosen)


def upfall_trial(clip: str) -> str:
    """``upfall-s1/A3_S1_T2_Cam1.mp4`` -> ``T2`` (the group for trial-wise splits)."""
    parts = Path(clip).stem.split("_")
    return next((p for p in parts if p.startswith("T") and p[1:].isdigit()), "")


def synth_room(clip: str) -> str:
    """``clips/r003_c001.mp4`` -> ``r003`` (the group for room-wise splits)."""
    return Path(clip).stem.split("_")[0]
