"""The one preprocessing definition, shared by training and inference.

Frames enter as ``uint8`` RGB tensors ``(B, 3, H, W)`` in ``[0, 255]`` and leave as normalised
``float32`` tensors ``(B, 3, S, S)`` ready for the detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize to ``input_size`` x ``input_size`` (bilinear, antialiased); normalise per channel."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W) uint8 [0,255]`` -> ``(B,3,S,S) float32`` normalised.

        Works on any device; the output is on the input's device.
        """
        if frames.dtype != torch.uint8:
            raise TypeError(f"expected uint8 frames, got {frames.dtype}")
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected (B,3,H,W) frames, got {tuple(frames.shape)}")
        x = frames.float().div_(255.0)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear",
                align_corners=False, antialias=True,
            ).clamp_(0.0, 1.0)
        return self.normalise(x)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W) float [0,1]`` -> normalised ``(B,3,H,W)``."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B,3,H,W)`` -> ``(B,3,H,W) float`` in ``[0, 1]`` (clamped)."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * std + mean).clamp(0.0, 1.0)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, stored in checkpoint metadata."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        mean = tuple(float(v) for v in data["mean"])  # type: ignore[union-attr]
        std = tuple(float(v) for v in data["std"])  # type: ignore[union-attr]
        return cls(input_size=int(data["input_size"]), mean=mean, std=std)  # type: ignore[arg-type]


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]
