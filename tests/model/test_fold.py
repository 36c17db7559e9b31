"""Batch-norm folding and the stem tap (model.attention.fold): same values, same gradients, and
the model as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from model.attention import grad_cam_and_guided
from model.attention.fold import _Conv2d, fast_graph
from model.detector import build_detector, gradcam_layer
from tests.model.test_attention_helpers import assert_unchanged, one_thread, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread


def _model(reflect: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build_detector("resnet18", 3, reflect_padding=reflect).double().eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("reflect", [False, True])
def test_folded_model_gives_the_same_outputs_and_parameter_gradients(reflect: bool) -> None:
    model = _model(reflect)
    x = torch.randn(2, 3, 67, 61, dtype=torch.float64)  # odd sizes: every stride rounds
    params = list(model.parameters())
    before = snapshot(model)
    plain = model(x)
    g_plain = torch.autograd.grad(plain.square().sum(), params)
    with fast_graph(model) as fast:
        folded = model(x)
    g_folded = torch.autograd.grad(folded.square().sum(), params)  # after the block: still valid
    assert fast.folded_pairs == 20  # every conv of a resnet18 is followed by its batch-norm
    assert fast.stem is None  # not asked for
    torch.testing.assert_close(folded, plain, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_folded, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert_unchanged(model, before)


@pytest.mark.parametrize("reflect", [False, True])
def test_guided_map_through_the_stem_tap_equals_the_input_gradient(reflect: bool) -> None:
    model = _model(reflect)
    layer = gradcam_layer(model)
    x = torch.randn(3, 3, 67, 61, dtype=torch.float64)
    params = list(model.parameters())
    before = snapshot(model)
    plain = grad_cam_and_guided(model, layer, x, create_graph=True)
    with fast_graph(model, (layer,), tap_stem=True) as fast:
        assert fast.stem is not None and fast.stem.conv is model.conv1
        tapped = grad_cam_and_guided(model, layer, x, create_graph=True, stem=fast.stem)
    assert_unchanged(model, before)
    torch.testing.assert_close(tapped.guided, plain.guided, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(tapped.cam, plain.cam, rtol=1e-8, atol=1e-12)
    assert tapped.guided.abs().sum() > 0
    # second order: gradients of a function of the guided map agree
    weights = torch.randn_like(x)
    g_plain = torch.autograd.grad((plain.guided * weights).sum(), params, allow_unused=True)
    g_tapped = torch.autograd.grad((tapped.guided * weights).sum(), params, allow_unused=True)
    for a, b in zip(g_tapped, g_plain, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


def test_stem_tap_works_on_a_frozen_model_and_rejects_images_that_need_grad() -> None:
    model = _model(False)
    layer = gradcam_layer(model)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    plain = grad_cam_and_guided(model.requires_grad_(False), layer, x)
    with fast_graph(model, (layer,), tap_stem=True) as fast:
        tapped = grad_cam_and_guided(model, layer, x, stem=fast.stem)
        with pytest.raises(ValueError, match="do not require grad"):
            grad_cam_and_guided(model, layer, x.clone().requires_grad_(True), stem=fast.stem)
    torch.testing.assert_close(tapped.guided, plain.guided, rtol=1e-8, atol=1e-12)


def test_training_mode_batch_norm_and_kept_modules_are_not_folded() -> None:
    model = _model(False)
    model.layer1.train()  # its batch-norms use batch statistics: not an affine map
    with fast_graph(model, (model.layer4[1].conv2,)) as fast:
        assert "forward" not in model.layer1[0].conv1.__dict__
        assert "forward" not in model.layer4[1].conv2.__dict__
        assert "forward" in model.layer2[0].conv1.__dict__
    assert fast.folded_pairs == 20 - 4 - 1
    hooked = _model(False)
    hooked.layer3[0].bn1.register_forward_hook(lambda *_: None)  # a hook must still see its input
    with fast_graph(hooked) as fast:
        assert fast.folded_pairs == 19


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4).eval()

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_untraceable_model_runs_unchanged() -> None:
    model = _Untraceable()
    with fast_graph(model, tap_stem=True) as fast:
        assert fast.folded_pairs == 0 and fast.stem is None
        model(torch.randn(1, 3, 8, 8))


def test_plain_torchvision_resnet_with_inplace_relus_is_folded_and_tapped() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    plain = grad_cam_and_guided(model, model.layer4[-1], x, create_graph=True)
    with fast_graph(model, (model.layer4[-1],), tap_stem=True) as fast:
        tapped = grad_cam_and_guided(model, model.layer4[-1], x, create_graph=True, stem=fast.stem)
    assert fast.folded_pairs == 20
    torch.testing.assert_close(tapped.guided, plain.guided, rtol=1e-8, atol=1e-12)


def test_trace_is_cached_until_the_module_tree_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    import model.attention.fold as fold

    calls = []
    real_trace = fold.fx.symbolic_trace
    monkeypatch.setattr(fold.fx, "symbolic_trace", lambda m: calls.append(m) or real_trace(m))
    model = _model(False)
    for _ in range(3):
        with fast_graph(model, tap_stem=True) as fast:
            assert fast.stem is not None and fast.stem.conv is model.conv1
    assert len(calls) == 1
    model.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False).double()  # a new module: trace again
    with fast_graph(model, tap_stem=True) as fast:
        assert fast.stem is not None and fast.stem.conv is model.conv1
    assert len(calls) == 2


class _SharedConv(nn.Module):
    """One conv applied twice: once before its batch-norm, once on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3).eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.bn(self.conv(x)))


def test_modules_called_twice_are_left_alone() -> None:
    torch.manual_seed(0)
    model = _SharedConv().double()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with fast_graph(model, tap_stem=True) as fast:
        assert fast.folded_pairs == 0 and fast.stem is None
        torch.testing.assert_close(model(x), _SharedConv.forward(model, x))


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "mode"),
    [(1, 1, 1, 1, "zeros"), (2, 3, 1, 1, "zeros"), (2, 0, 2, 2, "zeros"), (3, 1, 1, 1, "zeros"),
     (2, 1, 1, 1, "reflect"), (1, 2, 1, 1, "replicate"), (2, 1, 1, 1, "circular")],
)
def test_convolution_function_has_exact_first_and_second_derivatives(
    stride: int, padding: int, dilation: int, groups: int, mode: str
) -> None:
    """``_Conv2d`` against finite differences (gradcheck and gradgradcheck, float64), with
    sizes that the stride does not divide, so the adjoint needs its output padding, and with
    every explicit padding mode of ``nn.Conv2d``."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    widths = (padding,) * 4

    def conv(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        if mode == "zeros":
            return _Conv2d.apply(x, w, b, (stride, stride), (padding, padding),
                                 (dilation, dilation), groups)
        return _Conv2d.apply(x, w, b, (stride, stride), (0, 0), (dilation, dilation), groups,
                             mode, widths)

    def plain(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        if mode == "zeros":
            return F.conv2d(x, w, b, stride, padding, dilation, groups)
        return F.conv2d(F.pad(x, widths, mode=mode), w, b, stride, 0, dilation, groups)

    torch.testing.assert_close(conv(x, w, b), plain(x, w, b), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(conv, (x, w, b))
    assert torch.autograd.gradgradcheck(conv, (x, w, b))


def test_convolution_function_gives_each_requested_gradient() -> None:
    """Gradients asked for alone or together (the Function skips those the running pass does not
    use) equal PyTorch's own convolution's, also when the weight is a leaf."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(5, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    for weight in (w, w * scale):  # a leaf weight, and a folded (computed) one
        ours = _Conv2d.apply(x, weight, None, (2, 2), (1, 1), (1, 1), 1).sin().sum()
        plain = F.conv2d(x, weight, None, 2, 1).sin().sum()
        for inputs in ((x,), (w,), (scale,), (x, w, scale)):
            mine = torch.autograd.grad(ours, inputs, retain_graph=True, allow_unused=True)
            theirs = torch.autograd.grad(plain, inputs, retain_graph=True, allow_unused=True)
            for a, b in zip(mine, theirs, strict=True):
                assert (a is None) == (b is None)
                if a is not None:
                    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_folded_weights_are_shared_by_forward_passes_and_follow_parameter_changes() -> None:
    """Inside one block the fold is computed once for all forward passes (their gradients meet
    at the shared folded weight), and again when a parameter, a statistic or the grad mode
    changes."""
    model = _model(reflect=False)
    x = torch.randn(2, 3, 40, 40, dtype=torch.float64)
    params = list(model.parameters())
    plain = (model(x).square().sum() + model(x * 0.5).sin().sum())
    g_plain = torch.autograd.grad(plain, params)
    with fast_graph(model):
        with torch.no_grad():
            model(x)  # a fold without a graph must not be reused by the passes below
        folded = (model(x).square().sum() + model(x * 0.5).sin().sum())
        g_folded = torch.autograd.grad(folded, params)
        torch.testing.assert_close(folded, plain, rtol=1e-10, atol=1e-10)
        for a, b in zip(g_folded, g_plain, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
        conv_weight_ids = {id(model.layer1[0].conv1.forward._weight_and_bias()[0])}
        model(x)
        conv_weight_ids.add(id(model.layer1[0].conv1.forward._weight_and_bias()[0]))
        assert len(conv_weight_ids) == 1  # reused
        with torch.no_grad():
            model.layer1[0].bn1.running_var.mul_(2.0)
            model.layer4[1].conv2.weight.add_(0.1)
        changed = model(x)
    torch.testing.assert_close(changed, model(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("reflect", [False, True])
def test_channels_last_fold_gives_the_same_outputs_and_gradients(reflect: bool) -> None:
    """``channels_last=True`` (the layout ATCON uses on CPU) changes speed, not results."""
    model = _model(reflect)
    x = torch.randn(2, 3, 67, 61, dtype=torch.float64)
    params = list(model.parameters())
    plain = model(x)
    g_plain = torch.autograd.grad(plain.square().sum(), params)
    with fast_graph(model, channels_last=True):
        fast = model(x.contiguous(memory_format=torch.channels_last))
    g_fast = torch.autograd.grad(fast.square().sum(), params)
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_fast, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_forward_passes_after_a_backward_in_the_same_block_fold_again() -> None:
    """A backward pass frees the graph of the shared fold; the next forward in the block must
    not reuse it (gradient accumulation over two batches inside one block)."""
    model = _model(reflect=False)
    x = torch.randn(2, 3, 40, 40, dtype=torch.float64)
    params = list(model.parameters())
    expected = torch.autograd.grad(model(x).sum() + model(2 * x).sum(), params)
    for p in params:
        p.grad = None
    with fast_graph(model):
        model(x).sum().backward()
        model(2 * x).sum().backward()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-8, atol=1e-10)
        p.grad = None
