"""Per-class hysteresis thresholds for event detection, chosen on the validation set.

An event opens when a label's score reaches ``on`` and closes when it falls below ``off``
(``worker.events``). Taking ``on`` as the *lowest* F1-optimal threshold puts it at the bottom of
the gap between the positive and negative validation scores, and ``off`` below that sits in the
background noise: on clean video the score never falls below ``off`` and events never close. The
rule here is robust instead:

1. F1 is evaluated on a grid of thresholds (0.01, 0.02, ..., 0.99);
2. the thresholds whose F1 is within ``f1_tolerance`` of the maximum are "near-optimal";
3. ``on`` is the midpoint of the widest run of consecutive near-optimal thresholds (ties: the
   run with the higher F1, then the lower one), i.e. the middle of the gap between the classes,
   the threshold with the largest margin on both sides;
4. ``on`` is clipped to ``[on_min, on_max]`` (a threshold of 0.05 or 0.99 is never a sane
   operating point, whatever a small validation set says);
5. ``off = off_ratio * on``: a fixed fraction below ``on``, so the hysteresis band scales with
   the threshold and ``off`` stays well above zero.

A class without positive validation frames gets ``default_on`` (clipped the same way).

Each label also gets:

- ``clamped`` when step 4 moved ``on`` (the validation data wanted a threshold outside the sane
  range; the model card shows it);
- ``val_ap`` and ``reliable = val_ap >= min_alert_ap``: a label whose validation AP is too low
  to alert on is scored but raises no events (and no alerts), and says so in the registry;
- its event timing from ``timing``: a fall lasts 0.3-1 s, so ``falling`` keeps events of any
  length, while states such as ``fallen`` need a second.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.checkpoint import LabelThresholds
from model.metrics import ap_per_class, f1_curve

# 0.01 .. 0.99: fine enough that the midpoint of a gap is found to within 0.005.
GRID = torch.arange(1, 100, dtype=torch.float64) / 100


class LabelTiming(BaseModel):
    """Minimum event length and merge gap of one label, in seconds."""

    model_config = ConfigDict(extra="forbid")

    min_length_s: float | None = Field(default=None, ge=0)
    merge_gap_s: float | None = Field(default=None, ge=0)


class EventThresholdRule(BaseModel):
    """How :func:`event_thresholds` turns validation scores into ``on``/``off`` thresholds."""

    model_config = ConfigDict(extra="forbid")

    f1_tolerance: float = Field(
        default=0.02, ge=0, le=1, description="F1 below the maximum that still counts as optimal."
    )
    on_min: float = Field(default=0.2, gt=0, lt=1, description="Lowest `on` threshold.")
    on_max: float = Field(default=0.9, gt=0, lt=1, description="Highest `on` threshold.")
    off_ratio: float = Field(default=0.8, gt=0, lt=1, description="`off` = off_ratio x `on`.")
    default_on: float = Field(default=0.5, gt=0, lt=1, description="`on` without positives.")
    min_alert_ap: float = Field(
        default=0.5, ge=0, le=1,
        description="Validation AP below which a label is unreliable and raises no events.",
    )
    timing: dict[str, LabelTiming] = Field(
        default_factory=lambda: {
            "falling": LabelTiming(min_length_s=0.0, merge_gap_s=0.5),
            "fallen": LabelTiming(min_length_s=1.0, merge_gap_s=1.0),
        },
        description="Per-label minimum event length and merge gap (others: the analysis's).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> EventThresholdRule:
        if self.on_min > self.on_max:
            raise ValueError("on_min must not exceed on_max")
        return self


def widest_plateau_midpoint(f1: torch.Tensor, grid: torch.Tensor, tolerance: float) -> float:
    """Midpoint of the widest run of grid thresholds with F1 within ``tolerance`` of the max.

    Args:
        f1: ``(K,)`` F1 at each grid threshold.
        grid: ``(K,)`` increasing thresholds.
        tolerance: how far below the maximum F1 still counts as near-optimal.

    Returns:
        The midpoint ``(grid[a] + grid[b]) / 2`` of the chosen run ``a..b``.
    """
    # A hair of slack so that F1 values equal up to rounding are not split into separate runs.
    near = (f1 >= f1.max() - tolerance - 1e-12).tolist()
    best: tuple[int, float, int, int] | None = None  # (length, mean F1, -start, start)
    start = None
    for k, flag in enumerate([*near, False]):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            key = (k - start, float(f1[start:k].mean()), -start, start)
            if best is None or key[:3] > best[:3]:
                best = key
            start = None
    assert best is not None  # the maximum itself is always near-optimal
    length, first = best[0], best[3]
    return float(grid[first] + grid[first + length - 1]) / 2


def event_thresholds(
    scores: torch.Tensor, targets: torch.Tensor, classes: list[str],
    rule: EventThresholdRule | None = None,
) -> dict[str, LabelThresholds]:
    """Per-class ``on``/``off`` thresholds from validation scores (rule in the module docstring).

    Args:
        scores: ``(N,C)`` validation probabilities.
        targets: ``(N,C)`` multi-hot validation targets.
        classes: the C class names, in column order.
        rule: the rule's parameters (defaults: tolerance 0.02, ``on`` in [0.2, 0.9], off 0.8 x on).

    Returns:
        ``{class: LabelThresholds(on, off)}`` for every class.
    """
    rule = rule or EventThresholdRule()
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(f"scores must be (N,{len(classes)}); got {tuple(scores.shape)}")
    f1 = f1_curve(scores, targets, GRID)  # (K,C)
    has_positive = (targets.detach().cpu() > 0.5).any(0)
    aps = ap_per_class(scores.detach().cpu().float(), targets.detach().cpu().float())
    out: dict[str, LabelThresholds] = {}
    for c, name in enumerate(classes):
        if has_positive[c]:
            wanted = widest_plateau_midpoint(f1[:, c], GRID, rule.f1_tolerance)
        else:
            wanted = rule.default_on
        on = round(min(max(wanted, rule.on_min), rule.on_max), 4)
        clamped = "on_min" if wanted < rule.on_min else "on_max" if wanted > rule.on_max else None
        ap = float(aps[c]) if has_positive[c] and torch.isfinite(aps[c]) else None
        timing = rule.timing.get(name, LabelTiming())
        out[name] = LabelThresholds(
            on=on, off=round(rule.off_ratio * on, 4), clamped=clamped,
            val_ap=None if ap is None else round(ap, 4),
            reliable=ap is not None and ap >= rule.min_alert_ap,
            min_length_s=timing.min_length_s, merge_gap_s=timing.merge_gap_s,
        )
    return out


__all__ = [
    "GRID", "EventThresholdRule", "LabelTiming", "event_thresholds", "widest_plateau_midpoint",
]
