"""Evaluate a detector on a :class:`~model.data.FrameSet`: scores, losses, F1/mAP, localisation.

The model is put in eval mode for the duration of each call and every module's training flag is
restored afterwards, so these functions can run in the middle of training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from model.atcon import consistency_loss
from model.data import FrameSet
from model.detector import gradcam_layer
from model.metrics import ap_per_class, f1_per_class, mean_iou
from model.preprocess import Preprocessing
from model.train_state import EpochMetrics, finite_or_none


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block; every module's own training flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def batches(frames: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``(N,...)`` of at most ``batch_size`` rows."""
    for start in range(0, frames.shape[0], batch_size):
        yield frames[start : start + batch_size]


def prepare(
    frames: torch.Tensor, preprocessing: Preprocessing, device: torch.device, channels_last: bool
) -> torch.Tensor:
    """``(B,3,H,W) uint8`` on any device -> normalised ``(B,3,S,S) float32`` on ``device``."""
    x = preprocessing(frames.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_logits(
    model: nn.Module, frames: torch.Tensor, preprocessing: Preprocessing, *,
    batch_size: int = 64, device: torch.device | str = "cpu", channels_last: bool = False,
) -> torch.Tensor:
    """``(N,3,H,W) uint8`` frames -> ``(N,C) float32`` logits on the CPU (eval mode)."""
    device = torch.device(device)
    with eval_mode(model):
        out = [model(prepare(b, preprocessing, device, channels_last)).float().cpu()
               for b in batches(frames, batch_size)]
    return torch.cat(out)


def mean_consistency(
    model: nn.Module, frames: torch.Tensor, preprocessing: Preprocessing, *,
    second: str, mask_intensity: float, batch_size: int, device: torch.device,
    channels_last: bool = False, ig_steps: int = 32,
) -> float:
    """The ATCON consistency loss averaged over ``frames`` (eval mode; no parameter update).

    Frame-weighted mean of the per-batch losses; NaN for an empty input.
    """
    layer = gradcam_layer(model)
    total, count = 0.0, 0
    with eval_mode(model), torch.enable_grad():  # attention maps need autograd even here
        for b in batches(frames, batch_size):
            x = prepare(b, preprocessing, device, channels_last)
            loss = consistency_loss(model, layer, x, second=second,  # type: ignore[arg-type]
                                    mask_intensity=mask_intensity, ig_steps=ig_steps)
            total += float(loss.detach()) * b.shape[0]
            count += b.shape[0]
    return total / count if count else math.nan


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, classes: tuple[str, ...],
    threshold: float | torch.Tensor,
) -> dict[str, object]:
    """Validation BCE, mAP, macro F1 and per-class AP / F1 from ``(N,C)`` logits and targets.

    ``threshold`` is one F1 threshold or a ``(C,)`` tensor of per-class thresholds.
    """
    probs = torch.sigmoid(logits)
    ap = ap_per_class(probs, targets)
    f1 = f1_per_class(probs, targets, threshold)
    finite_ap = ap[~torch.isnan(ap)]
    return {
        "val_bce": float(F.binary_cross_entropy_with_logits(logits, targets)),
        "val_map": finite_or_none(float(finite_ap.mean())) if finite_ap.numel() else None,
        "val_macro_f1": float(f1.mean()),
        "val_ap": {c: finite_or_none(float(v)) for c, v in zip(classes, ap, strict=True)},
        "val_f1": {c: float(v) for c, v in zip(classes, f1, strict=True)},
    }


def evaluate(
    model: nn.Module, val: FrameSet, preprocessing: Preprocessing, *, threshold: float = 0.5,
    batch_size: int = 64, device: torch.device | str = "cpu", channels_last: bool = False,
    consistency_frames: int = 0, second: str = "guided_backprop", mask_intensity: float = 8.0,
    ig_steps: int = 32,
) -> tuple[EpochMetrics, torch.Tensor]:
    """Validation metrics of ``model`` on ``val`` and its ``(N,C)`` probabilities.

    ``consistency_frames`` > 0 also reports the consistency loss on the first that many frames.
    The returned :class:`EpochMetrics` has ``epoch=0`` and no training fields.
    """
    device = torch.device(device)
    logits = predict_logits(model, val.frames, preprocessing, batch_size=batch_size,
                            device=device, channels_last=channels_last)
    fields = classification_metrics(logits, val.targets, val.classes, threshold)
    if consistency_frames > 0:
        fields["val_consistency"] = finite_or_none(mean_consistency(
            model, val.frames[:consistency_frames], preprocessing, second=second,
            mask_intensity=mask_intensity, batch_size=batch_size, device=device,
            channels_last=channels_last, ig_steps=ig_steps,
        ))
    return EpochMetrics(epoch=0, **fields), torch.sigmoid(logits)


def localisation_mean_iou(
    model: nn.Module, data: FrameSet, preprocessing: Preprocessing, *, fraction: float = 0.5,
    batch_size: int = 32, device: torch.device | str = "cpu",
) -> float | None:
    """Weakly supervised localisation: mean IoU of Grad-CAM boxes with the true boxes.

    For every (frame, class) with a ground-truth box, the display Grad-CAM of that class (at the
    frame's resolution) is thresholded at ``fraction`` of its maximum, the box of its largest
    connected region is compared with the true box. ``None`` when ``data`` has no boxes.
    """
    from model.attention import grad_cam, grad_cam_display

    if data.boxes is None:
        return None
    pairs = torch.nonzero(~torch.isnan(data.boxes[..., 0]))  # (P,2): frame, class
    if pairs.numel() == 0:
        return None
    device = torch.device(device)
    layer = gradcam_layer(model)
    size = (int(data.frames.shape[2]), int(data.frames.shape[3]))
    cams = []
    with eval_mode(model):
        for chunk in batches(pairs, batch_size):
            x = prepare(data.frames[chunk[:, 0]], preprocessing, device, False)
            raw = grad_cam(model, layer, x, chunk[:, 1].to(device))
            cams.append(grad_cam_display(raw, size).cpu())
    true_boxes = data.boxes[pairs[:, 0], pairs[:, 1]]
    return finite_or_none(mean_iou(torch.cat(cams), true_boxes, fraction))


__all__ = [
    "batches",
    "classification_metrics",
    "eval_mode",
    "evaluate",
    "localisation_mean_iou",
    "mean_consistency",
    "predict_logits",
    "prepare",
]
