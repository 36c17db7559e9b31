"""Training and ATCON fine-tuning of the detector.

Four modes (``TrainConfig.mode``), after the ATCON paper (``docs/training.md`` has the details):

- ``supervised``: BCE-with-logits on labeled batches;
- ``unsupervised``: the attention-consistency loss alone, on unlabeled batches;
- ``alternating``: the reference's sampling rule: each step takes a labeled batch with
  probability ``alpha*S / (alpha*S + U)`` (S labeled, U unlabeled frames), else an unlabeled
  batch for the consistency loss; an epoch has ``alpha*S/b + U/u`` steps;
- ``combined``: every step sums BCE on a labeled batch and ``combined_weight`` x consistency on an
  unlabeled batch.

BatchNorm layers stay in eval mode (frozen running statistics) when ``freeze_bn`` is set; Adam;
validation after every epoch; the best epoch by validation mAP is kept as a Vigil checkpoint
(``best.safetensors``); the training state (``last.safetensors``) is saved atomically after every
epoch so that ``resume=True`` continues an interrupted run with the same result.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from tqdm.auto import tqdm

from model.atcon import consistency_loss
from model.augment import AugmentConfig, augment_batch
from model.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    new_version_id,
    read_meta,
    save_checkpoint,
)
from model.data import FrameSet
from model.detector import Architecture, build_detector, gradcam_layer, preprocessing_for
from model.evaluate import evaluate, localisation_mean_iou, prepare
from model.sampling import BatchCycler, StepKind, step_kinds, steps_per_epoch
from model.thresholds import EventThresholdRule, event_thresholds
from model.train_state import (
    EpochMetrics,
    TrainingState,
    TrainingStateError,
    finite_or_none,
    load_training_state,
    save_training_state,
)

logger = logging.getLogger(__name__)

Mode = Literal["supervised", "unsupervised", "alternating", "combined"]
SecondMethod = Literal["guided_backprop", "integrated_gradients"]

BEST_NAME = "best.safetensors"
LAST_NAME = "last.safetensors"
METRICS_NAME = "metrics.json"
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# Config fields a resumed run may change without changing what it computes.
_RESUMABLE_CHANGES = frozenset({"epochs", "device"})


class TrainConfig(BaseModel):
    """Everything that determines a training run (stored in the checkpoint's metadata)."""

    model_config = ConfigDict(extra="forbid")

    arch: Architecture = "resnet18"
    classes: list[str] = Field(min_length=1)
    input_size: int = Field(default=224, ge=32)
    mode: Mode = "alternating"
    alpha: float = Field(default=8.0, gt=0, description="Weight of labeled data when alternating.")
    combined_weight: float = Field(default=1.0, ge=0, description="Consistency weight (combined).")
    second: SecondMethod = "guided_backprop"
    mask_intensity: float = Field(default=8.0, gt=0)
    ig_steps: int = Field(default=32, ge=1, description="Integrated Gradients steps (second).")
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=16, ge=1, description="Labeled batch size b.")
    unlabeled_batch_size: int = Field(default=16, ge=1, description="Unlabeled batch size u.")
    eval_batch_size: int = Field(default=64, ge=1)
    steps_per_epoch: int | None = Field(
        default=None, ge=1, description="Override the mode's steps-per-epoch rule (short runs)."
    )
    seed: int = 0
    reflect_padding: bool = False
    freeze_bn: bool = True
    init_weights: str | None = Field(
        default=None,
        description="Vigil checkpoint, .pth/.safetensors state dict or torchvision weights name.",
    )
    device: str = Field(default="cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto'.")
    channels_last: bool = False
    threshold: float = Field(default=0.5, gt=0, lt=1, description="F1 threshold in validation.")
    val_consistency_frames: int = Field(
        default=64, ge=0, description="Validation frames scored with the consistency loss."
    )
    cam_fraction: float = Field(
        default=0.5, gt=0, le=1, description="Grad-CAM threshold (fraction of max) for boxes."
    )
    augment: AugmentConfig | None = Field(
        default=None, description="Camera-shift augmentation of labeled frames (None: off)."
    )
    frozen_prefixes: list[str] = Field(
        default_factory=list,
        description="Parameters whose names start with one of these stay fixed (e.g. the early "
                    "stages of an ImageNet backbone: 'features.0.', 'features.1.').",
    )
    threshold_rule: EventThresholdRule = Field(
        default_factory=EventThresholdRule,
        description="How the checkpoint's per-class event thresholds are chosen on validation.",
    )

    @model_validator(mode="after")
    def _unique_classes(self) -> TrainConfig:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be unique")
        return self


class TrainResult(BaseModel):
    """What :func:`train` produced."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    best_checkpoint: Path
    meta: CheckpointMeta
    best_epoch: int
    history: list[EpochMetrics]
    last_state: Path


def train(
    config: TrainConfig,
    labeled: FrameSet,
    unlabeled: FrameSet | None,
    val: FrameSet,
    *,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool = True,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    on_plan: Callable[[int, float | None], None] | None = None,
) -> TrainResult:
    """Train a detector as ``config`` says; return the best checkpoint and the history.

    Args:
        config: the run's settings.
        labeled: training frames with targets (their classes must equal ``config.classes``).
        unlabeled: frames for the consistency loss; ``None`` uses the labeled frames' images.
        val: validation frames with targets (boxes, if any, give a final localisation score).
        out_dir: receives ``best.safetensors``, ``last.safetensors`` and ``metrics.json``.
        progress: show a tqdm bar.
        resume: continue from ``out_dir/last.safetensors`` when it exists.
        on_epoch: called with each epoch's metrics (after the state is saved).
        on_progress: called with the fraction of steps done, in ``[0, 1]``.
        on_plan: called once before training with the number of steps left and the measured
            seconds of one labeled step (timed on a copy of the model; ``None`` when no step is
            left or the mode has no labeled steps), so that a caller can print an estimate.
    """
    _check_inputs(config, labeled, unlabeled, val)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    pool = unlabeled if unlabeled is not None else labeled.unlabeled()
    torch.manual_seed(config.seed)
    model, parent_version = _build_model(config)
    freeze_parameters(model, config.frozen_prefixes)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    state = TrainingState(version=new_version_id(), parent_version=parent_version,
                          config=config.model_dump(mode="json"))
    last_path = out_dir / LAST_NAME
    if resume and last_path.exists():
        state = _resume(last_path, model, optimizer, config)
    run = _Run(config, model, optimizer, labeled, pool, val, device, out_dir, state)
    total = config.epochs * run.steps_per_epoch()
    left = total - state.epoch * run.steps_per_epoch()
    logger.info("training: %d epochs x %d steps = %d steps (%d left)", config.epochs,
                run.steps_per_epoch(), total, left)
    if on_plan is not None:
        on_plan(left, run.time_labeled_step() if left > 0 and len(labeled) else None)
    bar = tqdm(total=total, initial=state.epoch * run.steps_per_epoch(), disable=not progress,
               desc="train", unit="step", dynamic_ncols=True)
    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            metrics = run.epoch(epoch, bar, on_progress, total)
            if on_epoch is not None:
                on_epoch(metrics)
    finally:
        bar.close()
    return run.finish()


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> CUDA when available else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def freeze_parameters(model: nn.Module, prefixes: list[str]) -> int:
    """Stop the gradient of every parameter whose name starts with one of ``prefixes``;
    returns how many tensors were frozen. Raises ``ValueError`` when a prefix matches nothing
    (a typo would otherwise train the whole network silently)."""
    frozen = 0
    for prefix in prefixes:
        matched = [p for name, p in model.named_parameters() if name.startswith(prefix)]
        if not matched:
            raise ValueError(f"frozen prefix {prefix!r} matches no parameter of the model")
        for param in matched:
            param.requires_grad_(False)
        frozen += len(matched)
    return frozen


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``, with every BatchNorm layer back in eval mode when ``freeze_bn``.

    Frozen BN keeps its running statistics (the reference's fine-tuning setting); its affine
    weight and bias still train.
    """
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, _BATCH_NORMS):
                module.eval()


class _Run:
    """One training run's moving parts (keeps :func:`train` short)."""

    def __init__(self, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 labeled: FrameSet, pool: FrameSet, val: FrameSet, device: torch.device,
                 out_dir: Path, state: TrainingState) -> None:
        self.config, self.model, self.optimizer = config, model, optimizer
        self.labeled, self.pool, self.val = labeled, pool, val
        self.device, self.out_dir, self.state = device, out_dir, state
        self.preprocessing = preprocessing_for(config.arch, config.input_size)
        self.layer = gradcam_layer(model)
        self.steps_done = state.epoch * self.steps_per_epoch()

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.config, len(self.labeled), len(self.pool))

    def time_labeled_step(self) -> float:
        """Seconds of one labeled step (augmentation, forward, backward) on a copy of the model,
        so that the run itself is unchanged."""
        import copy

        twin = copy.deepcopy(self.model)
        set_train_mode(twin, self.config.freeze_bn)
        started = time.perf_counter()
        x = self._labeled_input(self.labeled.frames[: self.config.batch_size],
                                torch.Generator().manual_seed(0))
        twin(x).sum().backward()
        return time.perf_counter() - started

    def _labeled_input(self, frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``(b,3,H,W) uint8`` labeled frames -> the model's input: augmented (when the config
        says so) and preprocessed, ``(b,3,S,S) float32`` on the device."""
        cfg = self.config
        if cfg.augment is not None:
            frames = augment_batch(frames, cfg.input_size, cfg.augment, gen)
        return prepare(frames, self.preprocessing, self.device, cfg.channels_last)

    def epoch(self, epoch: int, bar: tqdm, on_progress: Callable[[float], None] | None,
              total: int) -> EpochMetrics:
        """Train one epoch, validate, keep the best, save the state; returns the metrics."""
        started = time.perf_counter()
        # Each epoch's sampling depends only on (seed, epoch): a resumed run draws the same batches.
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        self.augment_gen = torch.Generator().manual_seed(self.config.seed * 7_919 + epoch)
        kinds = step_kinds(self.config, len(self.labeled), len(self.pool), gen)
        lab = BatchCycler(len(self.labeled), self.config.batch_size, gen)
        unl = BatchCycler(len(self.pool), self.config.unlabeled_batch_size, gen)
        sums = {"bce": [0.0, 0], "consistency": [0.0, 0]}
        set_train_mode(self.model, self.config.freeze_bn)
        for kind in kinds:
            losses = self._step(kind, lab, unl)
            for name, value in losses.items():
                sums[name][0] += value
                sums[name][1] += 1
            self.steps_done += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
            if on_progress is not None:
                on_progress(min(1.0, self.steps_done / total))
        metrics, probs = self._validate()
        metrics = metrics.model_copy(update={
            "epoch": epoch,
            "labeled_steps": sum(k != "unlabeled" for k in kinds),
            "unlabeled_steps": sum(k != "labeled" for k in kinds),
            "train_bce": sums["bce"][0] / sums["bce"][1] if sums["bce"][1] else None,
            "train_consistency": (sums["consistency"][0] / sums["consistency"][1]
                                  if sums["consistency"][1] else None),
            "seconds": time.perf_counter() - started,
        })
        self._keep_if_best(metrics, probs)
        self.state = self.state.model_copy(
            update={"epoch": epoch, "history": [*self.state.history, metrics]}
        )
        save_training_state(self.out_dir / LAST_NAME, self.model, self.optimizer, self.state)
        (self.out_dir / METRICS_NAME).write_text(
            "[\n" + ",\n".join(m.model_dump_json() for m in self.state.history) + "\n]\n"
        )
        logger.info(
            "epoch %d/%d: train bce %s consistency %s | val mAP %s macro-F1 %.3f (%.1fs)",
            epoch, self.config.epochs, _fmt(metrics.train_bce), _fmt(metrics.train_consistency),
            _fmt(metrics.val_map), metrics.val_macro_f1 or 0.0, metrics.seconds,
        )
        return metrics

    def _step(self, kind: StepKind, lab: BatchCycler, unl: BatchCycler) -> dict[str, float]:
        cfg = self.config
        loss = torch.zeros((), device=self.device)
        values: dict[str, float] = {}
        if kind in ("labeled", "combined"):
            idx = lab.next()
            x = self._labeled_input(self.labeled.frames[idx], self.augment_gen)
            bce = F.binary_cross_entropy_with_logits(
                self.model(x), self.labeled.targets[idx].to(self.device)
            )
            loss = loss + bce
            values["bce"] = float(bce.detach())
        if kind in ("unlabeled", "combined"):
            x = prepare(self.pool.frames[unl.next()], self.preprocessing, self.device,
                        cfg.channels_last)
            cons = consistency_loss(self.model, self.layer, x, second=cfg.second,
                                    mask_intensity=cfg.mask_intensity, ig_steps=cfg.ig_steps)
            loss = loss + (cfg.combined_weight if kind == "combined" else 1.0) * cons
            values["consistency"] = float(cons.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return values

    def _validate(self) -> tuple[EpochMetrics, torch.Tensor]:
        cfg = self.config
        return evaluate(
            self.model, self.val, self.preprocessing, threshold=cfg.threshold,
            batch_size=cfg.eval_batch_size, device=self.device, channels_last=cfg.channels_last,
            consistency_frames=cfg.val_consistency_frames, second=cfg.second,
            mask_intensity=cfg.mask_intensity, ig_steps=cfg.ig_steps,
        )

    def _keep_if_best(self, metrics: EpochMetrics, probs: torch.Tensor) -> None:
        score = metrics.val_map if metrics.val_map is not None else -math.inf
        best = self.state.best_map if self.state.best_map is not None else -math.inf
        if self.state.best_epoch is not None and not score > best:
            return
        self.state = self.state.model_copy(
            update={"best_epoch": metrics.epoch, "best_map": finite_or_none(score)}
        )
        save_checkpoint(self.out_dir / BEST_NAME, self.model, self._meta(metrics, probs))

    def _meta(self, metrics: EpochMetrics, probs: torch.Tensor) -> CheckpointMeta:
        cfg = self.config
        thresholds = event_thresholds(probs, self.val.targets, list(cfg.classes),
                                      cfg.threshold_rule)
        return CheckpointMeta(
            version=self.state.version, arch=cfg.arch, classes=list(cfg.classes),
            input_size=cfg.input_size, mean=self.preprocessing.mean, std=self.preprocessing.std,
            reflect_padding=cfg.reflect_padding, thresholds=thresholds,
            training_config=cfg.model_dump(mode="json"),
            metrics={**metrics.model_dump(mode="json"), "best_epoch": metrics.epoch},
            parent_version=self.state.parent_version,
        )

    def finish(self) -> TrainResult:
        """Add the localisation score of the best model (when val has boxes); build the result."""
        from model.checkpoint import load_checkpoint

        best_path = self.out_dir / BEST_NAME
        loaded = load_checkpoint(best_path, device=self.device)
        meta = loaded.meta
        if self.val.boxes is not None and "val_mean_iou" not in meta.metrics:
            iou = localisation_mean_iou(
                loaded.model, self.val, self.preprocessing, fraction=self.config.cam_fraction,
                batch_size=self.config.eval_batch_size, device=self.device,
            )
            meta = meta.model_copy(update={"metrics": {**meta.metrics, "val_mean_iou": iou}})
            meta = save_checkpoint(best_path, loaded.model, meta)
        return TrainResult(
            best_checkpoint=best_path, meta=meta, best_epoch=self.state.best_epoch or 0,
            history=list(self.state.history), last_state=self.out_dir / LAST_NAME,
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _check_inputs(config: TrainConfig, labeled: FrameSet, unlabeled: FrameSet | None,
                  val: FrameSet) -> None:
    for name, data in (("labeled", labeled), ("unlabeled", unlabeled), ("val", val)):
        if data is not None and list(data.classes) != list(config.classes):
            raise ValueError(f"{name} classes {list(data.classes)} != config {config.classes}")
    if len(val) == 0:
        raise ValueError("the validation set is empty")
    if config.mode != "unsupervised" and len(labeled) == 0:
        raise ValueError(f"mode {config.mode!r} needs labeled frames")
    if unlabeled is not None and len(unlabeled) == 0 and config.mode != "supervised":
        raise ValueError("the unlabeled set is empty (pass None to use the labeled images)")
    if config.mode == "unsupervised" and unlabeled is None and len(labeled) == 0:
        raise ValueError("unsupervised mode needs unlabeled (or labeled) frames")


def _build_model(config: TrainConfig) -> tuple[nn.Module, str | None]:
    """The detector, initialised from ``init_weights``; also the parent's version, if any."""
    parent = None
    if config.init_weights is not None and Path(config.init_weights).suffix == ".safetensors":
        try:
            parent_meta = read_meta(config.init_weights)
        except CheckpointError:
            parent_meta = None  # a plain safetensors state dict
        if parent_meta is not None:
            parent = parent_meta.version
            if parent_meta.arch != config.arch:
                raise ValueError(
                    f"init checkpoint is {parent_meta.arch}, config says {config.arch}"
                )
    model = build_detector(config.arch, len(config.classes), weights=config.init_weights,
                           reflect_padding=config.reflect_padding, input_size=config.input_size)
    return model, parent


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            config: TrainConfig) -> TrainingState:
    state = load_training_state(path, model, optimizer)
    saved = TrainConfig.model_validate(state.config).model_dump()
    current = config.model_dump()
    changed = sorted(
        k for k in current if current[k] != saved.get(k) and k not in _RESUMABLE_CHANGES
    )
    if changed:
        raise TrainingStateError(
            f"{path} was written with a different config ({', '.join(changed)}); "
            "use another output folder or resume=False"
        )
    logger.info("resuming from %s after epoch %d", path, state.epoch)
    return state.model_copy(update={"config": config.model_dump(mode="json")})


__all__ = [
    "BatchCycler",
    "Mode",
    "SecondMethod",
    "TrainConfig",
    "TrainResult",
    "freeze_parameters",
    "resolve_device",
    "set_train_mode",
    "step_kinds",
    "steps_per_epoch",
    "train",
]
