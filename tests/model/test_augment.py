"""Camera-shift augmentation: shapes, per-frame draws, determinism, and each transform's effect."""

from __future__ import annotations

import pytest
import torch

from model.augment import AugmentConfig, augment_batch, augment_frame, random_crop_box

OFF = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=0, brightness=0,
                    contrast=0, saturation=0, night=0, grayscale=0, blur=0, low_resolution=0,
                    jpeg=0)


def _frames(n: int = 4, h: int = 48, w: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def test_batch_shape_dtype_and_independent_draws() -> None:
    frames = _frames().expand(4, 3, 48, 64).clone()
    frames[:] = frames[0]
    out = augment_batch(frames, 32, AugmentConfig(), torch.Generator().manual_seed(1))
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.uint8
    # the same input frame four times: each gets its own draw
    assert len({bytes(o.numpy().tobytes()) for o in out}) == 4


def test_same_seed_same_result_and_rejects_bad_input() -> None:
    frames = _frames()
    a = augment_batch(frames, 32, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment_batch(frames, 32, AugmentConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(frames.float(), 32, AugmentConfig(), torch.Generator())


def test_everything_off_is_a_plain_resize_and_flip_mirrors() -> None:
    frame = _frames(1, 32, 32)[0]
    same = augment_frame(frame, 32, OFF, torch.Generator().manual_seed(0))
    assert torch.equal(same, frame)
    flipped = augment_frame(frame, 32, OFF.model_copy(update={"flip": 1.0}), torch.Generator())
    assert torch.equal(flipped, frame.flip(-1))


def test_night_is_gray_and_darker_and_jpeg_changes_pixels() -> None:
    frame = _frames(1, 32, 32)[0]
    night = augment_frame(frame, 32, OFF.model_copy(update={"night": 1.0}),
                          torch.Generator().manual_seed(0)).float()
    assert (night[0] - night[1]).abs().max() == 0 and (night[1] - night[2]).abs().max() == 0
    assert night.mean() < frame.float().mean() * 0.8
    jpeg = augment_frame(frame, 32, OFF.model_copy(update={"jpeg": 1.0}),
                         torch.Generator().manual_seed(0))
    assert not torch.equal(jpeg, frame)
    low = augment_frame(frame, 32, OFF.model_copy(update={"low_resolution": 1.0}),
                        torch.Generator().manual_seed(0)).float()
    assert low.diff(dim=-1).abs().mean() < frame.float().diff(dim=-1).abs().mean()


def test_crop_box_stays_inside_with_the_asked_area() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_crop_box(120, 120, (0.5, 0.8), (0.75, 1.333), g)
        assert top >= 0 and left >= 0 and top + h <= 120 and left + w <= 120
        assert 0.45 * 120 * 120 <= h * w <= 0.85 * 120 * 120
    # a frame too wide for the ratios: the whole frame
    assert random_crop_box(10, 200, (0.9, 1.0), (0.9, 1.1), g) == (0, 0, 10, 200)
