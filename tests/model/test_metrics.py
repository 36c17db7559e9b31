"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.metrics import (
    ap_per_class,
    average_precision,
    best_f1_thresholds,
    box_iou,
    cam_box,
    cam_boxes,
    f1_per_class,
    localisation_iou,
    macro_f1,
    mean_average_precision,
    mean_iou,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _random_multilabel(seed: int, n: int = 200, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, c, generator=gen) < 0.3).float()
    # Informative but noisy scores, rounded so that ties occur (AP must treat them as one step).
    scores = (0.6 * targets + torch.rand(n, c, generator=gen)).div(1.6).mul(20).round().div(20)
    return scores, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_matches_sklearn(seed: int) -> None:
    scores, targets = _random_multilabel(seed)
    for threshold in (0.3, 0.5, 0.7):
        pred = (scores >= threshold).numpy().astype(int)
        expected = sklearn_metrics.f1_score(
            targets.numpy().astype(int), pred, average=None, zero_division=0
        )
        np.testing.assert_allclose(f1_per_class(scores, targets, threshold).numpy(), expected)
        assert macro_f1(scores, targets, threshold) == pytest.approx(expected.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn_with_ties(seed: int) -> None:
    scores, targets = _random_multilabel(seed)
    expected = [
        sklearn_metrics.average_precision_score(targets[:, c].numpy(), scores[:, c].numpy())
        for c in range(scores.shape[1])
    ]
    np.testing.assert_allclose(ap_per_class(scores, targets).numpy(), expected, rtol=1e-12)
    assert mean_average_precision(scores, targets) == pytest.approx(float(np.mean(expected)))


def test_average_precision_hand_computed() -> None:
    # ranking: + - + - ; precision at the two hits: 1/1, 2/3 -> AP = (1 + 2/3) / 2
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7, 0.1]), torch.tensor([1, 0, 1, 0]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)
    # a tie between a positive and a negative at the top counts as one threshold: P = 1/2
    tied = average_precision(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
    assert tied == pytest.approx(0.5)
    assert math.isnan(average_precision(torch.tensor([0.3, 0.2]), torch.tensor([0, 0])))


def test_map_ignores_classes_without_positives() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    ap = ap_per_class(scores, targets)
    assert ap[0] == 1.0 and math.isnan(ap[1])
    assert mean_average_precision(scores, targets) == 1.0
    assert math.isnan(mean_average_precision(scores, torch.zeros_like(targets)))


def test_f1_hand_computed_and_per_class_thresholds() -> None:
    scores = torch.tensor([[0.9, 0.4], [0.6, 0.3], [0.2, 0.45]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    # class 0 at 0.5: tp=1 fp=1 fn=1 -> 2/4; class 1 at 0.5: no predictions -> 0
    torch.testing.assert_close(f1_per_class(scores, targets, 0.5), torch.tensor([0.5, 0.0],
                               dtype=torch.float64))
    # per-class thresholds: class 1 at 0.25 predicts all three: tp=2 fp=1 -> 4/5
    per_class = f1_per_class(scores, targets, torch.tensor([0.5, 0.25]))
    assert per_class[1] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        f1_per_class(scores, targets[:2])


def test_best_f1_thresholds() -> None:
    scores = torch.tensor([[0.9, 0.2], [0.35, 0.1], [0.3, 0.05], [0.1, 0.3]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    thresholds = best_f1_thresholds(scores, targets)
    # class 0: any threshold in (0.30, 0.35] separates perfectly; the lowest candidate is 0.35
    assert thresholds[0] == pytest.approx(0.35)
    assert f1_per_class(scores, targets, thresholds)[0] == 1.0
    assert thresholds[1] == 0.5  # no positives: the default


def test_cam_box_picks_the_largest_connected_region() -> None:
    cam = torch.zeros(20, 30)
    cam[2:5, 3:6] = 1.0  # 9 pixels, the peak region
    cam[10:18, 12:25] = 0.8  # 104 pixels, above 0.5 * max: the largest region
    cam[0, 29] = 0.9
    torch.testing.assert_close(cam_box(cam, 0.5), torch.tensor([12.0, 10.0, 25.0, 18.0]))
    # at a higher threshold only the peak region and the single pixel survive
    torch.testing.assert_close(cam_box(cam, 0.95), torch.tensor([3.0, 2.0, 6.0, 5.0]))
    # 8-connectivity: a diagonal chain is one region
    diagonal = torch.eye(6)
    torch.testing.assert_close(cam_box(diagonal), torch.tensor([0.0, 0.0, 6.0, 6.0]))
    assert torch.isnan(cam_box(torch.zeros(4, 4))).all()
    assert cam_boxes(torch.stack([cam, cam])).shape == (2, 4)


def test_box_iou_hand_computed() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 2.0], [0, 0, 4, 4]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [3.0, 3.0, 5.0, 5.0], [math.nan] * 4])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([50 / 150, 0.0, 0.0]))


def test_localisation_iou_and_mean_iou() -> None:
    cams = torch.zeros(2, 16, 16)
    cams[0, 4:8, 4:8] = 1.0  # exactly the true box
    cams[1, 0:4, 0:8] = 1.0  # half of the true box (0,0)-(8,8) -> 32 / 64
    true_boxes = torch.tensor([[4.0, 4.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    torch.testing.assert_close(localisation_iou(cams, true_boxes), torch.tensor([1.0, 0.5]))
    assert mean_iou(cams, true_boxes) == pytest.approx(0.75)
    assert math.isnan(mean_iou(torch.zeros(0, 4, 4), torch.zeros(0, 4)))
