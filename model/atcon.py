"""ATCON attention-consistency loss (Mirzazadeh et al., WACV 2023), batched.

Implements ``/work/shared/docs/atcon.md`` (the project's restatement of the method). Main variant,
per image x with top-1 class c:

1. ``cam``  = raw Grad-CAM of c at the last block (unrectified, feature resolution);
2. ``G``    = sum over colour channels of |Guided Backprop of c|, ``(H,W)``;
3. ``M``    = sigmoid(w * (G - (mean(G) + std(G)/2))), ``x' = M * x``;
4. ``cam'`` = Grad-CAM of c on x';
5. loss     = -Pearson(sigmoid(standardise(cam)), sigmoid(standardise(cam'))), 0 for a constant map;
6. batch loss = mean over images. Every std is the unbiased one (``torch.std``).

Grad-CAM and Guided Backprop share one forward and one backward pass
(:func:`model.attention.grad_cam_and_guided`), and the Grad-CAM of x' differentiates only the
head; eval-mode batch-norms are folded into their convolutions and the guided backward stops at
the stem convolution, whose adjoint is applied explicitly (:mod:`model.attention.fold`). Values
and parameter gradients equal those of the paper's per-image loop.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attention import grad_cam_and_guided, guided_backprop, integrated_gradients
from model.attention._core import grad_enabled, usable
from model.attention.fold import fast_graph
from model.attention.gradcam import grad_cam_with_target

SecondMethod = Literal["guided_backprop", "integrated_gradients"]
"""The attribution compared with Grad-CAM (the paper's ablation swaps in Integrated Gradients)."""

Comparison = Literal["masked_gradcam", "upsampled", "pooled", "masked_second"]
"""Which two maps are compared (the reference's ``resolutionMatch`` 2, 0, 1, 3):

- ``masked_gradcam``: Grad-CAM vs Grad-CAM of the image masked by the second map (main variant);
- ``upsampled``: Grad-CAM upsampled (bilinear) to the input size vs the second map directly;
- ``pooled``: Grad-CAM vs the second map average-pooled to Grad-CAM's resolution;
- ``masked_second``: the second map vs the second map of the image masked by the upsampled
  Grad-CAM (the reference used a mask intensity of 32 here; pass ``mask_intensity=32``).
"""

Similarity = Literal["pearson", "cross_correlation", "ssim"]
"""Agreement measure; the loss is its negative: Pearson correlation, |sum of the product| (the
reference's ``conv2d`` of two same-size maps), or SSIM (11x11 Gaussian window, sigma 1.5)."""


def consistency_loss(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    *,
    second: SecondMethod = "guided_backprop",
    mask_intensity: float = 8.0,
    comparison: Comparison = "masked_gradcam",
    similarity: Similarity = "pearson",
    target: Tensor | None = None,
    ig_steps: int = 32,
    ig_internal_batch_size: int | None = None,
) -> Tensor:
    """ATCON's unsupervised consistency loss, differentiable w.r.t. the model's parameters.

    Args:
        model: classifier ``(B,3,H,W) -> (B,C)``; batch-norm should be in eval mode (the
            method freezes it), otherwise the images of a batch interact.
        layer: Grad-CAM layer (``model.layer4[-1]`` for a ResNet).
        x: ``(B,3,H,W)`` float images (unlabeled).
        second: attribution compared with Grad-CAM.
        mask_intensity: ``w`` of the soft mask ``sigmoid(w * (map - threshold))``.
        comparison: which pair of maps is compared (see :data:`Comparison`).
        similarity: agreement measure (see :data:`Similarity`).
        target: ``None`` (top-1 class per image, the method) or an int tensor ``(B,)``.
        ig_steps, ig_internal_batch_size: Integrated Gradients settings when it is ``second``.

    Returns:
        ``()`` scalar: the mean over the batch of the per-image negative agreement.
    """
    per_image = consistency_per_image(
        model, layer, x, second=second, mask_intensity=mask_intensity, comparison=comparison,
        similarity=similarity, target=target, ig_steps=ig_steps,
        ig_internal_batch_size=ig_internal_batch_size, create_graph=True,
    )
    return per_image.mean()


def consistency_score(
    model: nn.Module, layer: nn.Module, x: Tensor, target: Tensor | None = None
) -> Tensor:
    """Per-image agreement of Grad-CAM and its Guided-Backprop-masked counterpart.

    ``(B,3,H,W) -> (B,)`` in ``[-1, 1]`` (the Pearson correlation, i.e. minus the main variant's
    per-image loss), detached; safe under ``torch.no_grad()``.
    """
    per_image = consistency_per_image(model, layer, x, target=target, create_graph=False)
    return -per_image.detach()


def consistency_per_image(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    *,
    second: SecondMethod = "guided_backprop",
    mask_intensity: float = 8.0,
    comparison: Comparison = "masked_gradcam",
    similarity: Similarity = "pearson",
    target: Tensor | None = None,
    ig_steps: int = 32,
    ig_internal_batch_size: int | None = None,
    create_graph: bool = True,
) -> Tensor:
    """Per-image loss ``(B,)`` of :func:`consistency_loss` (same arguments)."""
    if x.ndim != 4:
        raise ValueError(f"expected a (B,3,H,W) batch, got shape {tuple(x.shape)}")
    for value, options in ((second, SecondMethod), (comparison, Comparison),
                           (similarity, Similarity)):
        if value not in get_args(options):
            raise ValueError(f"unknown option {value!r}; choose one of {get_args(options)}")

    def second_map(images: Tensor, classes: Tensor) -> Tensor:
        if second == "guided_backprop":
            attr = guided_backprop(model, images, classes, create_graph=create_graph)
        else:
            attr = integrated_gradients(
                model, images, classes, steps=ig_steps,
                internal_batch_size=ig_internal_batch_size, create_graph=create_graph,
            )
        return attr.abs().sum(dim=1)

    tap_stem = second == "guided_backprop" and not x.requires_grad  # used by the joint pass
    # oneDNN's kernels (convolutions and their gradients, max-pooling, reflect padding) are
    # faster on channels-last activations; the convolutions then take it from the image
    channels_last = x.device.type == "cpu"
    with grad_enabled(), fast_graph(
        model, (layer,), tap_stem=tap_stem, channels_last=channels_last
    ) as fast:
        x = usable(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if second == "guided_backprop":
            joint = grad_cam_and_guided(
                model, layer, x, target, create_graph=create_graph, stem=fast.stem
            )
            classes, cam, attr_map = joint.target, joint.cam, joint.guided.abs().sum(dim=1)
        else:
            classes, cam = grad_cam_with_target(model, layer, x, target, create_graph=create_graph)
            attr_map = second_map(x, classes)
        size = x.shape[-2:]
        if comparison == "masked_gradcam":
            masked = soft_mask(attr_map, mask_intensity)[:, None] * x
            first, other = cam, _grad_cam(model, layer, masked, classes, create_graph)
        elif comparison == "upsampled":
            first, other = _upsample(cam, size), attr_map
        elif comparison == "pooled":
            first, other = cam, F.adaptive_avg_pool2d(attr_map[:, None], cam.shape[-2:])[:, 0]
        else:  # masked_second
            masked = soft_mask(_upsample(cam, size), mask_intensity)[:, None] * x
            first, other = attr_map, second_map(masked, classes)
        return -agreement(squash(first), squash(other), similarity)


def _grad_cam(
    model: nn.Module, layer: nn.Module, x: Tensor, target: Tensor, create_graph: bool
) -> Tensor:
    """Raw Grad-CAM ``(B,h,w)`` of given classes."""
    return grad_cam_with_target(model, layer, x, target, create_graph=create_graph)[1]


def soft_mask(attr_map: Tensor, intensity: float) -> Tensor:
    """``(B,H,W) -> (B,H,W)``: ``sigmoid(w * (m - (mean(m) + std(m)/2)))`` per image."""
    flat = attr_map.flatten(1)
    threshold = flat.mean(dim=1) + _std(flat) / 2
    return torch.sigmoid(intensity * (attr_map - threshold[:, None, None]))


def squash(maps: Tensor) -> Tensor:
    """Standardise each map (minus mean, over unbiased std), then sigmoid: ``(B,h,w)``.

    A constant map (std 0) becomes a constant 0.5 map; the Pearson agreement then is 0, as in
    the reference (which divides by zero and skips the image).
    """
    flat = maps.flatten(1)
    std = _std(flat)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    standard = (maps - flat.mean(dim=1)[:, None, None]) / safe[:, None, None]
    return torch.sigmoid(standard * (std > 0).to(maps.dtype)[:, None, None])


def agreement(a: Tensor, b: Tensor, similarity: Similarity) -> Tensor:
    """Per-image agreement of two ``(B,h,w)`` map batches -> ``(B,)``."""
    if similarity == "pearson":
        return _pearson(a, b)
    if similarity == "cross_correlation":
        return (a * b).sum(dim=(1, 2)).abs()
    if similarity == "ssim":
        return _ssim(a, b)
    raise ValueError(f"unknown similarity {similarity!r}")


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    va = a.flatten(1) - a.flatten(1).mean(dim=1, keepdim=True)
    vb = b.flatten(1) - b.flatten(1).mean(dim=1, keepdim=True)
    denom = _safe_sqrt(va.pow(2).sum(dim=1)) * _safe_sqrt(vb.pow(2).sum(dim=1))
    ok = denom > 0
    # where() on a safe denominator keeps the gradient finite for skipped (constant) images
    return torch.where(ok, (va * vb).sum(dim=1) / torch.where(ok, denom, 1.0), 0.0)


def _safe_sqrt(v: Tensor) -> Tensor:
    """``sqrt(v)`` with a zero (not infinite) gradient at ``v == 0``: constant maps stay finite."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, 1.0).sqrt(), 0.0)


def _std(flat: Tensor) -> Tensor:
    """Unbiased std over dim 1 of ``(B,N)`` (``torch.std``'s value), safe at zero spread."""
    return _safe_sqrt(flat.var(dim=1))


def _ssim(a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM map per image (zero-padded Gaussian window, as ``pytorch_ssim.SSIM``)."""
    coords = torch.arange(window_size, dtype=a.dtype, device=a.device) - window_size // 2
    gauss = torch.exp(-(coords**2) / (2 * sigma**2))
    gauss = gauss / gauss.sum()
    window = (gauss[:, None] * gauss[None, :])[None, None]
    pad = window_size // 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t[:, None], window, padding=pad)[:, 0]

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.flatten(1).mean(dim=1)


def _upsample(cam: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    return F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[
        :, 0
    ]


__all__ = [
    "Comparison",
    "SecondMethod",
    "Similarity",
    "agreement",
    "consistency_loss",
    "consistency_per_image",
    "consistency_score",
    "soft_mask",
    "squash",
]
