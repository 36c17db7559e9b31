"""Retraining jobs: clinician labels over stored segments -> a new registered model version.

Steps (``run_training``):

1. **Data.** Every stored segment of each chosen stream is sampled at ``sample_fps`` (frames
   decoded by :mod:`worker.decode` via :func:`lab.datasets.load_clip_frames`, resized to the
   active model's input size). A frame is positive for a label when it lies inside one of the
   stream's labeled intervals (the request's, or the clinician labels stored for the stream), and
   negative otherwise. The chosen unlabeled segments form the pool of the ATCON consistency loss.
2. **Split.** Validation takes ``val_fraction`` of the labeled segments (whole segments, so no
   segment has frames on both sides); with a single labeled segment the frames are split by time
   (first part train, last part validation) instead.
3. **Train.** :func:`model.train.train`, initialised from the active model (its parent), with
   ``supervised`` (BCE) or ATCON ``combined`` mode (BCE + λ·consistency, Guided Backprop or
   Integrated Gradients as the second map). The run resumes if the job is retried after a crash.
4. **Register.** The best checkpoint is copied to ``DATA_DIR/models/<version>.safetensors`` and
   registered with its validation metrics next to the active model's on the same frames; with
   ``promotion=auto`` it is activated only if its macro-F1 is not below the active model's.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import torch

from lab.datasets import ClipFrames, Interval, load_clip_frames, split_clips
from model.checkpoint import LoadedModel, load_checkpoint
from model.data import FrameSet
from model.train import TrainConfig, train
from service.jobs import LabeledInterval, TrainingJobSpec, TrainResult, ValidationMetrics
from service.schemas import ModelVersion, Segment, Thresholds
from service.store import Store
from worker.handlers import JobFailure, WorkerConfig

logger = logging.getLogger(__name__)

Progress = Callable[[float], None]
_ALL_TIME = (datetime(1970, 1, 2, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


def run_training(
    store: Store,
    config: WorkerConfig,
    loaded: LoadedModel,
    job_id: str,
    spec: TrainingJobSpec,
    progress: Progress,
) -> TrainResult:
    """Run one retraining job (see the module docstring); returns the job's result."""
    active = store.models.active()
    parent_path = config.resolve(active.path) if active is not None else None
    classes = list(loaded.meta.classes)
    labeled, val = _labeled_sets(store, config, loaded, spec)
    unlabeled = _unlabeled_set(store, config, loaded, spec)
    progress(0.1)
    train_config = _train_config(spec, loaded, parent_path, config.device, len(val))
    out_dir = config.data_dir / "training" / job_id
    result = train(
        train_config,
        labeled,
        unlabeled,
        val,
        out_dir=out_dir,
        progress=False,
        resume=True,
        on_progress=lambda f: progress(0.1 + 0.8 * f),
    )
    new = load_checkpoint(result.best_checkpoint, device="cpu")
    metrics = validation_metrics(new, val)
    active_metrics = validation_metrics(loaded, val)
    progress(0.95)
    version = new.meta.version
    target = config.data_dir / "models" / f"{version}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.best_checkpoint, target)
    store.models.register(
        ModelVersion(
            version=version,
            path=str(target.relative_to(config.data_dir)),
            arch=new.meta.arch,
            classes=classes,
            parent=active.version if active else loaded.meta.version,
            training_job_id=job_id,
            metrics=_flat(metrics) | {f"active_{k}": v for k, v in _flat(active_metrics).items()},
            thresholds={
                c: Thresholds(**new.meta.thresholds_for(c).model_dump()) for c in new.meta.classes
            },
        )
    )
    promoted = spec.promotion == "auto" and metrics.macro_f1 >= active_metrics.macro_f1
    if promoted:
        store.models.activate(version)
    logger.info(
        "training job %s: model %s macro-F1 %.3f (active %.3f)%s",
        job_id,
        version,
        metrics.macro_f1,
        active_metrics.macro_f1,
        ", promoted" if promoted else "",
    )
    return TrainResult(
        version=version,
        parent_version=active.version if active else loaded.meta.version,
        metrics=metrics,
        active_metrics=active_metrics,
        promoted=promoted,
    )


def validation_metrics(loaded: LoadedModel, val: FrameSet) -> ValidationMetrics:
    """Frame-level macro-F1 (at the model's own ``on`` thresholds) and mAP on ``val``."""
    from model.evaluate import predict_logits
    from model.metrics import ap_per_class, f1_per_class

    logits = predict_logits(
        loaded.model,
        val.frames,
        loaded.meta.preprocessing,
        device=next(loaded.model.parameters()).device,
    )
    probs = torch.sigmoid(logits)
    thresholds = torch.tensor([loaded.meta.thresholds_for(c).on for c in val.classes])
    f1 = f1_per_class(probs, val.targets, thresholds)
    ap = ap_per_class(probs, val.targets)
    finite = ap[~torch.isnan(ap)]
    return ValidationMetrics(
        macro_f1=float(f1.mean()),
        mean_ap=float(finite.mean()) if finite.numel() else None,
        per_class_f1={c: float(v) for c, v in zip(val.classes, f1, strict=True)},
        frames=len(val),
    )


def _flat(metrics: ValidationMetrics) -> dict[str, float]:
    out = {"macro_f1": metrics.macro_f1, "val_frames": float(metrics.frames)}
    if metrics.mean_ap is not None:
        out["mean_ap"] = metrics.mean_ap
    return out


def _train_config(
    spec: TrainingJobSpec, loaded: LoadedModel, parent: Path | None, device: str, n_val: int
) -> TrainConfig:
    hp = spec.hyperparameters
    atcon = spec.method != "supervised"
    return TrainConfig(
        arch=loaded.meta.arch,
        classes=list(loaded.meta.classes),
        input_size=loaded.meta.input_size,
        mode="combined" if atcon else "supervised",
        second="integrated_gradients"
        if spec.method == "atcon_integrated_gradients"
        else "guided_backprop",
        combined_weight=hp.consistency_weight,
        lr=hp.learning_rate,
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        unlabeled_batch_size=hp.batch_size,
        seed=hp.seed,
        reflect_padding=loaded.meta.reflect_padding,
        init_weights=str(parent) if parent is not None else None,
        device=device,
        val_consistency_frames=min(16, n_val) if atcon else 0,
    )


def _labeled_sets(
    store: Store, config: WorkerConfig, loaded: LoadedModel, spec: TrainingJobSpec
) -> tuple[FrameSet, FrameSet]:
    classes = list(loaded.meta.classes)
    intervals: list[Interval] = []
    clips: list[str] = []
    for chosen in spec.streams:
        labels = (
            chosen.intervals
            if chosen.intervals is not None
            else [
                LabeledInterval(label=x.label, start=x.start, end=x.end)
                for x in store.labels.all(chosen.stream_id)
            ]
        )
        unknown = sorted({x.label for x in labels} - set(classes))
        if unknown:
            raise JobFailure(
                "unknown_label",
                f"labels {unknown} are not classes of the active model ({classes})",
                permanent=True,
            )
        for segment in store.segments.in_range(chosen.stream_id, *_ALL_TIME):
            clips.append(segment.path)
            intervals.extend(_segment_intervals(segment, labels))
    if not clips:
        raise JobFailure(
            "no_training_data", "the chosen streams have no stored segments", permanent=True
        )
    data = load_clip_frames(
        config.data_dir,
        intervals,
        clips,
        classes,
        fps=spec.hyperparameters.sample_fps,
        size=loaded.meta.input_size,
    )
    return _split(data, spec)


def _segment_intervals(segment: Segment, labels: list[LabeledInterval]) -> list[Interval]:
    """Labels overlapping ``segment`` in seconds from the segment's start."""
    start = segment.start
    end = start + timedelta(seconds=segment.duration_s)
    return [
        Interval(
            clip=segment.path,
            label=x.label,
            start_s=max(0.0, (x.start - start).total_seconds()),
            end_s=min(segment.duration_s, (x.end - start).total_seconds()),
        )
        for x in labels
        if x.end > start and x.start < end
    ]


def _split(data: ClipFrames, spec: TrainingJobSpec) -> tuple[FrameSet, FrameSet]:
    hp = spec.hyperparameters
    names = data.clip_names
    if len(names) >= 2:
        n_val = min(len(names) - 1, max(1, round(hp.val_fraction * len(names))))
        val_clips, train_clips = split_clips(names, n_val, seed=hp.seed)
        return data.of_clips(train_clips).frames, data.of_clips(val_clips).frames
    n = len(data)
    cut = max(1, min(n - 1, round(n * (1.0 - hp.val_fraction))))
    if n < 2:
        raise JobFailure("no_training_data", "too few frames to train and validate", permanent=True)
    return data.frames.subset(slice(0, cut)), data.frames.subset(slice(cut, n))


def _unlabeled_set(
    store: Store, config: WorkerConfig, loaded: LoadedModel, spec: TrainingJobSpec
) -> FrameSet | None:
    segments = [store.segments.get(s) for s in spec.unlabeled_segment_ids]
    missing = [
        s for s, seg in zip(spec.unlabeled_segment_ids, segments, strict=True) if seg is None
    ]
    if missing:
        raise JobFailure(
            "segment_not_found", f"unknown unlabeled segments {missing[:5]}", permanent=True
        )
    if not segments:
        return None
    data = load_clip_frames(
        config.data_dir,
        [],
        [s.path for s in segments if s is not None],
        list(loaded.meta.classes),
        fps=spec.hyperparameters.sample_fps,
        size=loaded.meta.input_size,
    )
    return data.frames.unlabeled()
