"""Evaluation metrics: multi-label F1, average precision, and weakly supervised localisation.

Pure functions on tensors (CPU or GPU inputs are accepted; results are CPU tensors or floats).
Conventions follow scikit-learn where it defines them (F1 with ``zero_division=0``, AP as the
step-wise area ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds) and the ATCON paper's
localisation protocol (threshold the display Grad-CAM, take the box of the largest connected
region, IoU with the ground-truth box).

Boxes are ``(x0, y0, x1, y1)`` in pixels with exclusive ends (a one-pixel box at column 3, row 5
is ``(3, 5, 4, 6)``); a missing box is a row of NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage


def _check_pair(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(
            "scores and targets must both be (N,C); "
            f"got {tuple(scores.shape)}, {tuple(targets.shape)}"
        )
    # Scores keep their dtype: ``scores >= 0.7`` must mean what it means for the caller's tensor
    # (0.7 is not the same number in float32 and float64).
    return scores.detach().cpu(), (targets.detach().cpu() > 0.5)


def f1_per_class(
    scores: torch.Tensor, targets: torch.Tensor, threshold: float | torch.Tensor = 0.5,
    *, zero_division: float = 0.0,
) -> torch.Tensor:
    """Per-class F1 of ``scores >= threshold`` against multi-hot ``targets``.

    Args:
        scores: ``(N,C)`` probabilities (any float dtype).
        targets: ``(N,C)`` multi-hot (values > 0.5 count as positive).
        threshold: one threshold for every class, or a ``(C,)`` tensor of per-class thresholds.
        zero_division: the F1 of a class with no positive target and no positive prediction.

    Returns:
        ``(C,) float64`` F1 per class.
    """
    s, t = _check_pair(scores, targets)
    thr = torch.as_tensor(threshold, dtype=s.dtype).reshape(-1)
    pred = s >= thr
    tp = (pred & t).sum(0).double()
    fp = (pred & ~t).sum(0).double()
    fn = (~pred & t).sum(0).double()
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(tp, zero_division))


def macro_f1(
    scores: torch.Tensor, targets: torch.Tensor, threshold: float | torch.Tensor = 0.5
) -> float:
    """Unweighted mean of :func:`f1_per_class` over classes."""
    return float(f1_per_class(scores, targets, threshold).mean())


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Average precision of one class: ``(N,)`` scores vs ``(N,)`` binary targets.

    Equal scores form one threshold (as scikit-learn's ``average_precision_score``). Returns NaN
    when there is no positive target (AP is undefined).
    """
    s = scores.detach().double().cpu().reshape(-1)
    t = (targets.detach().cpu().reshape(-1) > 0.5).double()
    positives = float(t.sum())
    if positives == 0:
        return math.nan
    order = torch.argsort(s, descending=True, stable=True)
    s, t = s[order], t[order]
    tp = torch.cumsum(t, 0)
    # The last index of each run of equal scores is where that threshold's counts are complete.
    last_of_run = torch.ones_like(s, dtype=torch.bool)
    last_of_run[:-1] = s[1:] != s[:-1]
    idx = torch.nonzero(last_of_run).reshape(-1)
    tp_at = tp[idx]
    precision = tp_at / (idx + 1).double()
    recall = tp_at / positives
    recall_prev = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - recall_prev) * precision).sum())


def ap_per_class(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(N,C)`` scores and targets -> ``(C,) float64`` AP per class (NaN without positives)."""
    s, t = _check_pair(scores, targets)
    return torch.tensor([average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])],
                        dtype=torch.float64)


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean AP over the classes that have at least one positive target (NaN if none has)."""
    ap = ap_per_class(scores, targets)
    ap = ap[~torch.isnan(ap)]
    return float(ap.mean()) if ap.numel() else math.nan


def f1_curve(scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """F1 of ``scores >= candidates[k]`` for every candidate and class.

    Args:
        scores: ``(N,C)`` probabilities.
        targets: ``(N,C)`` multi-hot.
        candidates: ``(K,)`` thresholds.

    Returns:
        ``(K,C) float64`` F1 (0 where a threshold gives no positive prediction and there is no
        positive target).
    """
    s, t = _check_pair(scores, targets)
    cand = candidates.detach().cpu().reshape(-1, 1, 1).to(s.dtype)  # (K,1,1)
    pred = s.unsqueeze(0) >= cand  # (K,N,C)
    tgt = t.unsqueeze(0)
    tp = (pred & tgt).sum(1).double()
    denom = 2 * tp + (pred & ~tgt).sum(1) + (~pred & tgt).sum(1)
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))


def best_f1_thresholds(
    scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor | None = None,
    *, default: float = 0.5,
) -> torch.Tensor:
    """Per class, the candidate threshold with the highest F1 (ties: the lowest threshold).

    For event hysteresis use :func:`model.thresholds.event_thresholds` instead: the lowest
    F1-optimal threshold sits at the bottom of the gap between classes, too close to the scores
    of background frames for events to close.

    Args:
        scores: ``(N,C)`` probabilities.
        targets: ``(N,C)`` multi-hot.
        candidates: ``(K,)`` thresholds to try; default ``0.05, 0.10, ..., 0.95``.
        default: the threshold of a class without any positive target.

    Returns:
        ``(C,) float64`` thresholds.
    """
    _, t = _check_pair(scores, targets)
    if candidates is None:
        candidates = torch.arange(1, 20, dtype=torch.float64) / 20
    candidates = candidates.detach().cpu().double().reshape(-1).sort().values
    f1 = f1_curve(scores, targets, candidates)  # (K,C)
    best = candidates[f1.argmax(0)]  # argmax: the first (lowest) maximum
    return torch.where(t.any(0), best, torch.full_like(best, default))


def cam_box(cam: torch.Tensor | np.ndarray, fraction: float = 0.5) -> torch.Tensor:
    """Box of the largest connected region of ``cam >= fraction * max(cam)``.

    Args:
        cam: ``(H,W)`` non-negative map (the display Grad-CAM, input resolution).
        fraction: threshold as a fraction of the map's maximum, in ``(0, 1]``.

    Returns:
        ``(4,) float32`` box ``(x0, y0, x1, y1)`` (exclusive ends), NaN when the map is all zero.
        Regions are 8-connected; among equally large regions the first in row-major order wins.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    arr = cam.detach().float().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    if arr.ndim != 2:
        raise ValueError(f"expected an (H,W) map, got shape {arr.shape}")
    peak = float(arr.max()) if arr.size else 0.0
    if not peak > 0.0:
        return torch.full((4,), math.nan)
    labels, count = ndimage.label(arr >= fraction * peak, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)[1:]
    largest = int(np.argmax(sizes)) + 1
    rows, cols = np.nonzero(labels == largest)
    return torch.tensor(
        [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32
    )


def cam_boxes(cams: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """``(N,H,W)`` maps -> ``(N,4) float32`` boxes (see :func:`cam_box`)."""
    if cams.ndim != 3:
        raise ValueError(f"expected (N,H,W) maps, got {tuple(cams.shape)}")
    if cams.shape[0] == 0:
        return torch.empty(0, 4)
    return torch.stack([cam_box(cam, fraction) for cam in cams.detach().cpu()])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of ``(N,4)`` boxes ``a`` and ``b`` -> ``(N,) float32``.

    A pair where either box is missing (NaN) has IoU 0: a map that localises nothing is a miss.
    """
    a, b = a.detach().float().cpu().reshape(-1, 4), b.detach().float().cpu().reshape(-1, 4)
    if a.shape != b.shape:
        raise ValueError(f"box shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    union = _area(a) + _area(b) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
    return torch.nan_to_num(iou, nan=0.0)


def _area(box: torch.Tensor) -> torch.Tensor:
    return (box[:, 2] - box[:, 0]).clamp(min=0) * (box[:, 3] - box[:, 1]).clamp(min=0)


def localisation_iou(
    cams: torch.Tensor, true_boxes: torch.Tensor, fraction: float = 0.5
) -> torch.Tensor:
    """IoU between the box of each map and its ground-truth box.

    Args:
        cams: ``(N,H,W)`` display Grad-CAMs, one per (frame, class) pair to evaluate.
        true_boxes: ``(N,4)`` ground-truth boxes in the maps' pixel coordinates.
        fraction: see :func:`cam_box`.

    Returns:
        ``(N,) float32`` IoU per map; its mean is the paper's "mean IoU".
    """
    return box_iou(cam_boxes(cams, fraction), true_boxes)


def mean_iou(cams: torch.Tensor, true_boxes: torch.Tensor, fraction: float = 0.5) -> float:
    """Mean of :func:`localisation_iou` (NaN for no maps)."""
    iou = localisation_iou(cams, true_boxes, fraction)
    return float(iou.mean()) if iou.numel() else math.nan


__all__ = [
    "ap_per_class",
    "average_precision",
    "best_f1_thresholds",
    "box_iou",
    "cam_box",
    "cam_boxes",
    "f1_curve",
    "f1_per_class",
    "localisation_iou",
    "macro_f1",
    "mean_average_precision",
    "mean_iou",
]
