"""Frame sets from real labeled data: interval-labeled clips, YOLO-layout image sets, empty rooms.

- :func:`sample_labeled_clips`: clips with interval labels (``clip,label,start_s,end_s``) ->
  frames at a base rate, plus every frame at a dense rate inside short events (a fall lasts
  0.3-1 s: at 2 frames/s it would give one or two frames).
- :func:`yolo_person_frameset`: a YOLO-layout image set (``images/<split>/X.jpg``,
  ``labels/<split>/X.txt`` with ``class cx cy w h`` normalised rows, class names one per line) ->
  ``person_present`` when a person box covers at least ``min_area`` of the image,
  ``multiple_people`` when two do; the union person box as the frame's box.
- :func:`median_backgrounds`: the per-pixel temporal median of clips in which the person keeps
  moving (e.g. walking) is the empty room: real negatives for the cameras of the training set.
- :func:`oversample`: indices that repeat frames of rare classes (class balance).

Frames are ``(N,3,size,size) uint8``, squashed to a square as :class:`model.preprocess.
Preprocessing` does with video frames.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from lab.datasets import ClipFrames, Interval, decoded_clip, targets_at
from model.data import FrameSet

PERSON = "person_present"
MULTIPLE = "multiple_people"


def sample_labeled_clips(
    root: str | Path,
    intervals: Sequence[Interval],
    clips: Sequence[str],
    classes: Sequence[str],
    *,
    size: int,
    fps: float = 2.0,
    dense_fps: float = 9.0,
    dense_labels: Sequence[str] = ("falling",),
    dense_margin_s: float = 0.25,
    cache_dir: str | Path | None = None,
) -> ClipFrames:
    """Frames of ``clips`` at ``fps``, and at ``dense_fps`` within ``dense_margin_s`` of every
    interval of a label in ``dense_labels``; targets from ``intervals``.

    Returns:
        :class:`lab.datasets.ClipFrames` with frames ``(N,3,size,size) uint8``.
    """
    if dense_fps < fps:
        raise ValueError("dense_fps must be at least fps")
    by_clip: dict[str, list[Interval]] = defaultdict(list)
    for iv in intervals:
        by_clip[iv.clip].append(iv)
    stride = max(1, round(dense_fps / fps))
    parts = []
    for clip in clips:
        frames, t_s, _ = decoded_clip(Path(root), clip, dense_fps, size, cache_dir)
        keep = torch.zeros(len(t_s), dtype=torch.bool)
        keep[::stride] = True
        for iv in by_clip.get(clip, ()):
            if iv.label in dense_labels:
                keep |= (t_s >= iv.start_s - dense_margin_s) & (t_s < iv.end_s + dense_margin_s)
        t_kept = t_s[keep]
        targets = targets_at(by_clip.get(clip, ()), t_kept, classes)
        parts.append(ClipFrames(FrameSet(frames[keep], targets, tuple(classes)),
                                (clip,) * len(t_kept), t_kept))
    return ClipFrames.concat(parts)


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line (YOLO's ``names``), blank lines ignored."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def yolo_person_frameset(
    root: str | Path,
    classes: Sequence[str],
    *,
    size: int,
    names_file: str = "coco80_names.txt",
    split: str = "train",
    min_area: float = 0.02,
    images: Sequence[str] | None = None,
) -> tuple[FrameSet, list[str]]:
    """Images of a YOLO-layout set with person targets and boxes.

    Args:
        root: folder with ``images/<split>/``, ``labels/<split>/`` and ``names_file``.
        classes: the detector's classes (``person_present`` / ``multiple_people`` are set; the
            others stay 0: a photo shows no fall).
        size: output side.
        min_area: a person box counts when it covers at least this fraction of the image.
        images: file names to take (default: every image, sorted).

    Returns:
        ``(FrameSet with boxes (N,C,4), file names)``.
    """
    root = Path(root)
    names = read_class_names(root / names_file)
    person_id = names.index("person")
    folder = root / "images" / split
    files = sorted(images) if images is not None else sorted(
        p.name for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    column = {name: i for i, name in enumerate(classes)}
    frames, targets, boxes = [], [], []
    for name in files:
        image = Image.open(folder / name).convert("RGB")
        tensor = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        tensor = tensor.reshape(image.height, image.width, 3).permute(2, 0, 1)
        frames.append(_square(tensor, size))
        people = _person_boxes(root / "labels" / split / f"{Path(name).stem}.txt", person_id,
                               min_area)
        target = torch.zeros(len(classes))
        box = torch.full((len(classes), 4), math.nan)
        if people and PERSON in column:
            target[column[PERSON]] = 1.0
            union = torch.tensor(people).reshape(-1, 4)
            box[column[PERSON]] = torch.cat([union[:, :2].min(0).values,
                                             union[:, 2:].max(0).values]) * size
        if len(people) >= 2 and MULTIPLE in column:
            target[column[MULTIPLE]] = 1.0
        targets.append(target)
        boxes.append(box)
    data = FrameSet(torch.stack(frames), torch.stack(targets), tuple(classes), torch.stack(boxes))
    return data, files


def _person_boxes(path: Path, person_id: int, min_area: float) -> list[list[float]]:
    """Normalised ``[x0, y0, x1, y1]`` of the person boxes of one YOLO label file."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) < 5 or int(float(fields[0])) != person_id:
            continue
        cx, cy, w, h = (float(v) for v in fields[1:5])
        if w * h >= min_area:
            out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return out


def _square(frame: torch.Tensor, size: int) -> torch.Tensor:
    """``(3,H,W) uint8 -> (3,size,size) uint8`` (bilinear, antialiased)."""
    resized = F.interpolate(frame[None].float(), size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def median_backgrounds(
    root: str | Path, clips: Sequence[str], classes: Sequence[str], *, size: int,
    fps: float = 2.0, cache_dir: str | Path | None = None,
) -> FrameSet:
    """One all-negative frame per clip: the per-pixel temporal median of its frames at ``fps``.

    Only meaningful for clips in which every person keeps moving through the view."""
    frames = []
    for clip in clips:
        decoded, _, _ = decoded_clip(Path(root), clip, fps, size, cache_dir)
        frames.append(decoded.median(dim=0).values)
    stack = torch.stack(frames)
    return FrameSet(stack, torch.zeros(len(frames), len(classes)), tuple(classes))


def oversample(targets: torch.Tensor, *, max_repeat: int = 8) -> torch.Tensor:
    """Indices ``(M,) int64`` that show each frame ``r`` times, ``r`` in ``[1, max_repeat]``.

    ``r`` is the frame's rarest positive class's ``(N / count)`` relative to the most common
    class (frames with no label count as one more class), so rare classes (falls) are seen as
    often as common ones up to ``max_repeat``.
    """
    positive = targets > 0.5
    groups = torch.cat([positive, ~positive.any(1, keepdim=True)], dim=1)  # (N, C+1)
    counts = groups.sum(0).clamp(min=1).float()
    weight = (counts.max() / counts)[None].expand_as(groups)
    per_frame = torch.where(groups, weight, torch.zeros_like(weight)).max(1).values
    repeats = per_frame.round().clamp(1, max_repeat).long()
    return torch.repeat_interleave(torch.arange(len(targets)), repeats)


__all__ = [
    "median_backgrounds",
    "oversample",
    "read_class_names",
    "sample_labeled_clips",
    "yolo_person_frameset",
]
