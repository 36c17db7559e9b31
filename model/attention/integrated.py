"""Integrated Gradients (Sundararajan et al., ICML 2017), batched over images and steps.

Uses Captum's default quadrature (Gauss-Legendre on [0, 1]) and its default all-zero baseline,
so the result equals ``captum.attr.IntegratedGradients(model).attribute(x, target=t,
n_steps=steps)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from model.attention._core import (
    check_images,
    grad_enabled,
    resolve_target,
    selected_score,
    usable,
)


def gauss_legendre(steps: int) -> tuple[list[float], list[float]]:
    """Step weights and points of the Gauss-Legendre rule on ``[0, 1]`` (Captum's default).

    Returns:
        ``(step_sizes, alphas)``, each of length ``steps``; the weights sum to one.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    points, weights = np.polynomial.legendre.leggauss(steps)
    return (0.5 * weights).tolist(), (0.5 * (1.0 + points)).tolist()


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Tensor | None = None,
    *,
    baseline: Tensor | None = None,
    steps: int = 32,
    internal_batch_size: int | None = None,
    create_graph: bool = False,
) -> Tensor:
    """Integrated Gradients of the target score w.r.t. the input.

    ``IG = (x - x0) * sum_i w_i * d y_c / dx (x0 + a_i (x - x0))`` with Gauss-Legendre
    points ``a_i`` and weights ``w_i``.

    Args:
        model: classifier ``(B,3,H,W) -> (B,C)``; left exactly as found.
        x: ``(B,3,H,W)`` float images.
        target: ``None`` (top-1 class of ``model(x)``) or an int tensor ``(B,)``.
        baseline: ``None`` (all zeros) or a tensor broadcastable to ``x``.
        steps: number of quadrature points.
        internal_batch_size: at most this many images (or ``B``, when larger) go through the
            model at once; ``None`` runs all ``B * steps`` scaled images in one pass.
        create_graph: keep the graph (differentiable w.r.t. the weights); else detached.

    Returns:
        ``(B,3,H,W)`` attributions in ``x``'s dtype.
    """
    check_images(x)
    step_sizes, alphas = gauss_legendre(steps)
    batch = x.shape[0]
    per_pass = steps if internal_batch_size is None else max(1, internal_batch_size // batch)
    with grad_enabled():
        x_in = usable(x) if create_graph else usable(x).detach()
        x0 = torch.zeros_like(x_in) if baseline is None else usable(baseline.to(x_in))
        x0 = x0.expand_as(x_in)
        if target is None:
            with torch.no_grad():
                target = model(x_in.detach()).argmax(dim=1)
        total = torch.zeros_like(x_in)
        for start in range(0, steps, per_pass):
            chunk_alphas = alphas[start : start + per_pass]
            chunk_weights = step_sizes[start : start + per_pass]
            total = total + _weighted_grads(
                model, x_in, x0, target, chunk_alphas, chunk_weights, create_graph
            )
        attributions = total * (x_in - x0)
    return attributions if create_graph else attributions.detach()


def _weighted_grads(
    model: nn.Module,
    x: Tensor,
    x0: Tensor,
    target: Tensor,
    alphas: list[float],
    weights: list[float],
    create_graph: bool,
) -> Tensor:
    """``sum_i w_i * grad(x0 + a_i (x - x0))`` over one chunk of steps: ``(B,3,H,W)``."""
    n, batch = len(alphas), x.shape[0]
    a = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(n, 1, 1, 1, 1)
    w = torch.tensor(weights, dtype=x.dtype, device=x.device).view(n, 1, 1, 1, 1)
    scaled = (x0 + a * (x - x0)).reshape(n * batch, *x.shape[1:])
    if not scaled.requires_grad:
        scaled.requires_grad_(True)
    logits = model(scaled)
    chosen = resolve_target(logits[:batch], target).repeat(n)
    (grads,) = torch.autograd.grad(
        selected_score(logits, chosen), scaled, create_graph=create_graph
    )
    return (grads.view(n, batch, *x.shape[1:]) * w).sum(dim=0)
