"""Shared machinery for the attribution methods: targets, layer capture, guided ReLUs.

Every helper here attaches hooks for the duration of one ``with`` block and removes them in
``finally``; nothing on the model (training flag, ``requires_grad``, modules) is ever changed.
Gradients are taken with ``torch.autograd.grad`` on captured tensors, never with module backward
hooks (those break on ``nn.ReLU(inplace=True)``, cf. captum issue 973), and never touch ``.grad``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

CaptureMode = Literal["cut", "alias"]


def resolve_target(logits: Tensor, target: Tensor | None) -> Tensor:
    """The class per image: ``target`` checked, or the top-1 class of ``logits``.

    Args:
        logits: ``(B,C)`` model outputs.
        target: ``None`` or an integer tensor ``(B,)`` of class indices.

    Returns:
        ``(B,)`` int64 on the logits' device, detached.
    """
    if target is None:
        return logits.detach().argmax(dim=1)
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"target must be an integer tensor, got {target.dtype}")
    target = target.to(device=logits.device, dtype=torch.int64).reshape(-1)
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"target has {target.shape[0]} entries for a batch of {logits.shape[0]}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"target classes must lie in [0, {logits.shape[1]})")
    return target


def selected_score(logits: Tensor, target: Tensor) -> Tensor:
    """``sum_b logits[b, target[b]]``: one scalar whose gradient gives every image's own map.

    Images do not interact after the last block (pooling and a linear head act per image), so
    the gradient of the sum with respect to image b's activations is that of image b's score.
    """
    return logits.gather(1, usable(target)[:, None]).sum()


def check_images(x: Tensor) -> None:
    """Reject anything but a ``(B,3,H,W)`` floating-point batch."""
    if x.ndim != 4:
        raise ValueError(f"expected a (B,3,H,W) batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected floating-point images, got {x.dtype}")


@dataclass
class LayerCapture:
    """The captured output of one module during one forward pass."""

    output: Tensor | None = None

    def get(self) -> Tensor:
        """The captured ``(B,K,h,w)`` activations; raises when the layer never ran."""
        if self.output is None:
            raise RuntimeError("the Grad-CAM layer was not called during the forward pass")
        return self.output


@contextmanager
def capture_layer(layer: nn.Module, mode: CaptureMode) -> Iterator[LayerCapture]:
    """Capture ``layer``'s output while the block is open.

    ``mode="cut"`` is for maps that need no graph: run the forward under ``torch.no_grad()``; the
    hook replaces the output by a detached leaf that requires grad and switches grad recording
    on for the rest of the forward (only the head), so the forward costs what inference costs and
    the backward stops at the layer. The caller's ``no_grad`` block restores the grad mode on exit.

    ``mode="alias"`` keeps the graph (for ``create_graph=True``) and returns a zero-copy alias of
    the output, so the gradient taken at the alias is the plain one even when a guided-ReLU hook
    sits on the output tensor itself. When nothing upstream requires grad (frozen parameters,
    plain input) the alias is a leaf that requires grad instead.
    """
    capture = LayerCapture()

    def hook(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError("the Grad-CAM layer must return a single tensor")
        if mode == "cut":
            torch.set_grad_enabled(True)
            captured = output.detach().requires_grad_(True)
        elif output.requires_grad:
            captured = output.view_as(output)
        else:
            captured = output.detach().requires_grad_(True)
        capture.output = captured
        return captured

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


@dataclass
class GuidedGate:
    """Switch for the guided-ReLU gradient hooks of one forward pass.

    The hooks stay on that pass's graph after the ``with`` block; they act only while
    :meth:`on` is open, so a later ``loss.backward()`` through the same forward (e.g. through the
    Grad-CAM activations of a shared pass) sees plain ReLU gradients, as in the reference, where
    Grad-CAM runs on the unmodified model.
    """

    active: bool = False

    def hook(self, grad: Tensor) -> Tensor | None:
        """Gradient w.r.t. a ReLU output -> its positive part (ReLU's own mask then applies)."""
        if not self.active:
            return None
        # clamp is recorded under create_graph=True, so the guided gradient stays differentiable
        # in the gradient (d/dg = [g > 0]) and constant in the activations, like the reference's
        # GuidedBackpropReLU whose masks are non-differentiable comparisons.
        return grad.clamp(min=0)

    @contextmanager
    def on(self) -> Iterator[None]:
        """Make the hooks act during the backward passes run inside this block."""
        self.active = True
        try:
            yield
        finally:
            self.active = False


GUIDED_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
"""Activation modules whose backward the guided rule changes."""


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[GuidedGate]:
    """Make every ``nn.ReLU`` and ``nn.ReLU6`` of ``model`` guided (for backward passes inside
    ``gate.on()``).

    Each activation output gets a tensor hook that keeps only the positive part of its incoming
    gradient; the activation's own backward then applies its mask, which gives Guided
    Backpropagation's ``grad.clamp(min=0) * (input > 0)`` for ReLU and, for ReLU6, the same rule
    on its linear region: ``grad.clamp(min=0) * (0 < input < 6)``. Works with ``inplace=True``
    (the hook sits on the output tensor, whatever storage it shares). Functional ``F.relu``
    calls are not seen, exactly as in Captum.
    """
    gate = GuidedGate()

    def on_relu(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(gate.hook)

    handles = [m.register_forward_hook(on_relu) for m in model.modules()
               if isinstance(m, GUIDED_ACTIVATIONS)]
    try:
        yield gate
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def grad_enabled() -> Iterator[None]:
    """Record autograd graphs inside the block, whether the caller is under ``no_grad`` or
    ``inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def usable(x: Tensor) -> Tensor:
    """``x``, or a normal copy of it when it was made under ``inference_mode`` (such tensors
    cannot be saved for backward). Call inside :func:`grad_enabled`."""
    return x.clone() if x.is_inference() else x


def input_leaf(x: Tensor) -> Tensor:
    """``x`` itself when it is already part of a graph, else a detached copy that requires grad.
    Call inside :func:`grad_enabled`."""
    x = usable(x)
    return x if x.requires_grad else x.detach().requires_grad_(True)


def weighted_cam(acts: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM from activations and their gradients: ``(B,K,h,w), (B,K,h,w) -> (B,h,w)``.

    Channel weights are the spatial mean of the gradient; the map is unrectified.
    """
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return (weights * acts).sum(dim=1)
