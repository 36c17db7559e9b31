"""ATCON loss vs a plain per-image implementation written from the method note (atcon.md):
``tests/support/atcon_reference.py``, which the benchmark also uses as its peer."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from model.atcon import consistency_loss, consistency_per_image, consistency_score
from model.detector import build_detector, gradcam_layer
from tests.model.test_attention_helpers import assert_unchanged, one_thread, snapshot
from tests.support import atcon_reference

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread  # imported so pytest finds the fixture in this module

SIZE = 64


def _size(arch: str, reflect: bool) -> int:
    """Input side: EfficientNet-Lite's 5x5 reflect padding needs 3x3 maps at 1/32 scale."""
    return 96 if reflect and arch.startswith("efficientnet") else SIZE


def _model(seed: int = 0, arch: str = "resnet18", reflect: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    # EfficientNet-Lite from random weights has vanishing gradients: start from ImageNet's
    weights = "IMAGENET1K" if arch.startswith("efficientnet") else None
    model = build_detector(arch, 4, reflect_padding=reflect, weights=weights,  # type: ignore[arg-type]
                           input_size=_size(arch, reflect)).double().eval()
    # a trained-looking head: larger weights spread the classes and the maps
    with torch.no_grad():
        head = model.fc if hasattr(model, "fc") else model.classifier[-1]
        head.weight.mul_(20)
        for m in model.modules():  # batch-norm statistics that are not the identity (folding)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize(
    ("second", "reflect", "arch"),
    [("guided_backprop", False, "resnet18"), ("guided_backprop", True, "resnet18"),
     ("integrated_gradients", False, "resnet18"),
     ("guided_backprop", False, "efficientnet_lite0"),
     ("guided_backprop", True, "efficientnet_lite0"),
     ("integrated_gradients", False, "efficientnet_lite0")],
)
def test_loss_and_parameter_gradients_equal_per_image_reference(
    second: str, reflect: bool, arch: str
) -> None:
    model = _model(reflect=reflect, arch=arch)
    layer = gradcam_layer(model)
    torch.manual_seed(1)
    # three images with Guided Backprop; two keep the (costlier) Integrated Gradients case short
    size = _size(arch, reflect)
    x = torch.randn(3 if second == "guided_backprop" else 2, 3, size, size, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    before = snapshot(model)

    ours = consistency_loss(model, layer, x, second=second, ig_steps=4)  # type: ignore[arg-type]
    assert_unchanged(model, before)
    g_ours = torch.autograd.grad(ours, params, allow_unused=True)
    ref = atcon_reference.consistency_loss(model, layer, x, second)
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)

    assert ours.shape == ()
    assert abs(ours.item()) > 1e-3  # a meaningful (non-degenerate) value is being compared
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=0)
    flat_ours = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                           for g, p in zip(g_ours, params, strict=True)])
    flat_ref = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                          for g, p in zip(g_ref, params, strict=True)])
    assert flat_ref.norm() > 0
    assert ((flat_ours - flat_ref).norm() / flat_ref.norm()).item() < 1e-3


def test_score_is_minus_per_image_loss_and_needs_no_grad() -> None:
    model = _model(seed=2)
    layer = gradcam_layer(model)
    x = torch.randn(4, 3, SIZE, SIZE, dtype=torch.float64)
    before = snapshot(model)
    with torch.no_grad():
        score = consistency_score(model, layer, x)
    with torch.inference_mode():
        torch.testing.assert_close(consistency_score(model, layer, x), score)
    assert_unchanged(model, before)
    per_image = consistency_per_image(model, layer, x)
    assert score.shape == (4,) and not score.requires_grad
    assert torch.all(score.abs() <= 1 + 1e-9)
    torch.testing.assert_close(score, -per_image.detach())
    torch.testing.assert_close(consistency_loss(model, layer, x), per_image.mean())


def test_explicit_target_changes_the_maps_compared() -> None:
    model = _model(seed=3)
    layer = gradcam_layer(model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    with torch.no_grad():
        top = model(x).argmax(1)
    other = (top + 1) % 4
    torch.testing.assert_close(consistency_score(model, layer, x, top), consistency_score(
        model, layer, x))
    assert not torch.allclose(consistency_score(model, layer, x, other), consistency_score(
        model, layer, x, top))


@pytest.mark.parametrize(
    ("comparison", "similarity"),
    [("upsampled", "pearson"), ("pooled", "pearson"), ("masked_second", "pearson"),
     ("masked_gradcam", "cross_correlation"), ("masked_gradcam", "ssim")],
)
def test_variants_are_finite_differentiable_and_batched(comparison: str, similarity: str) -> None:
    model = _model(seed=4)
    layer = gradcam_layer(model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    kwargs = {"comparison": comparison, "similarity": similarity}
    per_image = consistency_per_image(model, layer, x, **kwargs)  # type: ignore[arg-type]
    singles = torch.cat([consistency_per_image(model, layer, x[i : i + 1], **kwargs)  # type: ignore[arg-type]
                         for i in range(2)])
    torch.testing.assert_close(per_image, singles)
    (grad,) = torch.autograd.grad(per_image.mean(), model.fc.weight)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_constant_map_gives_zero_loss_and_finite_gradient() -> None:
    torch.manual_seed(5)
    model = torchvision.models.resnet18(weights=None, num_classes=3).double().eval()
    # zero input and zero biases: activations vanish, every map is constant
    x = torch.zeros(2, 3, SIZE, SIZE, dtype=torch.float64)
    loss = consistency_loss(model, model.layer4[-1], x)
    (grad,) = torch.autograd.grad(loss, model.fc.weight, allow_unused=True)
    assert loss.item() == 0.0
    assert grad is None or torch.isfinite(grad).all()


def test_agreement_measures_match_their_definitions() -> None:
    from model.atcon import agreement

    gen = torch.Generator().manual_seed(7)
    a = torch.rand(3, 7, 7, generator=gen, dtype=torch.float64)
    b = 0.5 * a + torch.rand(3, 7, 7, generator=gen, dtype=torch.float64)
    pearson = agreement(a, b, "pearson")
    for i in range(3):
        expected = torch.corrcoef(torch.stack([a[i].flatten(), b[i].flatten()]))[0, 1]
        torch.testing.assert_close(pearson[i], expected)
        conv = torch.nn.functional.conv2d(a[i][None, None], b[i][None, None]).abs().squeeze()
        torch.testing.assert_close(agreement(a, b, "cross_correlation")[i], conv)
    torch.testing.assert_close(agreement(a, a, "ssim"), torch.ones(3, dtype=torch.float64))
    assert (agreement(a, b, "ssim") < 1).all()


def test_unknown_options_are_rejected_before_any_work() -> None:
    model = _model(seed=6)
    x = torch.randn(1, 3, SIZE, SIZE, dtype=torch.float64)
    for bad in ({"second": "smoothgrad"}, {"comparison": "x"}, {"similarity": "mse"}):
        with pytest.raises(ValueError, match="unknown option"):
            consistency_loss(model, gradcam_layer(model), x, **bad)  # type: ignore[arg-type]
