"""Guided Backpropagation (Springenberg et al., ICLR 2015 workshop), batched.

Equal to ``captum.attr.GuidedBackprop``; unlike Captum it works on models built with
``nn.ReLU(inplace=True)`` and can keep the graph (``create_graph=True``) so that the map is a
differentiable function of the weights, as ATCON's training needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.attention._core import (
    capture_layer,
    check_images,
    grad_enabled,
    guided_relus,
    input_leaf,
    resolve_target,
    selected_score,
    usable,
    weighted_cam,
)
from model.attention.fold import StemTap


def guided_backprop(
    model: nn.Module,
    x: Tensor,
    target: Tensor | None = None,
    *,
    create_graph: bool = False,
) -> Tensor:
    """Gradient of the target score w.r.t. the input, through guided ReLUs.

    Every ``nn.ReLU`` passes back only positive gradients at positive inputs:
    ``grad_in = grad_out.clamp(min=0) * (input > 0)``.

    Args:
        model: classifier ``(B,3,H,W) -> (B,C)``; left exactly as found.
        x: ``(B,3,H,W)`` float images.
        target: ``None`` (top-1 per image) or an int tensor ``(B,)``.
        create_graph: keep the graph (differentiable w.r.t. the weights); else detached.

    Returns:
        ``(B,3,H,W)`` guided gradients in ``x``'s dtype.
    """
    check_images(x)
    with grad_enabled():
        xi = input_leaf(x)
        with guided_relus(model) as gate:
            logits = model(xi)
        score = selected_score(logits, resolve_target(logits, target))
        with gate.on():
            (grads,) = torch.autograd.grad(score, xi, create_graph=create_graph)
    return grads if create_graph else grads.detach()


@dataclass(frozen=True)
class CamAndGuided:
    """Grad-CAM and Guided Backprop of the same images and classes from one forward pass."""

    logits: Tensor  # (B,C)
    target: Tensor  # (B,) int64
    cam: Tensor  # (B,h,w) raw Grad-CAM
    guided: Tensor  # (B,3,H,W) guided gradients


def grad_cam_and_guided(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    target: Tensor | None = None,
    *,
    create_graph: bool = False,
    stem: StemTap | None = None,
) -> CamAndGuided:
    """Grad-CAM at ``layer`` and Guided Backprop, sharing one forward and one backward.

    Between ``layer`` and the score there is no ReLU (pooling and a linear head), so the plain
    gradient at the layer is also where the guided backward starts: one backward pass yields both
    the Grad-CAM gradient (taken at a plain alias of the activations) and the guided input
    gradient. The guided hooks act only during that backward, so a later ``loss.backward()``
    through the Grad-CAM activations sees ordinary ReLUs — the values and parameter gradients
    equal those of separate :func:`grad_cam` and :func:`guided_backprop` calls.

    ``stem``: the stem tap of an open :func:`model.attention.fold.fast_graph` block. The guided
    backward then stops at the stem's output and the stem's adjoint gives the image gradient
    (same values); the image itself needs no gradient, so a later ``loss.backward()`` skips it.
    Only for images that do not require grad.

    Shapes: ``(B,3,H,W) -> logits (B,C), cam (B,h,w), guided (B,3,H,W)``.
    """
    check_images(x)
    if stem is not None and x.requires_grad:
        raise ValueError("the stem tap is for images that do not require grad")
    with grad_enabled():
        xi = usable(x) if stem is not None else input_leaf(x)
        with guided_relus(model) as gate, capture_layer(layer, "alias") as cap:
            logits = model(xi)
        acts = cap.get()
        chosen = resolve_target(logits, target)
        score = selected_score(logits, chosen)
        start = xi if stem is None else stem.output
        if start is None:
            raise RuntimeError("the stem convolution was not called during the forward pass")
        with gate.on():
            d_acts, d_start = torch.autograd.grad(score, (acts, start), create_graph=create_graph)
        d_x = d_start if stem is None else stem.input_gradient(d_start)
        cam = weighted_cam(acts, d_acts)
    if not create_graph:
        cam, d_x, logits = cam.detach(), d_x.detach(), logits.detach()
    return CamAndGuided(logits=logits, target=chosen, cam=cam, guided=d_x)
