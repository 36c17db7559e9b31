"""Batched inference of a loaded detector: scores, Grad-CAM above threshold, ATCON consistency.

:class:`Detector` wraps a :class:`model.checkpoint.LoadedModel` for the worker: it applies the
checkpoint's own preprocessing, runs on the model's device, uses channels-last memory and autocast
(bf16 where supported, else fp16) on a GPU, and never changes the model's training flag or
parameters. Results come back on the CPU as float32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from model.atcon import consistency_score
from model.attention import grad_cam, grad_cam_display, guided_backprop, integrated_gradients
from model.attention import scores_and_cams as _scores_and_cams
from model.checkpoint import LoadedModel
from model.detector import gradcam_layer

logger = logging.getLogger(__name__)

AttributionMethod = Literal["gradcam", "guided_backprop", "integrated_gradients"]


@dataclass(frozen=True)
class BatchScores:
    """Per-frame outputs of one batch, on the CPU.

    Attributes:
        scores: ``(B,C) float32`` sigmoid probabilities.
        cams: ``(B,C,h,w) float32`` raw (unrectified) Grad-CAM at the model's last block; zeros
            for every (frame, class) whose score is below the class's ``on`` threshold.
    """

    scores: Tensor
    cams: Tensor


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA device if any, else the CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Detector:
    """Inference wrapper around a loaded checkpoint.

    Args:
        loaded: the model (eval mode, already on its device) and its metadata.
        amp: autocast on CUDA (default: on when the model is on CUDA). Ignored on the CPU, where
            float32 is the fastest path without AMX.
    """

    def __init__(self, loaded: LoadedModel, *, amp: bool | None = None) -> None:
        self.model = loaded.model
        self.meta = loaded.meta
        self.classes: list[str] = list(loaded.meta.classes)
        self.layer = gradcam_layer(self.model)
        self.preprocess = loaded.meta.preprocessing
        self.device = next(self.model.parameters()).device
        self.on_thresholds = torch.tensor(
            [loaded.meta.thresholds_for(c).on for c in self.classes], dtype=torch.float32
        )
        self._cuda = self.device.type == "cuda"
        self._amp = self._cuda if amp is None else (amp and self._cuda)
        if self._cuda:
            # Memory format only (values unchanged); a no-op when already channels-last.
            self.model.to(memory_format=torch.channels_last)

    def prepare(self, frames: Sequence[Tensor] | Tensor) -> Tensor:
        """``B x (3,h,w) uint8`` (or ``(B,3,h,w)``) -> ``(B,3,S,S) float32`` on the model's device.

        Frames of different sizes are preprocessed one size group at a time.
        """
        if isinstance(frames, Tensor):
            frames = list(frames.unbind(0)) if frames.ndim == 4 else [frames]
        if not frames:
            raise ValueError("no frames")
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) == 1:
            batch = torch.stack(list(frames))
            x = self.preprocess(batch.to(self.device, non_blocking=True))
        else:
            x = torch.cat([self.preprocess(f[None].to(self.device)) for f in frames])
        return x.contiguous(memory_format=torch.channels_last) if self._cuda else x

    @contextmanager
    def _autocast(self) -> Iterator[None]:
        if self._amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast(device_type="cuda", dtype=dtype):
                yield
        else:
            yield

    def score(self, frames: Sequence[Tensor] | Tensor) -> BatchScores:
        """Scores of every class and Grad-CAM of every class above its ``on`` threshold.

        ``B x (3,h,w) uint8`` -> :class:`BatchScores` (``(B,C)``, ``(B,C,7,7)`` at 224 px).
        One forward pass plus one batched backward through the head only.
        """
        x = self.prepare(frames)
        with self._autocast():
            logits, cams = _scores_and_cams(self.model, self.layer, x, self.on_thresholds)
        scores = torch.sigmoid(logits.float())
        return BatchScores(scores=scores.cpu(), cams=cams.float().cpu())

    def consistency(self, frames: Sequence[Tensor] | Tensor, classes: Sequence[int]) -> Tensor:
        """ATCON agreement of Grad-CAM and Guided-Backprop-masked Grad-CAM per frame.

        ``K x (3,h,w) uint8`` and ``K`` class indices -> ``(K,) float32`` in ``[-1, 1]`` (CPU).
        Runs in float32 even on a GPU: the score compares two maps through standardisation.
        """
        x = self.prepare(frames)
        target = torch.as_tensor(list(classes), dtype=torch.int64, device=self.device)
        return consistency_score(self.model, self.layer, x, target).float().cpu()

    def attribution(
        self,
        frame: Tensor,
        class_index: int,
        method: AttributionMethod = "gradcam",
        *,
        ig_steps: int = 32,
    ) -> Tensor:
        """One heat map for one frame and class, at the frame's size.

        ``(3,h,w) uint8`` -> ``(h,w) float32`` in ``[0, 1]`` (CPU). Grad-CAM uses its display form
        (ReLU, upsampling, min-max); the pixel-level methods use ``sum_c |attribution|``, clipped
        at its 99th percentile and smoothed slightly so that the blend stays legible.
        ``ig_steps`` is the number of Integrated Gradients steps (Gauss-Legendre, as Captum).
        """
        x = self.prepare([frame])
        target = torch.tensor([class_index], device=self.device)
        size = (int(frame.shape[-2]), int(frame.shape[-1]))
        if method == "gradcam":
            raw = grad_cam(self.model, self.layer, x, target)
            return grad_cam_display(raw.float(), size)[0].cpu()
        if method == "guided_backprop":
            grads = guided_backprop(self.model, x, target)
        elif method == "integrated_gradients":
            grads = integrated_gradients(
                self.model, x, target, steps=ig_steps, internal_batch_size=8
            )
        else:
            raise ValueError(f"unknown attribution method {method!r}")
        return pixel_map(grads.float(), size)[0].cpu()


def pixel_map(grads: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B,3,S,S)`` input attributions -> ``(B,H,W)`` in ``[0,1]``: ``sum_c |g|``, a 3x3 blur,
    clipped at the 99th percentile, resized to ``size``."""
    heat = grads.abs().sum(dim=1, keepdim=True)
    heat = F.avg_pool2d(heat, kernel_size=3, stride=1, padding=1)
    top = torch.quantile(heat.flatten(1), 0.99, dim=1).clamp(min=1e-12)
    heat = (heat / top[:, None, None, None]).clamp(0.0, 1.0)
    heat = F.interpolate(heat, size=size, mode="bilinear", align_corners=False)
    return heat[:, 0].clamp(0.0, 1.0)


def cam_to_heat(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """Raw Grad-CAM ``(h,w)`` -> display heat ``(H,W)`` in ``[0,1]`` (see ``grad_cam_display``)."""
    return grad_cam_display(raw[None].float(), size)[0]


__all__ = [
    "AttributionMethod",
    "BatchScores",
    "Detector",
    "cam_to_heat",
    "pixel_map",
    "resolve_device",
]
