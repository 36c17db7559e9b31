"""Faster graphs for ATCON training: batch-norm folding and a tap on the stem convolution.

Both act only inside a ``with`` block and change nothing the caller can see afterwards; values
and parameter gradients equal those of the plain model (to float rounding).

*Folding.* A ``BatchNorm2d`` in eval mode right after a ``Conv2d`` is an affine map per channel,
so the pair equals one convolution with weight ``W * s`` and bias ``beta + (b - mean) * s``, where
``s = gamma / sqrt(var + eps)``. Folding removes the batch-norm's forward, backward and - what
costs most in ATCON - its double backward through the guided gradient. The folded weight and bias
are computed from the live parameters once per block (again whenever a parameter changes) and
shared by its forward passes, so gradients reach ``W``, ``b``, ``gamma`` and ``beta`` as without
folding, through one multiplication per step.

*Stem tap.* The guided gradient with respect to the image is the stem convolution's input
gradient of the guided gradient at the stem's output. Taking the backward pass only to the stem
output and applying the stem's adjoint (a transposed convolution, :meth:`StemTap.input_gradient`)
gives the same map, but the image no longer needs ``requires_grad``: the later
``loss.backward()`` skips the image gradient of the forward pass, and differentiates the stem's
adjoint as a transposed convolution, which is much cheaper than the generic double backward of a
strided 3-channel convolution.

Pairs and the stem are found in the ``torch.fx`` trace of the model; a model that cannot be
traced runs unchanged.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn


@dataclass
class StemTap:
    """The stem convolution (fed by the image) during one forward pass.

    ``output`` is its ``(B,K,h,w)`` output (a leaf requiring grad when nothing upstream does),
    ``weight`` the weight it used (folded when its batch-norm is folded), ``input`` the image.
    """

    conv: nn.Conv2d
    output: Tensor | None = None
    weight: Tensor | None = None
    input: Tensor | None = None
    pre_pad: nn.Module | None = None
    """A padding module between the image and the convolution (EfficientNet-Lite's
    asymmetric "same" padding), whose adjoint is applied after the convolution's."""

    def input_gradient(self, grad_output: Tensor) -> Tensor:
        """Adjoint of the stem: ``(B,K,h,w)`` gradient at its output -> ``(B,C,H,W)`` at the
        image, differentiable (``conv_transpose2d``, then the paddings' adjoints)."""
        if self.weight is None or self.input is None:
            raise RuntimeError("the stem convolution was not called during the forward pass")
        grad = _input_gradient(grad_output, self.weight, self.input, _conv_conf(self.conv))
        if self.pre_pad is None:
            return grad
        left, right, top, bottom = self.pre_pad.padding  # type: ignore[misc]
        height, width = grad.shape[-2] - top - bottom, grad.shape[-1] - left - right
        like = grad.new_empty((*grad.shape[:-2], height, width))  # only its shape is read
        return pad_adjoint(grad, like, (left, right, top, bottom), _PAD_MODES[type(self.pre_pad)])


_PAD_MODES: dict[type[nn.Module], str] = {
    nn.ZeroPad2d: "constant", nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate",
}


_ConvConf = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int, str, tuple[int, ...]]
"""``(stride, padding, dilation, groups, pad_mode, pad_widths)`` of a numerically padded conv:
``padding`` is the conv's own zero padding, ``(0, 0)`` when ``pad_mode`` pads explicitly by
``pad_widths`` (``F.pad`` order)."""


def _conv_conf(conv: nn.Conv2d) -> _ConvConf:
    """The :data:`_ConvConf` of an ``nn.Conv2d`` whose padding is numeric."""
    if conv.padding_mode == "zeros":
        return (conv.stride, conv.padding, conv.dilation, conv.groups,  # type: ignore[return-value]
                "zeros", ())
    return (conv.stride, (0, 0), conv.dilation, conv.groups, conv.padding_mode,
            tuple(conv._reversed_padding_repeated_twice))


def _input_gradient(grad_output: Tensor, weight: Tensor, x: Tensor, conf: _ConvConf) -> Tensor:
    """Differentiable input gradient of ``conv2d(pad(x))``: ``(B,Cout,h,w) -> x.shape``, a
    transposed convolution and then, for explicit padding, the padding's adjoint."""
    stride, padding, dilation, groups, pad_mode, pad_widths = conf
    height, width = x.shape[-2:]
    if pad_mode != "zeros":  # the conv sees the explicitly padded input
        left, right, top, bottom = pad_widths
        height, width = height + top + bottom, width + left + right
    grad = conv_input_adjoint(grad_output, weight, (height, width), stride=stride,
                              padding=padding, dilation=dilation, groups=groups)
    return grad if pad_mode == "zeros" else pad_adjoint(grad, x, pad_widths, pad_mode)


def pad_adjoint(grad: Tensor, like: Tensor, widths: tuple[int, ...], mode: str) -> Tensor:
    """Adjoint of ``F.pad(like, widths, mode=mode)``: ``(B,C,H+..,W+..) -> (B,C,H,W)``.

    Differentiable in ``grad`` only (under ``create_graph``): the padding's adjoint does not
    depend on the values of ``like``, so no (zero) gradient is sent back to them.
    """
    like = like.detach()
    if mode == "constant":  # zero padding: its adjoint is the crop back to ``like``'s size
        left, right, top, bottom = widths
        return grad[..., top:grad.shape[-2] - bottom, left:grad.shape[-1] - right]
    if mode == "reflect":
        return torch.ops.aten.reflection_pad2d_backward(grad, like, list(widths))
    if mode == "replicate":
        return torch.ops.aten.replication_pad2d_backward(grad, like, list(widths))
    with torch.enable_grad():  # any other mode: differentiate the padding of a zero tensor
        probe = torch.zeros_like(like).requires_grad_(True)
        padded = F.pad(probe, widths, mode=mode)
    (out,) = torch.autograd.grad(padded, probe, grad, create_graph=torch.is_grad_enabled())
    return out


def conv_input_adjoint(
    grad_output: Tensor,
    weight: Tensor,
    input_size: tuple[int, int],
    *,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> Tensor:
    """Input gradient of a zero-padded ``conv2d`` as a transposed convolution (differentiable).

    ``(B,Cout,h,w)`` gradient at the output -> ``(B,Cin,H,W)`` at the input, ``(H,W) =
    input_size``; ``output_padding`` restores the rows and columns the stride dropped.
    """
    extra = tuple(
        size + 2 * pad - ((out - 1) * step + dil * (kernel - 1) + 1)
        for size, pad, out, step, dil, kernel in zip(
            input_size, padding, grad_output.shape[-2:], stride, dilation, weight.shape[-2:],
            strict=True,
        )
    )
    return F.conv_transpose2d(
        grad_output, weight, stride=stride, padding=padding, output_padding=extra,
        groups=groups, dilation=dilation,
    )


class _Conv2d(torch.autograd.Function):
    """``F.conv2d`` (after an explicit ``F.pad`` when ``pad_mode`` is not ``"zeros"``) whose
    gradient is cheap to differentiate again.

    PyTorch's own double backward of a convolution takes the weight gradient as a convolution
    of the batch-transposed tensors with the output gradient as a kernel (``h x w`` wide), far
    slower on CPU than the weight-gradient kernel. Under ``create_graph`` (the guided backward)
    this Function returns the input gradient as :func:`conv_input_adjoint`, whose own backward is
    an ordinary first-order transposed-convolution backward. Gradients the running backward pass
    does not need (the weights', while only the input gradient is asked for) are skipped. The
    explicit padding's adjoint (:func:`pad_adjoint`) likewise depends on the gradient alone, so
    its double backward sends no zero gradient back to the activations.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, ...],
        padding: tuple[int, ...], dilation: tuple[int, ...], groups: int,
        pad_mode: str = "zeros", pad_widths: tuple[int, ...] = (),
    ) -> Tensor:
        padded = x if pad_mode == "zeros" else F.pad(x, pad_widths, mode=pad_mode)
        ctx.save_for_backward(padded, weight, x)
        ctx.conf = (stride, padding, dilation, groups, pad_mode, pad_widths)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        return F.conv2d(padded, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        padded, weight, x = ctx.saved_tensors
        stride, padding, dilation, groups, pad_mode, pad_widths = ctx.conf
        needed = [_will_need(ctx, i) for i in range(3)]
        grad_x = None
        if needed[0] and torch.is_grad_enabled():
            grad_x = _input_gradient(grad, weight, x, ctx.conf)
            needed[0] = False
        grad_w = grad_b = None
        if any(needed):
            if torch.is_grad_enabled() and pad_mode != "zeros":
                # the saved padding has no graph: redo it so that these gradients stay
                # differentiable with respect to x (never the case in ATCON's guided backward)
                padded = F.pad(x, pad_widths, mode=pad_mode)
            native_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, padded, weight, ctx.bias_sizes, list(stride), list(padding),
                list(dilation), False, [0, 0], groups, needed,
            )
            if native_x is not None:
                grad_x = native_x if pad_mode == "zeros" else pad_adjoint(
                    native_x, x, pad_widths, pad_mode)
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def _will_need(ctx: Any, index: int) -> bool:
    """Whether the running backward pass uses the gradient of the Function's input ``index``."""
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[index][0]
    if node is None:
        return False
    try:  # private API (used by torch.autograd.graph); pinned torch, but fail safe
        return bool(torch._C._will_engine_execute_node(node))
    except (RuntimeError, AttributeError):  # e.g. a leaf under autograd.grad(): compute it
        return True


@dataclass(frozen=True)
class FastGraph:
    """What :func:`fast_graph` did: the number of folded pairs and the stem tap (or None)."""

    folded_pairs: int
    stem: StemTap | None


@contextmanager
def fast_graph(
    model: nn.Module,
    keep: tuple[nn.Module, ...] = (),
    *,
    tap_stem: bool = False,
    channels_last: bool = False,
) -> Iterator[FastGraph]:
    """Fold every foldable conv/batch-norm pair of ``model`` (and tap its stem convolution when
    ``tap_stem``) while the block is open.

    ``keep`` lists modules that must run as they are (e.g. the Grad-CAM layer). Graphs built
    inside the block stay valid after it: they hold the folded weights, which depend on the
    parameters.
    """
    pairs, stem, pre_pad = _plan(model, keep)
    bn_after = dict(pairs)
    if stem is not None and not tap_stem:
        stem = None
    tap = StemTap(stem, pre_pad=pre_pad) if stem is not None else None
    patched: list[nn.Module] = []
    try:
        for conv in {*bn_after, *([stem] if stem is not None else [])}:
            bn = bn_after.get(conv)
            if "forward" in conv.__dict__ or (bn is not None and "forward" in bn.__dict__):
                if conv is stem:
                    tap = None
                continue  # already patched by someone else: leave it alone
            conv.forward = _FastConv(  # type: ignore[method-assign]
                conv, bn, tap if conv is stem else None, channels_last
            )
            patched.append(conv)
            if bn is not None:
                bn.forward = _identity  # type: ignore[method-assign]
                patched.append(bn)
        yield FastGraph(folded_pairs=sum(1 for m in patched if isinstance(m, nn.BatchNorm2d)),
                        stem=tap)
    finally:
        for module in patched:
            del module.forward


@dataclass(frozen=True)
class _Structure:
    """What the fx trace says, by module name: ``(producer, consumer)`` links where the producer's
    output feeds only the consumer, and the module that alone consumes the model's only input;
    only modules called once per forward take part."""

    module_ids: tuple[int, ...]
    links: tuple[tuple[str, str], ...]
    stem: str | None


_STRUCTURES: weakref.WeakKeyDictionary[nn.Module, _Structure] = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> _Structure:
    """The model's traced structure, cached per model while its module tree is unchanged
    (tracing a resnet18 costs ~20 ms, a noticeable share of a small ATCON step)."""
    module_ids = tuple(id(m) for m in model.modules())
    cached = _STRUCTURES.get(model)
    if cached is not None and cached.module_ids == module_ids:
        return cached
    links: list[tuple[str, str]] = []
    stem = None
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # tracing is an optimisation: a model that cannot be traced runs as is
        graph = None
    if graph is not None:
        inputs = [node for node in graph.nodes if node.op == "placeholder"]
        # a module called more than once (shared weights) is patched for every call: skip it
        calls = Counter(str(n.target) for n in graph.nodes if n.op == "call_module")
        for node in graph.nodes:
            if node.op != "call_module" or calls[str(node.target)] != 1:
                continue
            source = node.args[0] if node.args else None
            if len(inputs) == 1 and len(inputs[0].users) == 1 and source is inputs[0]:
                stem = str(node.target)  # the image feeds this module and nothing else
            if (
                isinstance(source, fx.Node)
                and source.op == "call_module"
                and calls[str(source.target)] == 1
                and len(source.users) == 1
            ):
                links.append((str(source.target), str(node.target)))
    structure = _Structure(module_ids, tuple(links), stem)
    _STRUCTURES[model] = structure
    return structure


def _plan(
    model: nn.Module, keep: tuple[nn.Module, ...]
) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d]], nn.Conv2d | None, nn.Module | None]:
    """Foldable ``(conv, bn)`` pairs, the tappable stem convolution and its padding module, now.

    A pair qualifies when the conv's output feeds only the batch-norm, the batch-norm is in eval
    mode with running statistics, and neither module carries hooks or is in ``keep``. The stem
    is a plain ``Conv2d`` that is the only consumer of the model's only input (or of a padding
    module that is), with numeric padding, no hooks and not in ``keep``.
    """
    structure = _structure(model)
    modules = dict(model.named_modules())

    def usable_conv(name: str | None) -> nn.Conv2d | None:
        conv = modules.get(name) if name is not None else None
        ok = type(conv) is nn.Conv2d and conv not in keep and not _has_hooks(conv)
        return conv if ok else None  # type: ignore[return-value]

    pairs = []
    for conv_name, bn_name in structure.links:
        conv, bn = usable_conv(conv_name), modules.get(bn_name)
        if (
            conv is not None
            and isinstance(bn, nn.BatchNorm2d)
            and _foldable(bn)
            and conv.out_channels == bn.num_features
            and bn not in keep
            and not _has_hooks(bn)
        ):
            pairs.append((conv, bn))
    stem_name, pre_pad = structure.stem, modules.get(structure.stem or "")
    if type(pre_pad) in _PAD_MODES and pre_pad not in keep and not _has_hooks(pre_pad):
        stem_name = dict(structure.links).get(stem_name or "")
    else:
        pre_pad = None
    stem = usable_conv(stem_name)
    if stem is not None and isinstance(stem.padding, str):
        stem = None
    return pairs, stem, (pre_pad if stem is not None else None)


def _foldable(bn: nn.BatchNorm2d) -> bool:
    return (
        not bn.training
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
    )


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def _identity(x: Tensor) -> Tensor:
    return x


class _FastConv:
    """``conv`` (then ``bn`` in eval mode, folded) as one convolution, optionally tapped:
    ``(B,Cin,H,W) -> (B,Cout,H',W')``.

    The folded weight and bias are computed once per block and shared by every forward pass
    in it (ATCON runs two), so the folding and its backward are paid once per step; a change of
    any parameter or statistic (their version counters) or of the grad mode, or a backward pass
    through the fold (which may free its graph), recomputes them.
    """

    def __init__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, tap: StemTap | None,
        channels_last: bool = False,
    ) -> None:
        self.conv, self.bn, self.tap = conv, bn, tap
        self.channels_last = channels_last
        self._folded: tuple[tuple[object, ...], Tensor, Tensor | None] | None = None

    def _weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        conv, bn = self.conv, self.bn
        if bn is None:
            return conv.weight, conv.bias
        assert bn.running_var is not None and bn.running_mean is not None
        sources = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = (torch.is_grad_enabled(), bn.eps,
               *((id(t), t._version) if t is not None else None for t in sources))
        if self._folded is not None and self._folded[0] == key:
            return self._folded[1], self._folded[2]
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = bn.weight * scale
        bias = conv.bias
        bias = -bn.running_mean * scale if bias is None else (bias - bn.running_mean) * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        if self.channels_last:  # the layout of the activations: no conversion per call
            weight = weight.contiguous(memory_format=torch.channels_last)
        self._folded = (key, weight, bias)
        # a backward pass through the fold may free its graph: fold again for the next forward
        this = weakref.ref(self)  # no reference cycle through the autograd graph

        def forget(*_: object) -> None:
            owner = this()
            if owner is not None:
                owner._folded = None

        for tensor in (weight, bias):
            if tensor is not None and tensor.grad_fn is not None:
                tensor.grad_fn.register_hook(forget)
        return weight, bias

    def __call__(self, x: Tensor) -> Tensor:
        conv = self.conv
        weight, bias = self._weight_and_bias()
        if isinstance(conv.padding, str):
            out = conv._conv_forward(x, weight, bias)
        else:
            out = _Conv2d.apply(x, weight, bias, *_conv_conf(conv))
        if self.tap is None:
            return out
        if not out.requires_grad:  # frozen model: the guided backward still needs a start
            out = out.detach().requires_grad_(True)
        self.tap.output, self.tap.weight, self.tap.input = out, weight, x
        # the caller's next op may be an in-place ReLU; the tapped tensor must keep its value
        return out.clone()
