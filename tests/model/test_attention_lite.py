"""Attribution maps on EfficientNet-Lite (ReLU6, explicit "same" padding, Grad-CAM at the head):
Grad-CAM vs pytorch-grad-cam, Guided Backprop vs a per-image ReLU6 oracle, Integrated Gradients vs
Captum, and the ATCON fast path (batch-norm folding, the stem tap through the padding module)."""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import IntegratedGradients
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from model.attention import (
    grad_cam,
    grad_cam_and_guided,
    grad_cam_display,
    guided_backprop,
    integrated_gradients,
)
from model.attention.fold import fast_graph
from model.detector import build_detector, gradcam_layer
from tests.model.test_attention_helpers import assert_unchanged, one_thread, snapshot
from tests.support import atcon_reference

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread

SIZE = 96


def _model(seed: int = 0, reflect: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = build_detector("efficientnet_lite0", 5, weights="IMAGENET1K", input_size=SIZE,
                           reflect_padding=reflect).eval()
    with torch.no_grad():  # spread the classes so top-1 and explicit targets differ
        model.classifier[-1].weight.mul_(20)
    return model


def _images(batch: int = 3, seed: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, SIZE, SIZE, generator=gen, dtype=dtype).clamp(-1, 1)


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("explicit", [False, True])
def test_grad_cam_display_equals_pytorch_grad_cam(explicit: bool) -> None:
    model = _model()
    x = _images()
    target = torch.tensor([1, 4, 2]) if explicit else None
    before = snapshot(model)
    raw = grad_cam(model, gradcam_layer(model), x, target)
    assert_unchanged(model, before)
    ours = grad_cam_display(raw, (SIZE, SIZE))
    oracle_model = copy.deepcopy(model)
    targets = None if target is None else [ClassifierOutputTarget(int(t)) for t in target]
    with GradCAM(oracle_model, [gradcam_layer(oracle_model)]) as cam:
        expected = torch.from_numpy(cam(x, targets))
    assert raw.shape == (3, SIZE // 32, SIZE // 32)
    assert expected.std() > 0.05
    assert (ours - expected).abs().max().item() <= 1e-4


def _oracle_guided(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Per image, on a copy with every ReLU6 swapped for the guided Function."""
    twin = copy.deepcopy(model)
    atcon_reference._swap_relus(twin)
    out = []
    for img, cls in zip(x, target.tolist(), strict=True):
        inp = img[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(twin(inp)[0, cls], inp)
        out.append(g[0])
    return torch.stack(out)


def test_guided_backprop_through_relu6_equals_the_oracle() -> None:
    model = _model(seed=2).double()
    x = _images(dtype=torch.float64)
    target = torch.tensor([0, 3, 1])
    before = snapshot(model)
    ours = guided_backprop(model, x, target)
    assert_unchanged(model, before)
    expected = _oracle_guided(model, x, target)
    assert _rel(ours, expected) <= 1e-8
    # the guided rule changes the map: it is not the plain gradient
    plain = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(plain).gather(1, target[:, None]).sum(), plain)
    assert _rel(g, expected) > 0.1


def test_integrated_gradients_equals_captum() -> None:
    model = _model(seed=3).double()
    x = _images(batch=2, dtype=torch.float64)
    target = torch.tensor([2, 2])
    ours = integrated_gradients(model, x, target, steps=4)
    expected = IntegratedGradients(copy.deepcopy(model)).attribute(x, target=target, n_steps=4)
    assert _rel(ours, expected) <= 1e-6


@pytest.mark.parametrize("reflect", [False, True])
def test_fast_path_folds_every_pair_and_taps_the_stem_through_its_padding(reflect: bool) -> None:
    model = _model(seed=4, reflect=reflect).double()
    with torch.no_grad():  # batch-norm statistics that are not ImageNet's (folding must use them)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(0.1)
    layer = gradcam_layer(model)
    x = _images(batch=2, dtype=torch.float64)
    plain = grad_cam_and_guided(model, layer, x, None, create_graph=True)
    pairs = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    before = snapshot(model)
    with fast_graph(model, (layer,), tap_stem=True) as fast:
        assert fast.folded_pairs == pairs
        assert fast.stem is not None and fast.stem.pre_pad is not None
        joint = grad_cam_and_guided(model, layer, x, None, create_graph=True, stem=fast.stem)
    assert_unchanged(model, before)
    assert joint.guided.shape == x.shape
    torch.testing.assert_close(joint.cam, plain.cam, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(joint.guided, plain.guided, rtol=1e-9, atol=1e-12)
    # the maps stay differentiable in the weights, with the same gradient
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fast = (joint.guided.abs().sum() + joint.cam.pow(2).sum())
    loss_plain = (plain.guided.abs().sum() + plain.cam.pow(2).sum())
    g_fast = torch.autograd.grad(loss_fast, params, allow_unused=True)
    g_plain = torch.autograd.grad(loss_plain, params, allow_unused=True)
    for a, b in zip(g_fast, g_plain, strict=True):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-10)
