"""Batched inference against plain oracles (forward pass, model.attention), on the tiny detector."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.attention import grad_cam
from model.checkpoint import LoadedModel, load_checkpoint
from tests.worker.conftest import HEIGHT, WIDTH, event_clip
from worker.decode import DecodeOptions, decode_frames
from worker.infer import Detector, pixel_map, resolve_device

EVENTS = {"red_square": [(0.0, 1.0), (2.0, 3.0)], "blue_square": [(1.0, 3.0)]}


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[torch.Tensor]:
    """Frames at 0, 0.5, ... 3.5 s: red, red, blue, blue, both, both, none, none."""
    clip = event_clip(tmp_path_factory.mktemp("infer") / "c.mp4", EVENTS, 4.0)
    return [s.frame for s in decode_frames(clip, DecodeOptions(fps=2.0))]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_scores_equal_a_plain_forward_and_cams_follow_thresholds(
    tiny_loaded: LoadedModel, frames: list[torch.Tensor]
) -> None:
    detector = Detector(tiny_loaded)
    out = detector.score(frames)
    x = tiny_loaded.meta.preprocessing(torch.stack(frames))
    with torch.no_grad():
        expected = torch.sigmoid(tiny_loaded.model(x))
    assert out.scores.shape == (8, 2) and out.cams.shape[:2] == (8, 2)
    torch.testing.assert_close(out.scores, expected, atol=1e-5, rtol=1e-4)
    selected = out.scores >= 0.5
    assert selected.any() and not selected.all()
    assert (out.cams.flatten(2).abs().sum(-1) > 0).eq(selected).all()
    for c in range(2):
        rows = selected[:, c].nonzero().flatten()
        oracle = grad_cam(tiny_loaded.model, detector.layer, x[rows], torch.full_like(rows, c))
        torch.testing.assert_close(out.cams[rows, c], oracle, atol=1e-4, rtol=1e-3)


def test_trained_detector_tells_the_labels_apart(
    tiny_loaded: LoadedModel, frames: list[torch.Tensor]
) -> None:
    truth = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [1, 1], [0, 0], [0, 0]]).bool()
    scores = Detector(tiny_loaded).score(frames).scores
    assert ((scores >= 0.5) == truth).all(), scores


def test_consistency_and_attributions_leave_the_model_unchanged(
    tiny_loaded: LoadedModel, frames: list[torch.Tensor]
) -> None:
    detector = Detector(tiny_loaded)
    before = _state(tiny_loaded.model)
    agreement = detector.consistency(frames[:3], [0, 1, 1])
    assert agreement.shape == (3,) and ((agreement >= -1) & (agreement <= 1)).all()
    both = frames[4]  # red and blue squares
    for method in ("gradcam", "guided_backprop", "integrated_gradients"):
        heat = detector.attribution(both, 0, method, ig_steps=8)
        assert heat.shape == (HEIGHT, WIDTH) and heat.min() >= 0 and heat.max() <= 1
    # Integrated Gradients of each label lights up that label's square more than the other's.
    red_map = detector.attribution(both, 0, "integrated_gradients", ig_steps=16)
    blue_map = detector.attribution(both, 1, "integrated_gradients", ig_steps=16)
    red, blue = (slice(20, 52), slice(10, 42)), (slice(44, 76), slice(80, 112))
    assert red_map[red].mean() > red_map[blue].mean()
    assert blue_map[blue].mean() > blue_map[red].mean()
    assert not tiny_loaded.model.training
    for name, value in _state(tiny_loaded.model).items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(ValueError, match="unknown attribution"):
        detector.attribution(both, 0, "lime")  # type: ignore[arg-type]


def test_frames_of_different_sizes_are_batched(
    tiny_loaded: LoadedModel, frames: list[torch.Tensor]
) -> None:
    detector = Detector(tiny_loaded)
    small = torch.nn.functional.interpolate(frames[0][None].float(), size=(48, 64))[0]
    mixed = detector.score([frames[0], small.round().to(torch.uint8)]).scores
    assert mixed.shape == (2, 2)
    assert mixed[0].tolist() == pytest.approx(
        detector.score([frames[0]]).scores[0].tolist(), abs=1e-5
    )


def test_pixel_map_normalises_to_unit_range() -> None:
    grads = torch.zeros(1, 3, 32, 32)
    grads[0, :, 10, 10] = -5.0
    heat = pixel_map(grads, (64, 64))
    assert heat.shape == (1, 64, 64) and heat.max() == pytest.approx(1.0) and heat.min() == 0.0
    assert heat[0, 20, 20] > heat[0, 50, 50]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
def test_gpu_mixed_precision_matches_cpu(tiny_checkpoint: Path, frames: list[torch.Tensor]) -> None:
    cpu = Detector(load_checkpoint(tiny_checkpoint)).score(frames)
    gpu = Detector(load_checkpoint(tiny_checkpoint, device="cuda")).score(frames)
    assert gpu.scores.device.type == "cpu"
    torch.testing.assert_close(gpu.scores, cpu.scores, atol=2e-2, rtol=0)
    assert ((gpu.scores >= 0.5) == (cpu.scores >= 0.5)).all()
