"""Grad-CAM (Selvaraju et al., ICCV 2017), batched, at one layer.

The backward pass stops at the layer: for maps that need no graph the forward runs without
autograd up to the layer, and the gradient is taken with ``torch.autograd.grad`` on the captured
activations, so only the head (pooling + linear) is differentiated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attention._core import (
    capture_layer,
    check_images,
    grad_enabled,
    resolve_target,
    selected_score,
    usable,
    weighted_cam,
)

_DISPLAY_EPS = 1e-7  # pytorch_grad_cam.utils.image.scale_cam_image's epsilon


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    target: Tensor | None = None,
    *,
    create_graph: bool = False,
) -> Tensor:
    """Raw Grad-CAM maps at ``layer``'s resolution.

    Args:
        model: a classifier ``(B,3,H,W) -> (B,C)`` logits; left exactly as found.
        layer: the module whose output is used (e.g. ``model.layer4[-1]``); its output must not
            be modified in place further down the network.
        x: ``(B,3,H,W)`` float images (normalised as the model expects).
        target: ``None`` for each image's top-1 class, else an int tensor ``(B,)``.
        create_graph: keep the graph so the maps can be differentiated with respect to the
            model's parameters (ATCON training). Otherwise the result is detached.

    Returns:
        ``(B,h,w)`` unrectified maps ``sum_k mean_ij(d y_c / d A_k) * A_k`` in ``x``'s dtype.
    """
    return grad_cam_with_target(model, layer, x, target, create_graph=create_graph)[1]


def grad_cam_with_target(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    target: Tensor | None = None,
    *,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """:func:`grad_cam` that also returns the classes used: ``((B,) int64, (B,h,w))``."""
    check_images(x)
    if create_graph:
        with grad_enabled():
            with capture_layer(layer, "alias") as cap:
                logits = model(usable(x))
            acts = cap.get()
            chosen = resolve_target(logits, target)
            score = selected_score(logits, chosen)
            (grads,) = torch.autograd.grad(score, acts, create_graph=True)
            return chosen, weighted_cam(acts, grads)
    logits, acts = forward_cut(model, layer, x)
    chosen = resolve_target(logits, target)
    with grad_enabled():  # the score must join the head's graph even under no_grad callers
        (grads,) = torch.autograd.grad(selected_score(logits, chosen), acts)
    return chosen, weighted_cam(acts.detach(), grads)


def forward_cut(model: nn.Module, layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """One forward with autograd recording only after ``layer``.

    Returns:
        ``(logits (B,C), acts (B,K,h,w))`` where ``acts`` is a leaf requiring grad and
        ``logits`` is differentiable with respect to it (and nothing else).
    """
    # inference_mode(False): callers under torch.inference_mode still get a usable graph.
    with torch.inference_mode(False), capture_layer(layer, "cut") as cap, torch.no_grad():
        logits = model(x)
    return logits, cap.get()


def grad_cam_display(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """Display form of Grad-CAM, equal to ``pytorch_grad_cam.GradCAM``'s output.

    Same order of operations as pytorch-grad-cam 1.5: ReLU, per-image min-max (``/(1e-7+max)``),
    bilinear resize (half-pixel centres, like ``cv2.resize``), ReLU, per-image min-max again.

    Args:
        raw: ``(B,h,w)`` raw maps from :func:`grad_cam`.
        size: ``(H, W)`` output size, usually the input's.

    Returns:
        ``(B,H,W)`` in ``[0, 1]``, detached.
    """
    if raw.ndim != 3:
        raise ValueError(f"expected (B,h,w) maps, got shape {tuple(raw.shape)}")
    cam = _min_max(raw.detach().clamp(min=0))
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)
        cam = cam[:, 0]
    return _min_max(cam.clamp(min=0))


def _min_max(cam: Tensor) -> Tensor:
    flat = cam.flatten(1)
    cam = cam - flat.min(dim=1).values[:, None, None]
    return cam / (_DISPLAY_EPS + cam.flatten(1).max(dim=1).values[:, None, None])


def scores_and_cams(
    model: nn.Module, layer: nn.Module, x: Tensor, min_score: Tensor
) -> tuple[Tensor, Tensor]:
    """Logits and Grad-CAM of every (frame, class) that scores at least ``min_score[class]``.

    One forward pass; the gradients of all selected classes are taken in one batched backward
    through the head only (``is_grads_batched``), so the cost is about that of inference.
    Safe to call under ``torch.no_grad()``.

    Args:
        model: multi-label classifier ``(B,3,H,W) -> (B,C)`` logits.
        layer: Grad-CAM layer.
        x: ``(B,3,H,W)`` float images.
        min_score: ``(C,)`` sigmoid-probability thresholds per class.

    Returns:
        ``(logits (B,C), cams (B,C,h,w))``, detached; raw (unrectified) maps, zeros where the
        class's probability is below its threshold.
    """
    check_images(x)
    logits, acts = forward_cut(model, layer, x)
    num_classes = logits.shape[1]
    min_score = min_score.to(device=logits.device, dtype=logits.dtype).reshape(-1)
    if min_score.shape[0] != num_classes:
        raise ValueError(f"min_score has {min_score.shape[0]} entries for {num_classes} classes")
    selected = torch.sigmoid(logits.detach()) >= min_score  # (B,C)
    batch, _, height, width = acts.shape
    cams = acts.new_zeros(batch, num_classes, height, width)
    classes = selected.any(dim=0).nonzero().flatten()
    if classes.numel() > 0:
        # one one-hot grad_output per wanted class, all in one vmapped backward through the head
        onehot = torch.zeros(classes.numel(), batch, num_classes, dtype=logits.dtype,
                             device=logits.device)
        onehot[torch.arange(classes.numel()), :, classes] = 1.0
        (grads,) = torch.autograd.grad(logits, acts, grad_outputs=onehot, is_grads_batched=True)
        weights = grads.mean(dim=(3, 4))  # (n,B,K)
        maps = torch.einsum("nbk,bkhw->bnhw", weights, acts.detach())
        cams[:, classes] = maps * selected[:, classes, None, None].to(maps.dtype)
    return logits.detach(), cams
