"""Attribution maps vs their reference libraries: pytorch-grad-cam and Captum."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from captum.attr import GuidedBackprop, IntegratedGradients
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from model.attention import (
    grad_cam,
    grad_cam_and_guided,
    grad_cam_display,
    guided_backprop,
    integrated_gradients,
    scores_and_cams,
)
from model.detector import build_detector, gradcam_layer
from tests.model.test_attention_helpers import assert_unchanged, one_thread, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread  # imported so pytest finds the fixture in this module

SIZE = 96


def _seeded(arch: str, classes: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=classes).eval()
    with torch.no_grad():  # spread the classes so top-1 and explicit targets differ
        model.fc.weight.mul_(20)
    return model


def _images(batch: int = 3, seed: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, SIZE, SIZE, generator=gen, dtype=dtype)


def _not_inplace(model: nn.Module) -> nn.Module:
    """A copy with ReLU(inplace=False), which Captum's backward hooks need (captum issue 973)."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return twin


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("explicit", [False, True])
def test_grad_cam_display_equals_pytorch_grad_cam(arch: str, explicit: bool) -> None:
    model = _seeded(arch)
    x = _images()
    target = torch.tensor([1, 4, 2]) if explicit else None
    before = snapshot(model)
    raw = grad_cam(model, model.layer4[-1], x, target)
    assert_unchanged(model, before)
    ours = grad_cam_display(raw, (SIZE, SIZE))

    oracle_model = copy.deepcopy(model)  # GradCAM calls .eval() and hooks the model it gets
    targets = None if target is None else [ClassifierOutputTarget(int(t)) for t in target]
    with GradCAM(oracle_model, [oracle_model.layer4[-1]]) as cam:
        expected = torch.from_numpy(cam(x, targets))

    assert raw.shape == (3, SIZE // 32, SIZE // 32)
    assert ours.shape == (3, SIZE, SIZE)
    assert expected.std() > 0.05  # the maps compared are not flat
    assert (ours - expected).abs().max().item() <= 1e-4


def test_grad_cam_targets_and_raw_form() -> None:
    model = _seeded("resnet18")
    x = _images()
    with torch.no_grad():
        top = model(x).argmax(1)
    torch.testing.assert_close(grad_cam(model, model.layer4[-1], x), grad_cam(
        model, model.layer4[-1], x, top))
    raw = grad_cam(model, model.layer4[-1], x, (top + 1) % 6)
    assert not torch.allclose(raw, grad_cam(model, model.layer4[-1], x, top))
    assert (raw < 0).any()  # raw maps are unrectified
    singles = torch.cat([grad_cam(model, model.layer4[-1], x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(grad_cam(model, model.layer4[-1], x), singles)


def test_grad_cam_backward_stops_at_the_layer() -> None:
    model = _seeded("resnet18")
    seen: list[bool] = []
    handle = model.layer3.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    try:
        grad_cam(model, model.layer4[-1], _images().requires_grad_(True))
    finally:
        handle.remove()
    assert seen == [False]  # no graph was even recorded before the layer


def test_grad_cam_create_graph_is_differentiable_in_the_weights() -> None:
    model = _seeded("resnet18")
    layer, x = model.layer4[-1], _images()
    with torch.no_grad():  # callers under no_grad still get a graph when they ask for one
        cam = grad_cam(model, layer, x, create_graph=True)
    torch.testing.assert_close(cam.detach(), grad_cam(model, layer, x))
    w1, w2 = torch.autograd.grad(cam.pow(2).sum(), (model.fc.weight, model.layer4[-1].conv2.weight))
    assert w1.abs().sum() > 0 and w2.abs().sum() > 0


@pytest.mark.parametrize("explicit", [False, True])
def test_guided_backprop_equals_captum_on_inplace_relu_model(explicit: bool) -> None:
    model = _seeded("resnet18", seed=2)
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
    x = _images(dtype=torch.float64)
    model = model.double()
    target = torch.tensor([3, 0, 5]) if explicit else None
    before = snapshot(model)
    ours = guided_backprop(model, x, target)
    assert_unchanged(model, before)
    with torch.no_grad():
        chosen = model(x).argmax(1) if target is None else target
    with pytest.warns(UserWarning):  # Captum announces its hooks and the input's requires_grad
        expected = GuidedBackprop(_not_inplace(model)).attribute(x.clone(), target=chosen)
    assert ours.shape == x.shape
    assert _rel(ours, expected) <= 1e-4


def test_guided_backprop_is_not_the_plain_gradient_and_keeps_a_graph() -> None:
    model = _seeded("resnet18", seed=3)
    x = _images(batch=2)
    xi = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(xi).max(1).values.sum(), xi)
    guided = guided_backprop(model, x, create_graph=True)
    assert _rel(guided.detach(), plain) > 0.1
    (g,) = torch.autograd.grad(guided.abs().sum(), model.layer1[0].conv1.weight)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_joint_pass_equals_separate_calls_in_values_and_weight_gradients() -> None:
    model = _seeded("resnet18", seed=4).double()
    layer, x = model.layer4[-1], _images(batch=2, dtype=torch.float64)
    joint = grad_cam_and_guided(model, layer, x, create_graph=True)
    cam = grad_cam(model, layer, x, create_graph=True)
    guided = guided_backprop(model, x, create_graph=True)
    torch.testing.assert_close(joint.cam, cam)
    torch.testing.assert_close(joint.guided, guided)
    params = [model.layer2[0].conv1.weight, model.layer4[-1].bn2.weight, model.fc.weight]

    def objective(c: Tensor, g: Tensor) -> Tensor:  # uses both maps' first and second order
        return (c * c.detach().sign()).sum() + g.abs().sum() * 1e-2

    for ours, ref in zip(torch.autograd.grad(objective(joint.cam, joint.guided), params),
                         torch.autograd.grad(objective(cam, guided), params), strict=True):
        torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("with_baseline", [False, True])
def test_integrated_gradients_equals_captum(with_baseline: bool) -> None:
    model = _seeded("resnet18", seed=5).double()
    x = _images(batch=2, dtype=torch.float64)
    baseline = 0.3 * _images(batch=2, seed=9, dtype=torch.float64) if with_baseline else None
    target = torch.tensor([2, 2])
    before = snapshot(model)
    ours = integrated_gradients(model, x, target, baseline=baseline, steps=4,
                                internal_batch_size=5)
    assert_unchanged(model, before)
    expected = IntegratedGradients(_not_inplace(model)).attribute(
        x, baselines=baseline, target=target, n_steps=4)
    assert _rel(ours, expected) <= 1e-3
    unbatched = integrated_gradients(model, x, target, baseline=baseline, steps=4)
    torch.testing.assert_close(ours, unbatched)


def test_integrated_gradients_top1_default_target() -> None:
    model = _seeded("resnet18", seed=6)
    x = _images(batch=2)
    with torch.no_grad():
        top = model(x).argmax(1)
    torch.testing.assert_close(integrated_gradients(model, x, steps=3),
                               integrated_gradients(model, x, top, steps=3))


def test_scores_and_cams_one_pass_equals_per_class_grad_cam() -> None:
    model = build_detector("resnet18", 5, reflect_padding=True).eval()
    layer = gradcam_layer(model)
    x = _images(batch=4)
    with torch.no_grad():
        probs = torch.sigmoid(model(x))
    min_score = probs.median(dim=0).values  # every class selected for some frames, not all
    before = snapshot(model)
    with torch.inference_mode():
        logits, cams = scores_and_cams(model, layer, x, min_score)
    assert_unchanged(model, before)
    assert logits.shape == (4, 5) and cams.shape == (4, 5, SIZE // 32, SIZE // 32)
    torch.testing.assert_close(torch.sigmoid(logits), probs)
    selected = probs >= min_score
    assert selected.any() and not selected.all()
    for c in range(5):
        expected = grad_cam(model, layer, x, torch.full((4,), c))
        torch.testing.assert_close(cams[:, c][selected[:, c]], expected[selected[:, c]])
        assert (cams[:, c][~selected[:, c]] == 0).all()


def test_model_left_unchanged_when_a_call_raises() -> None:
    model = _seeded("resnet18").train()
    frozen = model.layer1.parameters()
    for p in frozen:
        p.requires_grad_(False)
    before = snapshot(model)
    bad = torch.randn(2, 4, SIZE, SIZE)  # wrong channel count: fails inside the forward pass
    calls = [
        lambda: grad_cam(model, model.layer4[-1], bad),
        lambda: grad_cam(model, model.layer4[-1], bad, create_graph=True),
        lambda: guided_backprop(model, bad),
        lambda: grad_cam_and_guided(model, model.layer4[-1], bad),
        lambda: scores_and_cams(model, model.layer4[-1], bad, torch.zeros(6)),
        lambda: integrated_gradients(model, bad, torch.zeros(2, dtype=torch.long), steps=2),
    ]
    for call in calls:
        with pytest.raises(RuntimeError):
            call()
        assert_unchanged(model, before)
    assert torch.is_grad_enabled()
    with pytest.raises(ValueError):
        grad_cam(model, model.layer4[-1], _images(batch=2), torch.tensor([0, 99]))
    assert_unchanged(model, before)


def test_frozen_model_under_no_grad() -> None:
    model = _seeded("resnet18")
    for p in model.parameters():
        p.requires_grad_(False)
    x = _images(batch=2)
    before = snapshot(model)
    with torch.no_grad():
        cam = grad_cam(model, model.layer4[-1], x)
        cam_graph = grad_cam(model, model.layer4[-1], x, create_graph=True)
        guided = guided_backprop(model, x)
        assert not torch.is_grad_enabled()  # the caller's grad mode is restored
    assert_unchanged(model, before)
    torch.testing.assert_close(cam, cam_graph.detach())
    assert guided.shape == x.shape and guided.abs().sum() > 0


def test_every_map_works_for_inference_mode_callers() -> None:
    model = _seeded("resnet18", seed=7)
    x = _images(batch=2)
    expected = (grad_cam(model, model.layer4[-1], x), guided_backprop(model, x),
                integrated_gradients(model, x, steps=2))
    with torch.inference_mode():
        got = (grad_cam(model, model.layer4[-1], x), guided_backprop(model, x),
               integrated_gradients(model, x, steps=2))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
