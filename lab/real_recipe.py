"""The real-data recipe: ImageNet EfficientNet-Lite0 fine-tuned on real labeled footage.

``vigil train --recipe real --data ../shared/data/real [--split trial|camera]`` reads, from the
data root (see its README for sources and licences):

- ``upfall-s1/labels.csv``: UP-Fall subject 1, 11 activities x 3 trials x 2 cameras;
- ``gmdcsa24/labels.csv``: GMDCSA24 home-room clips, subjects 1 and 2;
- ``coco128-person/``: COCO images with person boxes (YOLO layout).

Splits (nothing of a held-out group is decoded for training, validation or thresholds):

- ``trial`` (default): UP-Fall T1 trains, T2 validates, **T3 is held out**; GMDCSA24 subject 1
  trains, **subject 2 is held out**; COCO images 0-95 train, 96-127 validate;
- ``camera``: UP-Fall Cam1 T1+T2 train, Cam1 T3 validates, **every Cam2 clip is held out**
  (leave-camera-out); GMDCSA24 and COCO as in ``trial``.

Training frames: clips at 2 frames/s and at 9 frames/s around falls, COCO persons, the empty room
of the training cameras (temporal median of the walking clips, A6, in which the subject keeps
moving), every frame shown through the camera-shift augmentation of :mod:`model.augment`, rare
classes oversampled. The backbone's stem and first four stages stay frozen (ImageNet features),
batch-norm statistics stay frozen. The run writes ``OUT/heldout-labels.csv`` (the held-out
intervals, for ``vigil evaluate``) and ``OUT/recipe.json`` (the split, clip lists and settings).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch

from lab.datasets import Interval, read_intervals, upfall_trial
from model.data import FrameSet

logger = logging.getLogger(__name__)

Split = Literal["trial", "camera"]
CLASSES = ("person_present", "multiple_people", "falling", "fallen")
FRAME_SIZE = 256  # stored frames; random crops are resized to the input size
COCO_TRAIN = 96
# features.0 = stem, 1 = stage 1, 2-3 = stage 2, 4-5 = stage 3, 6-8 = stage 4, 9-11 = stage 5
# (stride 16): frozen, the ImageNet features; stages 6-7 (stride 32), the head and the classifier
# train. Recipe v1 trained from stage 5 on and did not carry to a new home (docs/model-card.md).
FROZEN = [f"features.{i}." for i in range(12)]

REAL_TRAIN_CONFIG: dict[str, Any] = {
    "arch": "efficientnet_lite0",
    "init_weights": "IMAGENET1K",
    "input_size": 224,
    "mode": "supervised",
    "lr": 5e-4,
    "weight_decay": 1e-5,
    "epochs": 6,
    "steps_per_epoch": 180,
    "batch_size": 16,
    "eval_batch_size": 32,
    "freeze_bn": True,
    "frozen_prefixes": FROZEN,
    # more grayscale and night frames than the defaults: infrared night cameras are common in
    # patient rooms, and none of the labeled clips is one
    "augment": {"night": 0.25, "grayscale": 0.2},
    "val_consistency_frames": 0,
    "seed": 0,
}
RECIPE_VERSION = 2
"""2: sources balanced, stage 5 frozen, more grayscale/night (1: docs/model-card.md)."""
SHIPPED_TRAIN_CONFIG: dict[str, Any] = {
    **REAL_TRAIN_CONFIG,
    "frozen_prefixes": [f"features.{i}." for i in range(9)],
    "augment": {},
}
"""The shipped detector's settings (recipe 1's; they made the shipped file)."""


def upfall_camera(clip: str) -> str:
    """``upfall-s1/A3_S1_T2_Cam1.mp4`` -> ``Cam1``."""
    return next((p for p in Path(clip).stem.split("_") if p.startswith("Cam")), "")


def gmdcsa_subject(clip: str) -> str:
    """``gmdcsa24/s2-fall-12.mp4`` -> ``s2``."""
    return Path(clip).stem.split("-")[0]


def split_clips(upfall: list[str], gmdcsa: list[str], split: Split) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...], "test": [...]}`` clip lists of ``split``."""
    gmd_train = [c for c in gmdcsa if gmdcsa_subject(c) == "s1"]
    gmd_test = [c for c in gmdcsa if gmdcsa_subject(c) != "s1"]
    if split == "trial":
        train = [c for c in upfall if upfall_trial(c) == "T1"]
        val = [c for c in upfall if upfall_trial(c) == "T2"]
        test = [c for c in upfall if upfall_trial(c) == "T3"]
    elif split == "camera":
        cam1 = [c for c in upfall if upfall_camera(c) == "Cam1"]
        train = [c for c in cam1 if upfall_trial(c) in ("T1", "T2")]
        val = [c for c in cam1 if upfall_trial(c) == "T3"]
        test = [c for c in upfall if upfall_camera(c) != "Cam1"]
    else:
        raise ValueError(f"unknown split {split!r}; choose 'trial' or 'camera'")
    return {"train": train + gmd_train, "val": val, "test": test + gmd_test}


def _clips(intervals: list[Interval]) -> list[str]:
    return sorted(dict.fromkeys(iv.clip for iv in intervals))


def balance_sources(parts: list[FrameSet], *, max_repeat: int = 8) -> FrameSet:
    """Concatenate ``parts`` with each repeated up to the largest one's size (at most
    ``max_repeat`` times): the 96 COCO photos, the only varied people and scenes, would otherwise
    be 3% of the frames next to thousands of frames of one lab room."""
    largest = max(len(p) for p in parts)
    grown = []
    for part in parts:
        repeat = max(1, min(max_repeat, round(largest / max(len(part), 1))))
        grown.append(part.subset(torch.arange(len(part)).repeat(repeat)) if repeat > 1 else part)
    return FrameSet.concat(grown)


def write_intervals(path: Path, intervals: list[Interval]) -> None:
    """The project's label CSV (``clip,label,start_s,end_s``)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip", "label", "start_s", "end_s"])
        for iv in intervals:
            writer.writerow([iv.clip, iv.label, f"{iv.start_s:.3f}", f"{iv.end_s:.3f}"])


def coco_split(data: Path, size: int) -> tuple[FrameSet, FrameSet]:
    """COCO128's person set (``data/coco128-person``): images 0-95 train, 96-127 validate."""
    from lab.realdata import yolo_person_frameset

    root = data / "coco128-person"
    images = sorted(p.name for p in (root / "images" / "train").iterdir())
    train, _ = yolo_person_frameset(root, CLASSES, size=size, images=images[:COCO_TRAIN])
    val, _ = yolo_person_frameset(root, CLASSES, size=size, images=images[COCO_TRAIN:])
    return train, val


def build_sets(data: Path, split: Split, size: int, cache_dir: Path | None):
    """``(labeled, val, clip lists, held-out intervals)`` of the recipe."""
    from lab.realdata import median_backgrounds, oversample, sample_labeled_clips

    upfall_iv = read_intervals(data / "upfall-s1" / "labels.csv")
    gmd_iv = read_intervals(data / "gmdcsa24" / "labels.csv")
    intervals = upfall_iv + gmd_iv
    lists = split_clips(_clips(upfall_iv), _clips(gmd_iv), split)

    def clips(names: list[str]) -> FrameSet:
        return sample_labeled_clips(data, intervals, names, CLASSES, size=size,
                                    cache_dir=cache_dir).frames

    coco_train, coco_val = coco_split(data, size)
    walking = [c for c in lists["train"] if Path(c).stem.startswith("A6_")
               and upfall_camera(c) == "Cam1"]
    rooms = median_backgrounds(data, walking, CLASSES, size=size, cache_dir=cache_dir)
    # no boxes on clip frames: drop COCO's so that every part concatenates
    labeled = balance_sources([clips(lists["train"]), coco_train.without_boxes(), rooms])
    labeled = labeled.subset(oversample(labeled.targets))
    val = FrameSet.concat([clips(lists["val"]), coco_val.without_boxes()])
    test = set(lists["test"])
    held_out = [iv for iv in intervals if iv.clip in test]
    return labeled, val, lists, held_out


def video_files(folder: str | Path) -> list[Path]:
    """Video files of ``folder`` (recursively), sorted."""
    suffixes = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v"}
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in suffixes)


def unlabeled_frames(folder: str | Path, classes: tuple[str, ...], *, size: int,
                     fps: float = 1.0, cache_dir: Path | None = None):
    """Every video of ``folder`` sampled at ``fps``: an unlabeled pool for ATCON."""
    from lab.datasets import decoded_clip

    files = video_files(folder)
    if not files:
        raise FileNotFoundError(f"no videos in {folder}")
    frames = [decoded_clip(f.parent, f.name, fps, size, cache_dir)[0] for f in files]
    stacked = torch.cat(frames)
    return FrameSet(stacked, torch.zeros(len(stacked), len(classes)), classes)


def user_sets(labels: Path, data_root: Path, *, val_labels: Path | None, images: list[Path],
              val_fraction: float, seed: int, size: int, cache_dir: Path | None):
    """``(labeled, val, classes, clip lists)`` from a user's interval labels (and image sets).

    Validation: the clips of ``val_labels``, or a seeded ``val_fraction`` of the labeled clips
    (whole clips, never frames of one clip on both sides)."""
    from lab.datasets import split_clips as random_split
    from lab.realdata import oversample, sample_labeled_clips
    from lab.realdata import yolo_person_frameset as yolo

    intervals = read_intervals(labels)
    if not intervals:
        raise ValueError(f"{labels}: no intervals")
    val_iv = read_intervals(val_labels) if val_labels is not None else []
    classes = tuple(dict.fromkeys(iv.label for iv in intervals + val_iv))
    clips = _clips(intervals)
    for clip in clips + _clips(val_iv):
        if not (data_root / clip).is_file():
            raise FileNotFoundError(f"{data_root / clip} (named in the labels) not found")
    if val_labels is not None:
        train_clips, val_clips = clips, _clips(val_iv)
    else:
        n_val = max(1, round(val_fraction * len(clips)))
        if n_val >= len(clips):
            raise ValueError("need at least two labeled clips to hold some out for validation")
        val_clips, train_clips = random_split(clips, n_val, seed=seed)
    everything = intervals + val_iv
    train_parts = [sample_labeled_clips(data_root, everything, train_clips, classes, size=size,
                                        cache_dir=cache_dir).frames]
    for folder in images:
        data, _ = yolo(folder, classes, size=size)
        train_parts.append(data.without_boxes())
    labeled = FrameSet.concat(train_parts)
    labeled = labeled.subset(oversample(labeled.targets))
    val = sample_labeled_clips(data_root, everything, val_clips, classes, size=size,
                               cache_dir=cache_dir).frames
    return labeled, val, classes, {"train": train_clips, "val": val_clips}


def run_real_recipe(data: str | Path, out_dir: str | Path, *, split: Split = "trial",
                    progress: bool = True, overrides: dict[str, Any] | None = None) -> Path:
    """Train the real-data detector into ``out_dir``; returns ``OUT/train/best.safetensors``."""
    from model.train import TrainConfig, train

    data, out = Path(data), Path(out_dir)
    for needed in ("upfall-s1/labels.csv", "gmdcsa24/labels.csv", "coco128-person/images"):
        if not (data / needed).exists():
            raise FileNotFoundError(f"{data / needed} not found: --data must be the real-data root")
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig.model_validate(
        {**REAL_TRAIN_CONFIG, **(overrides or {}), "classes": list(CLASSES)})
    labeled, val, lists, held_out = build_sets(data, split, FRAME_SIZE, out / "frame-cache")
    write_intervals(out / "heldout-labels.csv", held_out)
    (out / "recipe.json").write_text(json.dumps({
        "recipe": "real", "version": RECIPE_VERSION, "split": split, "clips": lists,
        "labeled_frames": len(labeled), "val_frames": len(val),
        "train_config": config.model_dump(mode="json"),
    }, indent=2) + "\n")
    logger.info("real recipe (%s split): %d labeled frames (oversampled), %d validation frames",
                split, len(labeled), len(val))
    result = train(config, labeled, None, val, out_dir=out / "train", progress=progress,
                   resume=True)
    return result.best_checkpoint


# ----------------------------------------------------------------------- the shipped default

SHIPPED_NAME = "default-detector.safetensors"
SHIPPED_SOURCES = {
    "coco128-person": "COCO train2017 images 0-127 with person boxes (annotations CC BY 4.0)",
    "gmdcsa24": "GMDCSA24 subjects 1 (train) and 2 (validation) (MIT)",
    "generated": "Vigil's procedural rooms 0-23 (train) and 900-903 (validation)",
}


def build_shipped_sets(data: Path, size: int, cache_dir: Path | None, progress: bool):
    """Training and validation sets of the shipped default detector: only data whose terms allow
    shipping derived weights (COCO's CC BY annotations, GMDCSA24's MIT licence, generated rooms;
    never UP-Fall, which is for research use)."""
    from lab.realdata import oversample, sample_labeled_clips
    from lab.recipes import GENERATED_RECIPE, render_corpus

    gmd_iv = read_intervals(data / "gmdcsa24" / "labels.csv")
    gmd = _clips(gmd_iv)
    s1 = [c for c in gmd if gmdcsa_subject(c) == "s1"]
    s2 = [c for c in gmd if gmdcsa_subject(c) != "s1"]

    def clips(names: list[str]) -> FrameSet:
        return sample_labeled_clips(data, gmd_iv, names, CLASSES, size=size,
                                    cache_dir=cache_dir).frames

    coco_train, coco_val = coco_split(data, size)
    rooms = render_corpus(GENERATED_RECIPE.train, CLASSES, size, "render rooms", progress).frames
    rooms_val = render_corpus(GENERATED_RECIPE.val, CLASSES, size, "render val", progress).frames

    labeled = FrameSet.concat([clips(s1), coco_train.without_boxes(), rooms.without_boxes()])
    labeled = labeled.subset(oversample(labeled.targets))
    val = FrameSet.concat([clips(s2), coco_val.without_boxes(), rooms_val.without_boxes()])
    return labeled, val


def export_fp16(checkpoint: Path, out: Path, *, version: str, sources: dict[str, str]) -> Path:
    """A copy of ``checkpoint`` with its convolution and linear weights in float16 (about 7 MB
    for EfficientNet-Lite0) and its data sources in the metadata; loads like any checkpoint
    (``load_state_dict`` casts back). Batch-norm statistics and biases stay float32: running
    variances near 1e-4 would lose most of their digits in float16."""
    from model.checkpoint import load_checkpoint, save_state

    loaded = load_checkpoint(checkpoint)
    state = {k: (v.half() if v.is_floating_point() and v.ndim >= 2 else v)
             for k, v in loaded.model.state_dict().items()}
    meta = loaded.meta.model_copy(update={
        "version": version,
        "metrics": {**loaded.meta.metrics, "data_sources": sources, "dtype": "float16"},
    })
    save_state(out, state, meta)
    return out


def run_shipped_recipe(data: str | Path, out_dir: str | Path, *, progress: bool = True,
                       overrides: dict[str, Any] | None = None) -> Path:
    """Train the shipped default detector; returns ``OUT/default-detector.safetensors`` (fp16),
    to be copied to ``lab/weights/`` (docs/model-card.md)."""
    from model.train import TrainConfig, train

    data, out = Path(data), Path(out_dir)
    for needed in ("gmdcsa24/labels.csv", "coco128-person/images"):
        if not (data / needed).exists():
            raise FileNotFoundError(f"{data / needed} not found: --data must be the real-data root")
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig.model_validate(
        {**SHIPPED_TRAIN_CONFIG, **(overrides or {}), "classes": list(CLASSES)})
    labeled, val = build_shipped_sets(data, FRAME_SIZE, out / "frame-cache", progress)
    (out / "recipe.json").write_text(json.dumps({
        "recipe": "shipped", "sources": SHIPPED_SOURCES, "labeled_frames": len(labeled),
        "val_frames": len(val), "train_config": config.model_dump(mode="json"),
    }, indent=2) + "\n")
    logger.info("shipped recipe: %d labeled frames (oversampled), %d validation frames",
                len(labeled), len(val))
    result = train(config, labeled, None, val, out_dir=out / "train", progress=progress,
                   resume=True)
    return export_fp16(result.best_checkpoint, out / SHIPPED_NAME,
                       version=f"default-lite0-{result.meta.version}", sources=SHIPPED_SOURCES)


__all__ = [
    "CLASSES",
    "REAL_TRAIN_CONFIG",
    "export_fp16",
    "run_real_recipe",
    "run_shipped_recipe",
    "split_clips",
    "user_sets",
]
