"""Heat-map overlays: a perceptual colormap blended on the frame, encoded as JPEG.

The colormap is matplotlib's *inferno* (perceptually uniform, readable in greyscale), stored as
33 anchors and interpolated linearly (within 5/255 of matplotlib's 256-entry table), so no
plotting library is needed at run time. The blend's opacity grows with the heat, so that
unattended regions keep the original picture.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import encode_jpeg

from model.checkpoint import LoadedModel
from worker.decode import VideoLimits, read_frame_at
from worker.infer import AttributionMethod, Detector

# matplotlib "inferno" sampled at 33 evenly spaced points (RGB in [0, 1]).
_INFERNO = (
    (0.0015, 0.0005, 0.0139),
    (0.0140, 0.0112, 0.0719),
    (0.0423, 0.0281, 0.1411),
    (0.0820, 0.0433, 0.2153),
    (0.1293, 0.0473, 0.2908),
    (0.1834, 0.0403, 0.3550),
    (0.2383, 0.0366, 0.3964),
    (0.2908, 0.0456, 0.4186),
    (0.3415, 0.0623, 0.4294),
    (0.3915, 0.0809, 0.4331),
    (0.4412, 0.0993, 0.4316),
    (0.4910, 0.1172, 0.4256),
    (0.5409, 0.1347, 0.4151),
    (0.5907, 0.1526, 0.4003),
    (0.6401, 0.1714, 0.3811),
    (0.6887, 0.1922, 0.3576),
    (0.7357, 0.2159, 0.3302),
    (0.7805, 0.2433, 0.2995),
    (0.8224, 0.2752, 0.2661),
    (0.8605, 0.3119, 0.2306),
    (0.8943, 0.3534, 0.1936),
    (0.9232, 0.3994, 0.1552),
    (0.9470, 0.4492, 0.1153),
    (0.9654, 0.5022, 0.0739),
    (0.9784, 0.5579, 0.0349),
    (0.9860, 0.6158, 0.0256),
    (0.9879, 0.6753, 0.0653),
    (0.9841, 0.7361, 0.1295),
    (0.9746, 0.7977, 0.2063),
    (0.9606, 0.8591, 0.2980),
    (0.9476, 0.9174, 0.4107),
    (0.9545, 0.9659, 0.5404),
    (0.9884, 0.9984, 0.6449),
)


@lru_cache(maxsize=1)
def _anchors() -> Tensor:
    return torch.tensor(_INFERNO, dtype=torch.float32)


def colorize(heat: Tensor) -> Tensor:
    """``(H,W) float`` in ``[0,1]`` -> ``(3,H,W) float32`` inferno colours in ``[0,1]``."""
    anchors = _anchors().to(heat.device)
    pos = heat.float().clamp(0.0, 1.0) * (len(anchors) - 1)
    low = pos.floor().long().clamp(max=len(anchors) - 2)
    frac = (pos - low).unsqueeze(-1)
    rgb = anchors[low] * (1.0 - frac) + anchors[low + 1] * frac  # (H,W,3)
    return rgb.permute(2, 0, 1)


def blend(
    frame: Tensor, heat: Tensor, *, alpha_min: float = 0.15, alpha_max: float = 0.65
) -> Tensor:
    """Blend the coloured ``heat`` onto ``frame``.

    ``(3,H,W) uint8`` and ``(H,W)`` in ``[0,1]`` -> ``(3,H,W) uint8``; the opacity at a pixel is
    ``alpha_min + (alpha_max - alpha_min) * heat``.
    """
    if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[0] != 3:
        raise ValueError(f"expected a (3,H,W) uint8 frame, got {tuple(frame.shape)} {frame.dtype}")
    if tuple(heat.shape) != tuple(frame.shape[-2:]):
        raise ValueError(f"heat {tuple(heat.shape)} does not match frame {tuple(frame.shape[-2:])}")
    heat = heat.float().clamp(0.0, 1.0)
    alpha = (alpha_min + (alpha_max - alpha_min) * heat).unsqueeze(0)
    out = frame.float() / 255.0 * (1.0 - alpha) + colorize(heat) * alpha
    return (out * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def overlay_jpeg(frame: Tensor, heat: Tensor, *, quality: int = 85) -> bytes:
    """``(3,H,W) uint8`` frame and ``(H,W)`` heat -> JPEG bytes of the blend."""
    image = blend(frame.cpu(), heat.cpu())
    with warnings.catch_warnings():
        # torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec, which is
        # not a dependency here; the encoder itself is unchanged (issue 4 asks for torchvision.io).
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding", category=DeprecationWarning
        )
        data = encode_jpeg(image, quality=quality)
    return data.numpy().tobytes()


def render_overlay(
    video_path: str | Path,
    time_s: float,
    method: AttributionMethod,
    loaded: LoadedModel,
    label: str,
    *,
    max_side: int | None = 640,
    quality: int = 85,
    limits: VideoLimits | None = None,
    ig_steps: int = 32,
) -> bytes:
    """The overlay of ``method`` for ``label`` on the frame at ``time_s`` (seconds from the
    stream start; the first frame at or after it), as JPEG bytes.

    Raises:
        DecodeError: the video cannot be opened or decoded.
        ValueError: ``label`` is not one of the model's classes, or ``time_s`` is past the end.
    """
    if label not in loaded.meta.classes:
        raise ValueError(f"unknown label {label!r}; the model knows {loaded.meta.classes}")
    sample = read_frame_at(video_path, time_s, max_side=max_side, limits=limits)
    detector = Detector(loaded)
    heat = detector.attribution(
        sample.frame, loaded.meta.classes.index(label), method, ig_steps=ig_steps
    )
    return overlay_jpeg(sample.frame, heat, quality=quality)


__all__ = ["blend", "colorize", "overlay_jpeg", "render_overlay"]
