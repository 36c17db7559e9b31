"""Event thresholds: the middle of the widest near-optimal interval, clipped, off below on."""

from __future__ import annotations

import pytest
import torch

from model.metrics import best_f1_thresholds, f1_curve, f1_per_class
from model.thresholds import GRID, EventThresholdRule, event_thresholds, widest_plateau_midpoint


def _separated(neg: tuple[float, float], pos: tuple[float, float], n: int = 200) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """``(2n,1)`` scores: n negatives uniform in ``neg``, n positives uniform in ``pos``."""
    g = torch.Generator().manual_seed(0)
    negatives = neg[0] + (neg[1] - neg[0]) * torch.rand(n, generator=g)
    positives = pos[0] + (pos[1] - pos[0]) * torch.rand(n, generator=g)
    scores = torch.cat([negatives, positives]).reshape(-1, 1)
    targets = torch.cat([torch.zeros(n), torch.ones(n)]).reshape(-1, 1)
    return scores, targets


def test_well_separated_classes_put_on_in_the_middle_of_the_gap() -> None:
    scores, targets = _separated((0.0, 0.25), (0.75, 1.0))
    gap_low, gap_high = float(scores[:200].max()), float(scores[200:].min())
    thr = event_thresholds(scores, targets, ["fall"])["fall"]
    assert thr.on == pytest.approx((gap_low + gap_high) / 2, abs=0.011)
    assert 0.45 < thr.on < 0.55
    assert thr.off == pytest.approx(0.8 * thr.on)
    # Still perfect on validation, but with the largest margin on both sides.
    assert f1_per_class(scores, targets, thr.on)[0] == 1.0
    # The lowest F1-optimal threshold (the old rule) is at the bottom of the gap.
    assert float(best_f1_thresholds(scores, targets)[0]) < gap_low + 0.06


def test_a_gap_low_in_the_range_still_gives_an_off_above_the_background() -> None:
    # Background up to 0.05, positives from 0.3: the gap's middle (~0.17) is below on_min.
    scores, targets = _separated((0.0, 0.05), (0.3, 0.6))
    thr = event_thresholds(scores, targets, ["fall"])["fall"]
    assert thr.on == pytest.approx(0.2)
    assert thr.off == pytest.approx(0.16)
    assert thr.off > float(scores[:200].max())


def test_a_gap_high_in_the_range_is_clipped_to_on_max() -> None:
    scores, targets = _separated((0.0, 0.95), (0.99, 1.0))
    thr = event_thresholds(scores, targets, ["fall"])["fall"]
    assert thr.on == pytest.approx(0.9) and thr.off == pytest.approx(0.72)


def test_the_widest_near_optimal_run_wins_over_a_narrow_peak() -> None:
    f1 = torch.zeros(len(GRID), dtype=torch.float64)
    f1[9] = 0.90  # a narrow spike at 0.10
    f1[39:70] = 0.89  # a broad plateau 0.40..0.70 within the tolerance of the spike
    assert widest_plateau_midpoint(f1, GRID, tolerance=0.02) == pytest.approx(0.55)
    # Without tolerance the maximum alone counts.
    assert widest_plateau_midpoint(f1, GRID, tolerance=0.0) == pytest.approx(0.10)


def test_equally_wide_runs_prefer_the_higher_f1() -> None:
    f1 = torch.zeros(len(GRID), dtype=torch.float64)
    f1[10:20] = 0.80
    f1[50:60] = 0.81
    assert widest_plateau_midpoint(f1, GRID, tolerance=0.05) == pytest.approx(0.555)


def test_rule_parameters_clipping_and_classes_without_positives() -> None:
    scores = torch.tensor([[0.97, 0.1], [0.99, 0.2], [0.2, 0.3], [0.1, 0.4]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    thr = event_thresholds(scores, targets, ["a", "b"])
    assert thr["a"].on == pytest.approx((0.21 + 0.97) / 2)  # grid points inside (0.2, 0.97]
    assert thr["b"].on == 0.5 and thr["b"].off == pytest.approx(0.4)  # no positives
    rule = EventThresholdRule(on_min=0.7, on_max=0.8, off_ratio=0.5, default_on=0.3)
    thr = event_thresholds(scores, targets, ["a", "b"], rule)
    assert thr["a"].on == pytest.approx(0.7) and thr["a"].off == pytest.approx(0.35)
    assert thr["b"].on == pytest.approx(0.7)  # the default is clipped too
    with pytest.raises(ValueError):
        EventThresholdRule(on_min=0.8, on_max=0.3)
    with pytest.raises(ValueError):
        event_thresholds(scores, targets, ["a"])


def test_f1_curve_matches_f1_per_class() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(50, 3, generator=g)
    targets = (torch.rand(50, 3, generator=g) > 0.6).float()
    curve = f1_curve(scores, targets, GRID)
    for k in (0, 30, 77):
        assert torch.allclose(curve[k], f1_per_class(scores, targets, float(GRID[k])))


def test_clamped_thresholds_say_so_and_low_ap_labels_are_unreliable() -> None:
    high, high_t = _separated((0.0, 0.95), (0.99, 1.0))
    noise = torch.rand(400, 1, generator=torch.Generator().manual_seed(1))
    noise_t = (torch.rand(400, 1, generator=torch.Generator().manual_seed(2)) < 0.1).float()
    scores, targets = torch.cat([high, noise], 1), torch.cat([high_t, noise_t], 1)
    out = event_thresholds(scores, targets, ["good", "noise"])
    assert out["good"].clamped == "on_max" and out["good"].reliable
    assert out["good"].val_ap == pytest.approx(1.0)
    assert not out["noise"].reliable and out["noise"].val_ap < 0.5
    mid, mid_t = _separated((0.0, 0.25), (0.75, 1.0))
    assert event_thresholds(mid, mid_t, ["x"])["x"].clamped is None
    lenient = EventThresholdRule(min_alert_ap=0.0)
    assert event_thresholds(scores, targets, ["good", "noise"], lenient)["noise"].reliable


def test_falls_keep_short_events_and_states_need_a_second() -> None:
    scores, targets = _separated((0.0, 0.25), (0.75, 1.0))
    both = torch.cat([scores, scores, scores], 1), torch.cat([targets, targets, targets], 1)
    out = event_thresholds(*both, ["falling", "fallen", "person_present"])
    assert (out["falling"].min_length_s, out["falling"].merge_gap_s) == (0.0, 0.5)
    assert out["fallen"].min_length_s == 1.0
    assert out["person_present"].min_length_s is None  # the analysis's own value applies
