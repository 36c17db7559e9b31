"""Held-out evaluation of one fine-tuned model: F1, mAP, CAM-box IoU, attention consistency."""

from __future__ import annotations

import torch
from pydantic import BaseModel
from torch import nn

from model.data import FrameSet
from model.preprocess import Preprocessing


class Metrics(BaseModel):
    """Test metrics of one (method, seed). ``None`` where undefined (no positives, no boxes).

    ``macro_f1``/``f1`` use the fixed threshold 0.5 (the paper's protocol); ``*_val_thr`` use
    per-class thresholds chosen on the validation set (never on test).
    """

    macro_f1: float
    f1: dict[str, float]
    macro_f1_val_thr: float
    f1_val_thr: dict[str, float]
    map: float | None
    ap: dict[str, float | None]
    cam_iou: float | None
    consistency: float | None
    seconds: float = 0.0


def evaluate_model(
    model: nn.Module,
    test: FrameSet,
    val: FrameSet,
    *,
    input_size: int,
    consistency_frames: int,
    iou_frames: int = 96,
) -> Metrics:
    """Score ``model`` on ``test``; ``val`` only sets the per-class thresholds of ``*_val_thr``."""
    from model.evaluate import localisation_mean_iou, predict_logits
    from model.metrics import ap_per_class, best_f1_thresholds, f1_per_class

    prep = Preprocessing(input_size=input_size)
    probs = torch.sigmoid(predict_logits(model, test.frames, prep))
    val_thr = best_f1_thresholds(
        torch.sigmoid(predict_logits(model, val.frames, prep)), val.targets
    )
    f1 = f1_per_class(probs, test.targets, 0.5)
    f1_val = f1_per_class(probs, test.targets, val_thr)
    ap = ap_per_class(probs, test.targets)
    finite = ap[~torch.isnan(ap)]
    names = test.classes
    return Metrics(
        macro_f1=float(f1.mean()),
        f1=dict(zip(names, f1.tolist(), strict=True)),
        macro_f1_val_thr=float(f1_val.mean()),
        f1_val_thr=dict(zip(names, f1_val.tolist(), strict=True)),
        map=float(finite.mean()) if finite.numel() else None,
        ap={c: (None if torch.isnan(v) else float(v)) for c, v in zip(names, ap, strict=True)},
        cam_iou=_cam_iou(model, test, prep, iou_frames, localisation_mean_iou),
        consistency=mean_consistency(model, test.frames, prep, consistency_frames),
    )


def spread(n_items: int, count: int) -> torch.Tensor:
    """``count`` indices spread evenly over ``range(n_items)`` (all of them when fewer)."""
    if n_items <= count:
        return torch.arange(n_items)
    return torch.linspace(0, n_items - 1, count).round().long()


def _cam_iou(model: nn.Module, test: FrameSet, prep: Preprocessing, n: int, fn) -> float | None:
    """Mean CAM-box IoU over up to ``n`` test frames that have a box (all their boxed classes)."""
    if test.boxes is None:
        return None
    boxed = torch.nonzero((~torch.isnan(test.boxes[..., 0])).any(1)).reshape(-1)
    if boxed.numel() == 0:
        return None
    return fn(model, test.subset(boxed[spread(boxed.numel(), n)]), prep)


def mean_consistency(
    model: nn.Module, frames: torch.Tensor, prep: Preprocessing, n: int
) -> float | None:
    """Mean Grad-CAM / Guided-Backprop agreement (Pearson, in [-1, 1]; higher agrees more) of the
    top-1 class over up to ``n`` evenly spread frames ``(N,3,H,W) uint8``."""
    from model.atcon import consistency_score
    from model.detector import gradcam_layer
    from model.evaluate import batches, eval_mode

    if n <= 0 or frames.shape[0] == 0:
        return None
    chosen = frames[spread(frames.shape[0], n)]
    layer = gradcam_layer(model)
    scores = []
    with eval_mode(model):
        for batch in batches(chosen, 16):
            scores.append(consistency_score(model, layer, prep(batch)))
    return float(torch.cat(scores).mean())
