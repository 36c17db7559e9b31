"""Overlays: the colormap against matplotlib's, the blend, JPEG output, on-demand rendering."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from model.checkpoint import LoadedModel
from tests.worker.conftest import HEIGHT, WIDTH, event_clip
from worker.decode import DecodeError
from worker.overlay import blend, colorize, overlay_jpeg, render_overlay


def read_jpeg(data: bytes) -> torch.Tensor:
    """JPEG bytes -> ``(3,H,W) uint8``, decoded by Pillow (an independent decoder)."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.mode == "RGB"
    return (
        torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        .view(image.height, image.width, 3)
        .permute(2, 0, 1)
    )


def test_colormap_matches_matplotlib_inferno() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    ramp = torch.linspace(0, 1, 256)
    ours = colorize(ramp[None, :])[:, 0, :].T  # (256, 3)
    reference = torch.tensor(
        matplotlib.colormaps["inferno"](ramp.numpy())[:, :3], dtype=torch.float32
    )
    assert (ours - reference).abs().max() * 255 < 5


def test_blend_weights_colour_by_heat() -> None:
    frame = torch.full((3, 8, 8), 128, dtype=torch.uint8)
    heat = torch.zeros(8, 8)
    heat[:, 4:] = 1.0
    out = blend(frame, heat)
    assert out.shape == frame.shape and out.dtype == torch.uint8
    cold, hot = out[:, 0, 0].float(), out[:, 0, 7].float()
    assert (cold - 128).abs().max() < 25  # low heat keeps the picture
    assert hot[0] > 200 and hot[1] > 170 and hot[2] < 160  # inferno's top end: pale yellow
    with pytest.raises(ValueError, match="does not match"):
        blend(frame, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="uint8"):
        blend(frame.float(), heat)


def test_overlay_jpeg_round_trips() -> None:
    # smooth content: JPEG (with chroma subsampling) is meant for pictures, not noise
    ramp = torch.linspace(0, 1, 60)[None, :] * torch.linspace(0.2, 1, 40)[:, None]
    frame = (torch.stack([ramp, ramp.flip(1), 1 - ramp]) * 255).to(torch.uint8)
    heat = ramp.flip(0)
    jpeg = overlay_jpeg(frame, heat, quality=95)
    assert jpeg[:2] == b"\xff\xd8"
    decoded = read_jpeg(jpeg)
    assert decoded.shape == (3, 40, 60)
    assert (decoded.float() - blend(frame, heat).float()).abs().mean() < 6


@pytest.mark.parametrize("method", ["gradcam", "guided_backprop", "integrated_gradients"])
def test_render_overlay_any_time_and_method(
    tiny_loaded: LoadedModel, tmp_path: Path, method: str
) -> None:
    clip = event_clip(tmp_path / "c.mp4", {"blue_square": [(1.0, 2.0)]}, 3.0)
    jpeg = render_overlay(clip, 1.3, method, tiny_loaded, "blue_square", ig_steps=8)  # type: ignore[arg-type]
    image = read_jpeg(jpeg)
    assert image.shape == (3, HEIGHT, WIDTH)


def test_render_overlay_errors(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    clip = event_clip(tmp_path / "c.mp4", {}, 1.0)
    with pytest.raises(ValueError, match="unknown label"):
        render_overlay(clip, 0.0, "gradcam", tiny_loaded, "cat")
    with pytest.raises(ValueError, match="no frame"):
        render_overlay(clip, 5.0, "gradcam", tiny_loaded, "red_square")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError):
        render_overlay(empty, 0.0, "gradcam", tiny_loaded, "red_square")
