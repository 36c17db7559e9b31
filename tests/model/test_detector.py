"""Detector builders: architectures, head, reflect padding, weights from local files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision import models

from model.detector import (
    ARCHITECTURES,
    WeightsError,
    build_detector,
    gradcam_layer,
    use_reflect_padding,
)


@pytest.mark.parametrize(
    ("arch", "block", "features"),
    [("resnet18", models.resnet.BasicBlock, 512), ("resnet34", models.resnet.BasicBlock, 512),
     ("resnet50", models.resnet.Bottleneck, 2048)],
)
def test_builders_give_a_multilabel_head(arch: str, block: type, features: int) -> None:
    torch.manual_seed(0)
    model = build_detector(arch, 5)  # type: ignore[arg-type]
    assert isinstance(model, models.ResNet)
    assert model.fc.in_features == features and model.fc.out_features == 5
    layer = gradcam_layer(model)
    assert isinstance(layer, block) and layer is model.layer4[-1]
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)


def test_unknown_architecture_and_bad_class_count_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_detector("resnet101", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        build_detector("resnet18", 0)
    assert set(ARCHITECTURES) == {
        "resnet18", "resnet34", "resnet50",
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
    }


def test_gradcam_layer_rejects_non_resnets() -> None:
    with pytest.raises(TypeError):
        gradcam_layer(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_reflect_padding_changes_padded_convs_only() -> None:
    model = build_detector("resnet18", 2, reflect_padding=True)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            padded = module.padding != (0, 0)
            assert (module.padding_mode == "reflect") == padded
    plain = build_detector("resnet18", 2)
    assert all(m.padding_mode == "zeros" for m in plain.modules() if isinstance(m, nn.Conv2d))
    # Same weights, different padding => different outputs (the border is treated differently).
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model.eval()(x), plain.eval()(x))


def test_use_reflect_padding_matches_explicit_reflect_pad() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1)
    reference = nn.Conv2d(3, 4, 3, padding=0)
    reference.load_state_dict(conv.state_dict())
    wrapper = nn.Sequential(conv)
    use_reflect_padding(wrapper)
    x = torch.randn(1, 3, 9, 9)
    expected = reference(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))
    torch.testing.assert_close(wrapper(x), expected)


def _reference_backbone(arch: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return getattr(models, arch)(weights=None).state_dict()  # 1000-class head


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_local_file(tmp_path: Path, suffix: str) -> None:
    state = _reference_backbone("resnet18")
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = build_detector("resnet18", 3, weights=path)
    loaded = model.state_dict()
    for name, tensor in state.items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], tensor), name
    assert loaded["fc.weight"].shape == (3, 512)  # the 1000-class head is not forced in


def test_same_shape_head_is_loaded_and_module_prefix_is_stripped(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = build_detector("resnet18", 4)
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = build_detector("resnet18", 4, weights=path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_weights_that_do_not_fit_or_do_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(_reference_backbone("resnet50"), path)
    with pytest.raises(WeightsError, match="do not fit"):
        build_detector("resnet18", 2, weights=path)
    with pytest.raises(WeightsError, match="not found"):
        build_detector("resnet18", 2, weights=tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="unknown torchvision weights"):
        build_detector("resnet18", 2, weights="NOT_A_WEIGHTS_NAME")


def test_pth_loading_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled!",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Evil()}, path)
    with pytest.raises(Exception, match=r"Weights only load failed|Unsupported"):
        build_detector("resnet18", 2, weights=path)
