"""In-memory frame datasets for training and evaluation.

A :class:`FrameSet` is the one dataset type the trainer, the metrics and the experiments share:

- ``frames``: ``(N,3,H,W) uint8`` RGB, every frame the same size (the trainer's
  :class:`~model.preprocess.Preprocessing` resizes to the model's input size per batch);
- ``targets``: ``(N,C) float32`` multi-hot labels (1 = the class is present in the frame);
  an unlabeled set carries zeros, which nothing reads;
- ``classes``: ``C`` class names, in column order;
- ``boxes`` (optional): ``(N,C,4) float32`` ground-truth box ``(x0, y0, x1, y1)`` of each class in
  each frame, in pixels of ``frames`` with exclusive ends; NaN where the class has no box. One box
  per (frame, class): enough for the localisation metric of the ATCON paper.

On disk a FrameSet is one ``.safetensors`` file (tensors ``frames``, ``targets`` and maybe
``boxes``; the class list as JSON in the header). Loading never unpickles.

Frame folders (:func:`load_frame_folder`) are the hand-made input format::

    root/
      classes.txt          optional: one class name per line (fixes the column order)
      train/
        labels.csv         header "file,labels"; labels separated by ';' (empty = none)
        0001.jpg ...
        boxes.csv          optional: header "file,label,x0,y0,x1,y1"
      val/ ...
      unlabeled/           images only (no labels.csv needed)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save

from model.checkpoint import write_atomic

FRAMESET_KEY = "vigil_frameset"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class FrameSetError(ValueError):
    """A FrameSet file or frame folder is malformed."""


@dataclass(frozen=True)
class FrameSet:
    """Frames with multi-hot targets (see the module docstring for shapes and meaning)."""

    frames: torch.Tensor
    targets: torch.Tensor
    classes: tuple[str, ...]
    boxes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        f, t = self.frames, self.targets
        if f.dtype != torch.uint8 or f.ndim != 4 or f.shape[1] != 3:
            raise FrameSetError(f"frames must be (N,3,H,W) uint8, got {tuple(f.shape)} {f.dtype}")
        if t.ndim != 2 or t.shape != (f.shape[0], len(self.classes)):
            raise FrameSetError(
                f"targets must be (N,C)=({f.shape[0]},{len(self.classes)}), got {tuple(t.shape)}"
            )
        if t.dtype != torch.float32:
            object.__setattr__(self, "targets", t.float())
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise FrameSetError(f"classes must be non-empty and unique: {self.classes}")
        if self.boxes is not None and self.boxes.shape != (f.shape[0], len(self.classes), 4):
            raise FrameSetError(f"boxes must be (N,C,4), got {tuple(self.boxes.shape)}")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_classes(self) -> int:
        """``C``."""
        return len(self.classes)

    def subset(self, index: torch.Tensor | list[int] | slice) -> FrameSet:
        """The frames at ``index`` (a slice, a list of ints or a long/bool tensor)."""
        if isinstance(index, list):
            index = torch.tensor(index, dtype=torch.long)
        boxes = None if self.boxes is None else self.boxes[index]
        return FrameSet(self.frames[index], self.targets[index], self.classes, boxes)

    def split(self, first: int, *, seed: int = 0) -> tuple[FrameSet, FrameSet]:
        """A seeded random split into ``first`` frames and the rest."""
        if not 0 <= first <= len(self):
            raise ValueError(f"cannot take {first} of {len(self)} frames")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(order[:first]), self.subset(order[first:])

    def without_boxes(self) -> FrameSet:
        """The same frames and targets without boxes (to concatenate with sets that have none)."""
        return FrameSet(self.frames, self.targets, self.classes)

    def unlabeled(self) -> FrameSet:
        """The same frames with targets (and boxes) dropped: an unlabeled pool."""
        return FrameSet(self.frames, torch.zeros_like(self.targets), self.classes)

    def save(self, path: str | Path) -> Path:
        """Write to one ``.safetensors`` file atomically; returns the path."""
        path = Path(path)
        tensors = {
            "frames": self.frames.contiguous().cpu(),
            "targets": self.targets.contiguous().cpu(),
        }
        if self.boxes is not None:
            tensors["boxes"] = self.boxes.float().contiguous().cpu()
        header = json.dumps({"format_version": 1, "classes": list(self.classes)})
        write_atomic(path, safetensors_save(tensors, metadata={FRAMESET_KEY: header}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FrameSet:
        """Read a file written by :meth:`save` (never unpickles)."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                raw = (handle.metadata() or {}).get(FRAMESET_KEY)
                if raw is None:
                    raise FrameSetError(f"{path}: not a Vigil FrameSet (no {FRAMESET_KEY} header)")
                keys = set(handle.keys())
                tensors = {k: handle.get_tensor(k) for k in keys & {"frames", "targets", "boxes"}}
        except (SafetensorError, OSError) as exc:
            raise FrameSetError(f"{path}: not a safetensors file ({exc})") from exc
        header = json.loads(raw)
        if "frames" not in tensors or "targets" not in tensors:
            raise FrameSetError(f"{path}: missing 'frames' or 'targets'")
        classes = tuple(header["classes"])
        return cls(tensors["frames"], tensors["targets"], classes, tensors.get("boxes"))

    @classmethod
    def concat(cls, parts: list[FrameSet]) -> FrameSet:
        """Concatenate sets with the same classes and frame size (boxes kept if all have them)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        classes = parts[0].classes
        if any(p.classes != classes for p in parts):
            raise FrameSetError("cannot concatenate FrameSets with different classes")
        boxes = None
        if all(p.boxes is not None for p in parts):
            boxes = torch.cat([p.boxes for p in parts])  # type: ignore[misc]
        return cls(torch.cat([p.frames for p in parts]), torch.cat([p.targets for p in parts]),
                   classes, boxes)


# --------------------------------------------------------------------------- frame folders


def load_frame_folder(
    folder: str | Path,
    *,
    classes: list[str] | tuple[str, ...] | None = None,
    size: int | None = None,
) -> FrameSet:
    """Load one split folder (``root/<split>/``) of images.

    Args:
        folder: the split folder. With ``labels.csv`` (header ``file,labels``; labels separated by
            ``;``) only the listed files are read, in that order; without it every image in the
            folder is read (sorted by name) as an unlabeled set with zero targets.
        classes: the class order. Default: ``classes.txt`` in the folder or its parent, else the
            sorted set of labels found in ``labels.csv``.
        size: resize every image to ``size`` x ``size`` (bilinear, antialiased). ``None`` requires
            all images to share one size.

    Returns:
        A :class:`FrameSet` (with boxes when ``boxes.csv`` is present).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FrameSetError(f"{folder}: not a folder")
    rows = _read_labels(folder / "labels.csv")
    if rows is None:
        files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        rows = [(name, []) for name in files]
    names = tuple(classes) if classes is not None else _default_classes(folder, rows)
    if not names:
        raise FrameSetError(f"{folder}: no classes (give them, or add classes.txt)")
    if not rows:
        raise FrameSetError(f"{folder}: no images")
    column = {name: i for i, name in enumerate(names)}
    targets = torch.zeros(len(rows), len(names))
    frames, original_sizes = [], []
    for i, (file, labels) in enumerate(rows):
        for label in labels:
            if label not in column:
                raise FrameSetError(f"{folder}/labels.csv: unknown label {label!r} for {file}")
            targets[i, column[label]] = 1.0
        image = _read_image(folder / file)
        original_sizes.append((int(image.shape[1]), int(image.shape[2])))
        frames.append(_resize(image, size) if size is not None else image)
    if len({tuple(f.shape) for f in frames}) > 1:
        raise FrameSetError(f"{folder}: images differ in size; pass size=")
    boxes = _read_boxes(folder / "boxes.csv", [r[0] for r in rows], column, original_sizes, size)
    return FrameSet(torch.stack(frames), targets, names, boxes)


def _read_image(path: Path) -> torch.Tensor:
    """``(3,H,W) uint8`` RGB. Pillow, not ``torchvision.io``: its image codecs are deprecated
    since torchvision 0.29 (and Pillow is a torchvision dependency anyway)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise FrameSetError(f"{path}: unreadable image ({exc})") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _read_labels(path: Path) -> list[tuple[str, list[str]]] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"file", "labels"} <= set(reader.fieldnames):
            raise FrameSetError(f"{path}: header must be 'file,labels'")
        return [
            (row["file"], [s.strip() for s in (row["labels"] or "").split(";") if s.strip()])
            for row in reader
        ]


def _default_classes(folder: Path, rows: list[tuple[str, list[str]]]) -> tuple[str, ...]:
    for candidate in (folder / "classes.txt", folder.parent / "classes.txt"):
        if candidate.is_file():
            lines = candidate.read_text().splitlines()
            return tuple(line.strip() for line in lines if line.strip())
    return tuple(sorted({label for _, labels in rows for label in labels}))


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(3,H,W) uint8 -> (3,size,size) uint8``."""
    x = F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                      align_corners=False, antialias=True)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def _read_boxes(
    path: Path, files: list[str], column: dict[str, int], original_sizes: list[tuple[int, int]],
    size: int | None,
) -> torch.Tensor | None:
    if not path.is_file():
        return None
    index = {name: i for i, name in enumerate(files)}
    boxes = torch.full((len(files), len(column), 4), math.nan)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            i, c = index.get(row["file"]), column.get(row["label"])
            if i is None or c is None:
                raise FrameSetError(f"{path}: unknown file or label in {row}")
            box = torch.tensor([float(row[k]) for k in ("x0", "y0", "x1", "y1")])
            if size is not None:  # boxes are given in original pixels; scale them with the frame
                original_h, original_w = original_sizes[i]
                box = box * torch.tensor([size / original_w, size / original_h] * 2)
            boxes[i, c] = box
    return boxes


# --------------------------------------------------------------------------- generated set

GENERATED_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
_SHAPES = ("circle", "square", "triangle", "cross", "ring")
# One distinct hue per class (a shortcut that makes the set learnable in seconds from scratch);
# the shape still gives every class its own spatial support, which is what the maps must find.
_PALETTE = ((230, 60, 50), (40, 170, 60), (50, 90, 230), (230, 200, 40), (200, 60, 200))


def generated_frameset(
    n: int, *, size: int = 64, classes: tuple[str, ...] = GENERATED_CLASSES, seed: int = 0,
    presence: float = 0.5,
) -> FrameSet:
    """A small procedurally generated multi-label set: coloured shapes on noisy backgrounds.

    Class ``k`` is shape ``k`` of circle / square / triangle / cross / ring (cycling) in colour
    ``k`` of a fixed palette (with jitter). Each class is present in a frame with probability
    ``presence``, at most once, with a random size and position (shapes do not overlap); its
    exact bounding box is recorded. Deterministic for a given ``seed``.

    Returns:
        A FrameSet of ``n`` frames ``(n,3,size,size) uint8`` with targets and boxes.
    """
    if size < 32:
        raise ValueError("size must be >= 32")
    gen = torch.Generator().manual_seed(seed)
    c = len(classes)
    frames = torch.empty(n, 3, size, size, dtype=torch.uint8)
    targets = (torch.rand(n, c, generator=gen) < presence).float()
    boxes = torch.full((n, c, 4), math.nan)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    for i in range(n):
        tint = torch.rand(3, 1, 1, generator=gen) * 80 + 60
        image = tint + torch.randn(3, size, size, generator=gen) * 25
        taken: list[tuple[float, float, float]] = []
        for k in torch.nonzero(targets[i]).reshape(-1).tolist():
            placed = _place(gen, size, taken)
            if placed is None:  # no room left: the class is absent from this frame
                targets[i, k] = 0.0
                continue
            cy, cx, r = placed
            mask = _shape_mask(_SHAPES[k % len(_SHAPES)], yy - cy, xx - cx, r)
            colour = torch.tensor(_PALETTE[k % len(_PALETTE)]).float().view(3, 1, 1)
            colour = colour + (torch.rand(3, 1, 1, generator=gen) - 0.5) * 40
            image = torch.where(mask, colour + torch.randn(3, size, size, generator=gen) * 8, image)
            rows, cols = torch.nonzero(mask, as_tuple=True)
            box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            boxes[i, k] = torch.tensor(box).float()
        frames[i] = image.round().clamp(0, 255).to(torch.uint8)
    return FrameSet(frames, targets, classes, boxes)


def _place(
    gen: torch.Generator, size: int, taken: list[tuple[float, float, float]]
) -> tuple[float, float, float] | None:
    """A random (cy, cx, r) whose disc of radius r does not meet the discs in ``taken``."""
    for _ in range(50):
        r = float(size) * (0.10 + 0.08 * float(torch.rand(1, generator=gen)))
        cy, cx = (r + 1 + (size - 2 * r - 2) * torch.rand(2, generator=gen)).tolist()
        if all((cy - y) ** 2 + (cx - x) ** 2 > (r + q + 2) ** 2 for y, x, q in taken):
            taken.append((cy, cx, r))
            return cy, cx, r
    return None


def _shape_mask(shape: str, dy: torch.Tensor, dx: torch.Tensor, r: float) -> torch.Tensor:
    """``(H,W) bool`` mask of ``shape`` centred at offset 0 with half-size ``r``."""
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        s = r * 0.8
        return (dy.abs() <= s) & (dx.abs() <= s)
    if shape == "triangle":  # apex up; half-width grows linearly from 0 at the top to r
        return (dy >= -r) & (dy <= r * 0.8) & (dx.abs() <= (dy + r) / 1.8)
    if shape == "cross":
        arm = r * 0.3
        return ((dy.abs() <= arm) & (dx.abs() <= r)) | ((dx.abs() <= arm) & (dy.abs() <= r))
    # ring
    d2 = dy**2 + dx**2
    return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)


__all__ = [
    "GENERATED_CLASSES",
    "FrameSet",
    "FrameSetError",
    "generated_frameset",
    "load_frame_folder",
]
