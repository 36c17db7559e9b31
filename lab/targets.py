"""The data of an experiment: the pre-trained start and the target splits (synthetic or UP-Fall).

Splits are by clip. Synthetic target rooms never appear in pre-training (rooms 100-119 pre-train,
500+ are targets). UP-Fall: trial T3 is the test set, T1 the pool the k-shot frames come from,
and T2's clips are split once (fixed seed) into a validation half and an unlabeled half.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.datasets import ClipFrames, load_clip_frames, read_intervals, split_clips, upfall_trial
from lab.presets import Preset
from lab.recipes import CorpusSpec
from model.data import FrameSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetData:
    """``pool`` is where k-shot frames are drawn from; the other three are disjoint by clip."""

    pool: ClipFrames
    unlabeled: FrameSet
    val: FrameSet
    test: FrameSet
    description: dict[str, object]


def pretrained_start(preset: Preset, cache_dir: Path, *, progress: bool = True) -> Path:
    """The pre-trained backbone of ``preset`` (trained once, cached by a hash of its settings)."""
    from lab.recipes import render_corpus
    from model.train import TrainConfig, train

    spec = preset.pretraining
    key = hashlib.sha256(f"v1|{spec.model_dump_json()}|{preset.input_size}".encode()).hexdigest()
    path = cache_dir / f"pretrain-{key[:12]}.safetensors"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    corpus = spec.corpus
    val_spec = corpus.model_copy(
        update={
            "rooms": min(2, corpus.rooms),
            "clips_per_room": 1,
            "room_offset": corpus.room_offset + corpus.rooms,
        }
    )
    train_set = render_corpus(corpus, spec.classes, preset.input_size, "render pretrain", progress)
    val_set = render_corpus(
        val_spec, spec.classes, preset.input_size, "render pretrain val", progress
    )
    config = TrainConfig(
        arch="resnet18",
        classes=list(spec.classes),
        input_size=preset.input_size,
        mode="supervised",
        lr=spec.lr,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        steps_per_epoch=spec.steps_per_epoch,
        freeze_bn=False,
        val_consistency_frames=0,
        seed=0,
    )
    work = Path(tempfile.mkdtemp(prefix=".pretrain-", dir=cache_dir))
    try:
        result = train(
            config,
            train_set.frames,
            None,
            val_set.frames,
            out_dir=work,
            progress=progress,
            resume=False,
        )
        os.replace(result.best_checkpoint, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("pre-trained backbone cached at %s", path)
    return path


def synthetic_target(preset: Preset, *, progress: bool = True) -> TargetData:
    """Render the target rooms and split their clips (see :class:`lab.presets.SyntheticTarget`)."""
    from lab.recipes import render_corpus

    tgt = preset.synthetic
    if tgt is None:
        raise ValueError(f"preset {preset.name} has no synthetic target")
    spec = CorpusSpec(
        rooms=tgt.rooms,
        clips_per_room=tgt.clips_per_room,
        room_offset=tgt.room_offset,
        duration_s=tgt.duration_s,
        width=tgt.width,
        height=tgt.height,
        fps=tgt.fps,
        event_fps=tgt.event_fps,
        seed=0,
    )
    data = render_corpus(spec, preset.classes, preset.input_size, "render target", progress)

    def clips_with(indices: range) -> list[str]:
        return [c for c in data.clip_names if int(Path(c).stem.split("_c")[1]) in indices]

    u = tgt.unlabeled_clips
    pool, unl = clips_with(range(0, 1)), clips_with(range(1, 1 + u))
    val, test = clips_with(range(1 + u, 2 + u)), clips_with(range(2 + u, tgt.clips_per_room))
    if not test:
        raise ValueError("synthetic target needs clips_per_room >= unlabeled_clips + 3")
    return _target(data, pool, unl, val, test, {"source": "synthetic", "rooms": spec.model_dump()})


def upfall_target(preset: Preset, data_path: Path, cache_dir: Path | None) -> TargetData:
    """UP-Fall subject 1 from ``data_path`` (the folder holding ``labels.csv``, or its parent)."""
    labels = data_path / "labels.csv"
    if not labels.is_file():
        labels = data_path / "upfall-s1" / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"no labels.csv in {data_path} or {data_path / 'upfall-s1'}")
    intervals = read_intervals(labels)
    clips = list(dict.fromkeys(iv.clip for iv in intervals))
    root = next(
        (
            r
            for r in (data_path, data_path.parent, labels.parent.parent)
            if (r / clips[0]).is_file()
        ),
        None,
    )
    if root is None:
        raise FileNotFoundError(f"cannot find {clips[0]} under {data_path} or its parent")
    data = load_clip_frames(
        root,
        intervals,
        clips,
        preset.classes,
        fps=preset.upfall_fps,
        size=preset.input_size,
        cache_dir=None if cache_dir is None else cache_dir / "frames",
    )
    by_trial = {t: [c for c in clips if upfall_trial(c) == t] for t in ("T1", "T2", "T3")}
    val, unl = split_clips(by_trial["T2"], len(by_trial["T2"]) // 2, seed=0)
    description = {
        "source": "upfall",
        "root": str(root),
        "fps": preset.upfall_fps,
        "pool": "T1",
        "val_unlabeled": "T2 (half each)",
        "test": "T3",
    }
    return _target(data, by_trial["T1"], unl, val, by_trial["T3"], description)


def _target(
    data: ClipFrames,
    pool: list[str],
    unl: list[str],
    val: list[str],
    test: list[str],
    description: dict[str, object],
) -> TargetData:
    parts = {"pool": pool, "unlabeled": unl, "val": val, "test": test}
    names = [set(v) for v in parts.values()]
    assert all(not (a & b) for i, a in enumerate(names) for b in names[i + 1 :]), "clip overlap"
    test_set = data.of_clips(test)
    frames = {k: len(data.of_clips(v)) for k, v in parts.items()}
    return TargetData(
        pool=data.of_clips(pool),
        unlabeled=data.of_clips(unl).frames.unlabeled(),
        val=data.of_clips(val).frames,
        test=test_set.frames,
        description={
            **description,
            "clips": {k: len(v) for k, v in parts.items()},
            "frames": frames,
            "test_positives": {
                c: int(v)
                for c, v in zip(
                    test_set.frames.classes, test_set.frames.targets.sum(0), strict=True
                )
            },
        },
    )
