"""Training augmentation for camera shift: each frame of a batch gets its own random draw.

Hospital cameras differ from the training footage in placement, lens, light, resolution and
compression, so a labeled frame is shown to the detector through a random "other camera":

- crop and scale (a random box covering ``crop_scale`` of the frame, aspect in ``crop_ratio``),
  resized to the model's input; horizontal flip;
- colour: brightness, contrast and saturation jitter;
- grayscale / night: grayscale, darkened, with sensor noise (infrared cameras at night);
- blur (Gaussian), low resolution (down- then up-sampled), JPEG re-compression.

Labels are per frame (presence, falling, ...), and every transform keeps them: crops keep at least
``crop_scale[0]`` of the frame, so a person is rarely cut out (the lower bound is a trade-off the
caller sets). Tensors: ``(B,3,H,W) uint8 -> (B,3,S,S) uint8``.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from torchvision.transforms.v2 import functional as TF


class AugmentConfig(BaseModel):
    """Probabilities and ranges of :func:`augment_batch` (a ``TrainConfig`` field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_scale: tuple[float, float] = (0.55, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.333)
    flip: float = Field(default=0.5, ge=0, le=1)
    brightness: float = Field(default=0.35, ge=0, le=1)
    contrast: float = Field(default=0.35, ge=0, le=1)
    saturation: float = Field(default=0.4, ge=0, le=1)
    night: float = Field(default=0.15, ge=0, le=1, description="grayscale + dark + noise")
    grayscale: float = Field(default=0.1, ge=0, le=1)
    blur: float = Field(default=0.2, ge=0, le=1)
    low_resolution: float = Field(default=0.2, ge=0, le=1)
    jpeg: float = Field(default=0.25, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (20, 70)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _happens(gen: torch.Generator, p: float) -> bool:
    return p > 0 and float(torch.rand((), generator=gen)) < p


def random_crop_box(height: int, width: int, scale: tuple[float, float],
                    ratio: tuple[float, float], gen: torch.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a box with area in ``scale`` x the frame, aspect in ``ratio``
    (log-uniform), inside the frame; the whole frame when ten draws do not fit (a frame much
    wider or taller than ``ratio`` allows)."""
    area = height * width
    for _ in range(10):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, math.log(ratio[0]), math.log(ratio[1])))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    return 0, 0, height, width


def augment_frame(frame: Tensor, size: int, config: AugmentConfig,
                  gen: torch.Generator) -> Tensor:
    """One ``(3,H,W) uint8`` frame -> ``(3,size,size) uint8`` through a random "other camera"."""
    top, left, h, w = random_crop_box(frame.shape[-2], frame.shape[-1], config.crop_scale,
                                      config.crop_ratio, gen)
    x = frame[:, top:top + h, left:left + w].float()[None] / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)[0].clamp(0, 1)
    if _happens(gen, config.flip):
        x = x.flip(-1)
    x = TF.adjust_brightness(x, _uniform(gen, 1 - config.brightness, 1 + config.brightness))
    x = TF.adjust_contrast(x, _uniform(gen, 1 - config.contrast, 1 + config.contrast))
    x = TF.adjust_saturation(x, _uniform(gen, 1 - config.saturation, 1 + config.saturation))
    if _happens(gen, config.night):
        x = TF.rgb_to_grayscale(x, num_output_channels=3) * _uniform(gen, 0.3, 0.7)
        noise = torch.randn(x.shape[-2:], generator=gen) * _uniform(gen, 0.01, 0.05)
        x = (x + noise).clamp(0, 1)
    elif _happens(gen, config.grayscale):
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if _happens(gen, config.blur):
        sigma = _uniform(gen, 0.5, 2.0)
        x = TF.gaussian_blur(x, kernel_size=2 * math.ceil(2 * sigma) + 1, sigma=sigma)
    if _happens(gen, config.low_resolution):
        small = max(16, round(size * _uniform(gen, 0.25, 0.6)))
        x = F.interpolate(x[None], size=(small, small), mode="bilinear", antialias=True,
                          align_corners=False)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]
    out = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    if _happens(gen, config.jpeg):
        quality = int(torch.randint(config.jpeg_quality[0], config.jpeg_quality[1] + 1, (),
                                    generator=gen))
        out = jpeg_roundtrip(out, quality)
    return out


def jpeg_roundtrip(frame: Tensor, quality: int) -> Tensor:
    """``(3,H,W) uint8`` compressed as JPEG at ``quality`` and decoded again (Pillow)."""
    buffer = io.BytesIO()
    Image.fromarray(frame.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1)


def augment_batch(frames: Tensor, size: int, config: AugmentConfig,
                  gen: torch.Generator) -> Tensor:
    """``(B,3,H,W) uint8 -> (B,3,size,size) uint8``, an independent draw per frame."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W) uint8 frames, got {tuple(frames.shape)}")
    return torch.stack([augment_frame(f, size, config, gen) for f in frames])


__all__ = ["AugmentConfig", "augment_batch", "augment_frame", "random_crop_box"]
