"""FrameSet: validation, save/load without pickle, frame folders, the generated set."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from model.data import FrameSet, FrameSetError, generated_frameset, load_frame_folder


def test_generated_set_is_deterministic_and_boxes_fit_the_shapes() -> None:
    a = generated_frameset(24, size=64, seed=4)
    b = generated_frameset(24, size=64, seed=4)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.frames, generated_frameset(24, size=64, seed=5).frames)
    assert a.frames.shape == (24, 3, 64, 64) and a.frames.dtype == torch.uint8
    assert a.classes == ("circle", "square", "triangle")
    present = a.targets > 0.5
    # a box exactly where a class is present
    assert torch.equal(~torch.isnan(a.boxes[..., 0]), present)
    boxes = a.boxes[present]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes.max() <= 64
    # the class colour dominates inside its box: red channel high for circles (palette 0)
    i = int(torch.nonzero(present[:, 0])[0])
    x0, y0, x1, y1 = (int(v) for v in a.boxes[i, 0])
    patch = a.frames[i, :, y0:y1, x0:x1].float().mean(dim=(1, 2))
    assert patch[0] > patch[1] + 40 and patch[0] > patch[2] + 40


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    data = generated_frameset(8, seed=1)
    path = data.save(tmp_path / "set.safetensors")
    back = FrameSet.load(path)
    assert back.classes == data.classes
    assert torch.equal(back.frames, data.frames) and torch.equal(back.targets, data.targets)
    assert torch.equal(torch.nan_to_num(back.boxes, -1), torch.nan_to_num(data.boxes, -1))
    no_boxes = FrameSet(data.frames, data.targets, data.classes)
    assert FrameSet.load(no_boxes.save(tmp_path / "nb.safetensors")).boxes is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_load_rejects_pickles_and_foreign_files(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[Path]]:
            return (Path.touch, (marker,))

    torch.save({"frames": Evil()}, tmp_path / "evil.safetensors")
    with pytest.raises(FrameSetError, match="not a safetensors"):
        FrameSet.load(tmp_path / "evil.safetensors")
    assert not marker.exists()
    from safetensors.torch import save_file

    save_file({"frames": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(FrameSetError, match="not a Vigil FrameSet"):
        FrameSet.load(tmp_path / "other.safetensors")


def test_shapes_are_validated() -> None:
    frames = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(FrameSetError, match="uint8"):
        FrameSet(frames.float(), torch.zeros(2, 1), ("a",))
    with pytest.raises(FrameSetError, match="targets"):
        FrameSet(frames, torch.zeros(2, 2), ("a",))
    with pytest.raises(FrameSetError, match="unique"):
        FrameSet(frames, torch.zeros(2, 2), ("a", "a"))
    with pytest.raises(FrameSetError, match="boxes"):
        FrameSet(frames, torch.zeros(2, 1), ("a",), torch.zeros(2, 4))


def test_subset_split_concat_unlabeled() -> None:
    data = generated_frameset(10, seed=2)
    first, rest = data.split(3, seed=0)
    assert len(first) == 3 and len(rest) == 7
    joined = FrameSet.concat([first, rest])
    assert sorted(joined.frames.flatten(1).sum(1).tolist()) == sorted(
        data.frames.flatten(1).sum(1).tolist()
    )
    assert torch.equal(data.subset([1, 4]).frames, data.frames[[1, 4]])
    pool = data.unlabeled()
    assert pool.targets.sum() == 0 and pool.boxes is None and torch.equal(pool.frames, data.frames)
    with pytest.raises(FrameSetError):
        FrameSet.concat([data, FrameSet(data.frames, data.targets[:, :2], ("x", "y"))])


def _write_split(folder: Path, sizes: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        Image.new("RGB", (w, h), (10 * (i + 1),) * 3).save(folder / f"f{i}.png")


def test_frame_folder_with_labels_classes_and_boxes(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("fall\nbed_exit\n")
    split = tmp_path / "train"
    _write_split(split, [(20, 40)] * 3)
    (split / "labels.csv").write_text("file,labels\nf0.png,fall\nf2.png,fall;bed_exit\nf1.png,\n")
    (split / "boxes.csv").write_text("file,label,x0,y0,x1,y1\nf2.png,bed_exit,4,2,20,10\n")
    data = load_frame_folder(split)
    assert data.classes == ("fall", "bed_exit")
    torch.testing.assert_close(data.targets, torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    assert data.frames[1, 0, 0, 0] == 30  # f2.png is the second row (labels.csv order)
    torch.testing.assert_close(data.boxes[1, 1], torch.tensor([4.0, 2.0, 20.0, 10.0]))
    assert math.isnan(float(data.boxes[0, 0, 0]))
    # resized: frames and boxes scale together
    small = load_frame_folder(split, size=10)
    assert small.frames.shape == (3, 3, 10, 10)
    torch.testing.assert_close(small.boxes[1, 1], torch.tensor([1.0, 1.0, 5.0, 5.0]))


def test_frame_folder_errors_and_unlabeled_folders(tmp_path: Path) -> None:
    split = tmp_path / "unlabeled"
    _write_split(split, [(16, 16), (16, 24)])
    with pytest.raises(FrameSetError, match="differ in size"):
        load_frame_folder(split, classes=["a"])
    pool = load_frame_folder(split, classes=["a"], size=16)
    assert len(pool) == 2 and pool.targets.sum() == 0
    (split / "labels.csv").write_text("file,labels\nf0.png,zebra\n")
    with pytest.raises(FrameSetError, match="unknown label"):
        load_frame_folder(split, classes=["a"], size=16)
    (split / "labels.csv").write_text("name,label\nf0.png,a\n")
    with pytest.raises(FrameSetError, match="header"):
        load_frame_folder(split, classes=["a"])
