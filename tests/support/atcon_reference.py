"""The ATCON loss as the paper's code computes it: one image at a time, written from the method
note (``/work/shared/docs/atcon.md``) and used twice: as the oracle of ``tests/model/test_atcon.py``
(values and parameter gradients) and as the peer of ``benchmarks/bench_attention.py``.

Per image: Grad-CAM by a backward pass that runs to the input with ``create_graph=True`` (the
layer's activations and gradients captured by hooks), Guided Backprop on a forward pass of its own
with every ``nn.ReLU`` (and ``nn.ReLU6``) swapped for a guided Function (non-differentiable
masks), the soft mask, the Grad-CAM of the masked image - whose input keeps its graph, so the
loss is differentiated through the mask and the guided gradient, as the note asks - and the
negative Pearson correlation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class GuidedReLUFunction(torch.autograd.Function):
    """The reference's guided ReLU: masks are non-differentiable comparisons."""

    @staticmethod
    def forward(ctx, inp: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inp)
        return inp.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (inp,) = ctx.saved_tensors
        return grad * (inp > 0).to(grad.dtype) * (grad > 0).to(grad.dtype)


class GuidedReLU(nn.Module):
    def forward(self, inp: Tensor) -> Tensor:
        return GuidedReLUFunction.apply(inp)


class GuidedReLU6Function(torch.autograd.Function):
    """The guided rule on ReLU6's linear region: positive gradients at inputs in (0, 6)."""

    @staticmethod
    def forward(ctx, inp: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inp)
        return inp.clamp(min=0, max=6)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (inp,) = ctx.saved_tensors
        inside = ((inp > 0) & (inp < 6)).to(grad.dtype)
        return grad * inside * (grad > 0).to(grad.dtype)


class GuidedReLU6(nn.Module):
    def forward(self, inp: Tensor) -> Tensor:
        return GuidedReLU6Function.apply(inp)


def _swap_relus(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6)):
                guided = GuidedReLU() if isinstance(child, nn.ReLU) else GuidedReLU6()
                parent._modules[name] = guided
                swapped.append((parent, name, child))
    return swapped


def grad_cam(
    model: nn.Module, layer: nn.Module, img: Tensor, cls: int | None
) -> tuple[int, Tensor]:
    """One image ``(3,H,W)`` -> (class, raw Grad-CAM ``(h,w)``), by a backward to the input."""
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: Tensor) -> None:
        store["a"] = out
        out.register_hook(lambda g: store.__setitem__("g", g))

    handle = layer.register_forward_hook(hook)
    try:
        inp = img[None] if img.requires_grad else img[None].detach().requires_grad_(True)
        logits = model(inp)
        cls = int(logits.argmax()) if cls is None else cls
        torch.autograd.grad(logits[0, cls], inp, create_graph=True)
    finally:
        handle.remove()
    acts, grads = store["a"][0], store["g"][0]
    return cls, (grads.mean(dim=(1, 2))[:, None, None] * acts).sum(0)


def guided_map(model: nn.Module, img: Tensor, cls: int) -> Tensor:
    """``(3,H,W) -> (H,W)``: sum over colours of |Guided Backprop|, on a forward of its own."""
    swapped = _swap_relus(model)
    try:
        inp = img[None].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(inp)[0, cls], inp, create_graph=True)
    finally:
        for parent, name, child in swapped:
            parent._modules[name] = child
    return g[0].abs().sum(0)


def ig_map(model: nn.Module, img: Tensor, cls: int, steps: int) -> Tensor:
    """``(3,H,W) -> (H,W)``: sum over colours of |Integrated Gradients| (zero baseline,
    Gauss-Legendre rule, one step at a time)."""
    pts, wts = np.polynomial.legendre.leggauss(steps)
    total = torch.zeros_like(img)
    for a, w in zip(0.5 * (1 + pts), 0.5 * wts, strict=True):
        inp = (float(a) * img)[None].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(inp)[0, cls], inp, create_graph=True)
        total = total + float(w) * g[0]
    return (total * img).abs().sum(0)


def _standardise(m: Tensor) -> Tensor:
    return torch.sigmoid((m - m.mean()) / m.std())


def consistency_loss(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    second: str = "guided_backprop",
    w: float = 8.0,
    steps: int = 4,
) -> Tensor:
    """Mean over ``x`` ``(B,3,H,W)`` of the per-image negative Pearson agreement, ``()``."""
    total = x.new_zeros(())
    for img in x:
        cls, cam = grad_cam(model, layer, img, None)
        if second == "guided_backprop":
            g = guided_map(model, img, cls)
        else:
            g = ig_map(model, img, cls, steps)
        sigma = g.mean() + g.std() / 2
        # torch.sigmoid, not 1/(1+exp(-z)): the same function, but exp overflows (inf/inf = NaN
        # in the backward) for the large attributions of an ImageNet model
        mask = torch.sigmoid(w * (g - sigma))
        _, cam2 = grad_cam(model, layer, mask[None] * img, cls)
        a, b = _standardise(cam), _standardise(cam2)
        va, vb = a - a.mean(), b - b.mean()
        den = va.pow(2).sum().sqrt() * vb.pow(2).sum().sqrt()
        total = total + (-(va * vb).sum() / den if den > 0 else 0.0)
    return total / x.shape[0]
