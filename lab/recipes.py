"""The default detector that ``vigil analyze``/``demo``/``serve`` use, and the generated recipe.

The default detector is shipped: ``lab/weights/default-detector.safetensors``, an ImageNet
EfficientNet-Lite0 fine-tuned on data whose terms allow shipping derived weights (COCO's CC BY
annotations, GMDCSA24's MIT licence, generated rooms), its weights stored in float16 (7.0 MB),
produced by ``vigil train --recipe shipped --data ../shared/data/real`` (:mod:`lab.real_recipe`; see
``docs/model-card.md``). :func:`ensure_default_detector` returns it.

The *generated* recipe (``vigil train --recipe generated``) is the earlier default: synthetic
clips from rooms 0-23 rendered in memory, a ResNet-18 trained from scratch at 112 px, the best
epoch on validation rooms kept, cached under ``~/.cache/vigil`` keyed by the recipe's hash. It is
only used when the shipped file is missing (a source tree without it), and kept for continuity
with the earlier results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/vigil")
SHIPPED_DETECTOR = Path(__file__).parent / "weights" / "default-detector.safetensors"


class CorpusSpec(BaseModel):
    """A synthetic corpus: which rooms and clips, rendered at what rate and size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rooms: int
    clips_per_room: int
    room_offset: int
    duration_s: float = 20.0
    width: int = 160
    height: int = 120
    seed: int = 0
    fps: float = 1.0
    event_fps: float = 5.0


class Recipe(BaseModel):
    """Everything that determines a recipe's model (hashing it names the cached checkpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int
    classes: tuple[str, ...]
    train: CorpusSpec
    val: CorpusSpec
    test: CorpusSpec
    train_config: dict[str, Any]

    def digest(self) -> str:
        """sha256 of the recipe (12 hex digits)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


GENERATED_RECIPE = Recipe(
    name="default",  # the cache file's name; kept so that existing caches stay valid
    version=2,  # 2: event thresholds from the near-optimal-F1 interval rule (model.thresholds)
    classes=("person_present", "multiple_people", "falling", "fallen"),
    # Rooms 0-23 train, 900-903 validate, 950-957 test: three disjoint sets of rooms.
    train=CorpusSpec(rooms=24, clips_per_room=3, room_offset=0, fps=1.0, event_fps=5.0),
    val=CorpusSpec(rooms=4, clips_per_room=3, room_offset=900, fps=1.0, event_fps=5.0),
    test=CorpusSpec(rooms=8, clips_per_room=3, room_offset=950, fps=2.0, event_fps=0.0),
    train_config={
        "arch": "resnet18",
        "input_size": 112,
        "mode": "supervised",
        "lr": 1e-3,
        "epochs": 2,
        "batch_size": 16,
        "freeze_bn": False,
        "seed": 0,
        "val_consistency_frames": 0,
        "eval_batch_size": 64,
    },
)
RECIPES: dict[str, Recipe] = {"generated": GENERATED_RECIPE}


def ensure_default_detector(cache_dir: Path | None = None, *, progress: bool = True) -> Path:
    """The default detector's checkpoint: the shipped file (:data:`SHIPPED_DETECTOR`).

    Without it (a source tree that lacks the file) the generated recipe is trained on first use
    (about 2 minutes on 2 cores) and cached, with a warning that it has never seen real video.

    Args:
        cache_dir: where the generated fallback is cached (default ``~/.cache/vigil``).
        progress: show progress bars while rendering and training the fallback.
    """
    if SHIPPED_DETECTOR.is_file():
        return SHIPPED_DETECTOR
    logger.warning("%s is missing: training the generated-room detector instead (it has never "
                   "seen real video; see docs/model-card.md)", SHIPPED_DETECTOR)
    return ensure_recipe(GENERATED_RECIPE, cache_dir, progress=progress)


def ensure_recipe(recipe: Recipe, cache_dir: Path | None = None, *, progress: bool = True) -> Path:
    """``recipe``'s checkpoint from the cache, trained (once, under a file lock) when missing."""
    import fcntl

    cache = (cache_dir or DEFAULT_CACHE).expanduser()
    target = cache / f"{recipe.name}-{recipe.digest()}.safetensors"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # One process trains; a second caller (e.g. `vigil demo` next to `vigil analyze`) waits.
    with (cache / f".{recipe.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        logger.info("training the %s detector (first use; cached at %s)", recipe.name, target)
        work = Path(tempfile.mkdtemp(prefix=".train-", dir=cache))
        try:
            best = _train(recipe, work, progress=progress, evaluate_test=False)
            os.replace(best, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def run_recipe(name: str, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Train recipe ``name`` (``generated``) into ``out_dir``; measure it on held-out test rooms.

    Writes ``out_dir/best.safetensors`` (the checkpoint, test metrics in its metadata under
    ``test``) and ``out_dir/test_metrics.json``; returns the checkpoint path.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return _train(RECIPES[name], Path(out_dir), progress=progress, evaluate_test=True)


def render_corpus(spec: CorpusSpec, classes: tuple[str, ...], size: int, desc: str, progress: bool):
    """Render the clips of ``spec`` into memory (see :func:`lab.corpus.render_clip_frames`)."""
    from tqdm.auto import tqdm

    from lab.corpus import render_clip_frames
    from lab.synth.writer import SynthConfig

    cfg = SynthConfig(
        rooms=spec.rooms,
        clips_per_room=spec.clips_per_room,
        room_offset=spec.room_offset,
        duration_s=spec.duration_s,
        width=spec.width,
        height=spec.height,
        seed=spec.seed,
        classes=classes,
    )
    with tqdm(
        total=spec.rooms * spec.clips_per_room, desc=desc, unit="clip", disable=not progress
    ) as bar:
        return render_clip_frames(
            cfg,
            fps=spec.fps,
            size=size,
            event_fps=spec.event_fps,
            progress=lambda _d, _t: bar.update(1),
        )


def _train(recipe: Recipe, out_dir: Path, *, progress: bool, evaluate_test: bool) -> Path:
    from model.train import TrainConfig, train

    config = TrainConfig(classes=list(recipe.classes), **recipe.train_config)
    size = config.input_size
    train_set = render_corpus(recipe.train, recipe.classes, size, "render train", progress)
    val_set = render_corpus(recipe.val, recipe.classes, size, "render val", progress)
    result = train(
        config,
        train_set.frames,
        None,
        val_set.frames,
        out_dir=out_dir,
        progress=progress,
        resume=False,
    )
    if evaluate_test:
        test_set = render_corpus(recipe.test, recipe.classes, size, "render test", progress)
        _add_test_metrics(result.best_checkpoint, test_set.frames, recipe)
    (out_dir / "recipe.json").write_text(recipe.model_dump_json(indent=2) + "\n")
    return result.best_checkpoint


def _add_test_metrics(path: Path, test, recipe: Recipe) -> dict[str, Any]:
    """Score the checkpoint at ``path`` on ``test`` (its own thresholds and 0.5) and store it."""
    import torch

    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.evaluate import classification_metrics, localisation_mean_iou, predict_logits

    loaded = load_checkpoint(path)
    meta = loaded.meta
    logits = predict_logits(loaded.model, test.frames, meta.preprocessing)
    own = torch.tensor([meta.thresholds_for(c).on for c in meta.classes])
    metrics = {
        "at_0.5": classification_metrics(logits, test.targets, test.classes, 0.5),
        "at_checkpoint_thresholds": classification_metrics(logits, test.targets, test.classes, own),
        "cam_box_mean_iou": localisation_mean_iou(loaded.model, test, meta.preprocessing),
        "frames": len(test),
        "positives": {c: int(v) for c, v in zip(test.classes, test.targets.sum(0), strict=True)},
        "rooms": f"{recipe.test.room_offset}-{recipe.test.room_offset + recipe.test.rooms - 1}",
    }
    meta = meta.model_copy(update={"metrics": {**meta.metrics, "test": metrics}})
    save_checkpoint(path, loaded.model, meta)
    (path.parent / "test_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
