"""Frame sets from real-data layouts, on generated clips and images: dense sampling around
falls, YOLO person targets and boxes, empty-room medians, oversampling, the recipe's splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab.datasets import Interval
from lab.real_recipe import split_clips, user_sets
from lab.realdata import median_backgrounds, oversample, sample_labeled_clips, yolo_person_frameset
from tests.support.clips import square_event_frames, write_clip

CLASSES = ("person_present", "multiple_people", "falling", "fallen")


def test_frames_are_dense_around_short_events_and_sparse_elsewhere(tmp_path: Path) -> None:
    write_clip(tmp_path / "a.mp4", 6.0, fps=10, frame_fn=square_event_frames([(3.0, 3.5)]))
    labels = [Interval("a.mp4", "person_present", 0.0, 6.0),
              Interval("a.mp4", "falling", 3.0, 3.5), Interval("a.mp4", "fallen", 3.5, 6.0)]
    data = sample_labeled_clips(tmp_path, labels, ["a.mp4"], CLASSES, size=32, fps=1.0,
                                dense_fps=10.0, dense_margin_s=0.2)
    t = data.t_s.tolist()
    inside = [x for x in t if 2.8 - 1e-6 <= x < 3.7]
    outside = [x for x in t if x < 2.8 - 1e-6 or x >= 3.7]
    assert len(inside) >= 8  # every frame near the fall
    assert len(outside) <= 6  # one a second elsewhere
    targets = data.frames.targets
    falling = targets[:, CLASSES.index("falling")] > 0
    assert {round(x, 1) for x, f in zip(t, falling.tolist(), strict=True) if f} == {
        3.0, 3.1, 3.2, 3.3, 3.4}
    assert data.frames.frames.shape[1:] == (3, 32, 32)


def _yolo(root: Path) -> None:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "names.txt").write_text("person\ncat\n")
    rows = {"one.jpg": ["0 0.5 0.5 0.4 0.6"],
            "two.jpg": ["0 0.25 0.5 0.3 0.5", "0 0.75 0.5 0.3 0.5", "1 0.5 0.5 0.1 0.1"],
            "tiny.jpg": ["0 0.5 0.5 0.05 0.05"], "none.jpg": []}
    for name, lines in rows.items():
        Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(root / "images" / "train" / name)
        (root / "labels" / "train" / f"{Path(name).stem}.txt").write_text("\n".join(lines))


def test_yolo_person_targets_and_union_boxes(tmp_path: Path) -> None:
    _yolo(tmp_path)
    data, files = yolo_person_frameset(tmp_path, CLASSES, size=100, names_file="names.txt")
    by_name = dict(zip(files, range(len(files)), strict=True))
    t = data.targets
    assert t[by_name["one.jpg"]].tolist() == [1, 0, 0, 0]
    assert t[by_name["two.jpg"]].tolist() == [1, 1, 0, 0]
    assert t[by_name["tiny.jpg"]].tolist() == [0, 0, 0, 0]  # below min_area
    assert t[by_name["none.jpg"]].tolist() == [0, 0, 0, 0]
    box = data.boxes[by_name["two.jpg"], 0].tolist()
    assert box == pytest.approx([10.0, 25.0, 90.0, 75.0])  # union of both people
    assert torch.isnan(data.boxes[by_name["none.jpg"], 0]).all()


def test_median_of_a_moving_object_is_the_empty_room(tmp_path: Path) -> None:
    def moving(t: float) -> np.ndarray:
        frame = np.full((48, 64, 3), 60, np.uint8)
        x = int(t * 10) % 50
        frame[10:30, x:x + 12] = 250
        return frame

    write_clip(tmp_path / "walk.mp4", 5.0, fps=10, frame_fn=moving)
    rooms = median_backgrounds(tmp_path, ["walk.mp4"], CLASSES, size=32, fps=4.0)
    assert rooms.frames.shape == (1, 3, 32, 32) and rooms.targets.sum() == 0
    assert (rooms.frames.float() - 60).abs().max() < 20


def test_oversampling_repeats_rare_classes_up_to_the_cap() -> None:
    targets = torch.zeros(20, 2)
    targets[:16, 0] = 1  # common
    targets[16, 1] = 1  # rare
    index = oversample(targets, max_repeat=5)
    counts = torch.bincount(index, minlength=20)
    assert counts[16] == 5 and counts[0] == 1
    assert counts[17:].tolist() == [5, 5, 5]  # frames without labels: 3 of them, also rare


def test_recipe_splits_never_leak_a_held_out_group() -> None:
    upfall = [f"upfall-s1/A{a}_S1_T{t}_Cam{c}.mp4" for a in (1, 6) for t in (1, 2, 3)
              for c in (1, 2)]
    gmd = ["gmdcsa24/s1-fall-13.mp4", "gmdcsa24/s2-fall-12.mp4"]
    trial = split_clips(upfall, gmd, "trial")
    assert all("_T3_" in c or "/s2-" in c for c in trial["test"])
    assert not any("_T3_" in c or "/s2-" in c for c in trial["train"] + trial["val"])
    assert all("_T2_" in c for c in trial["val"])
    camera = split_clips(upfall, gmd, "camera")
    assert all("Cam2" in c for c in camera["test"] if c.startswith("upfall"))
    assert not any("Cam2" in c for c in camera["train"] + camera["val"])
    assert set(camera["train"]) & set(camera["val"]) == set()


def test_user_sets_hold_out_whole_clips(tmp_path: Path) -> None:
    rows = ["clip,label,start_s,end_s"]
    for i in range(5):
        write_clip(tmp_path / f"c{i}.mp4", 2.0, fps=5, frame_fn=square_event_frames([(1, 2)]))
        rows.append(f"c{i}.mp4,person_present,1.0,2.0")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    labeled, val, classes, lists = user_sets(
        tmp_path / "labels.csv", tmp_path, val_labels=None, images=[], val_fraction=0.2, seed=0,
        size=32, cache_dir=None)
    assert classes == ("person_present",)
    assert len(lists["val"]) == 1 and set(lists["val"]).isdisjoint(lists["train"])
    assert len(val) > 0 and labeled.frames.shape[1:] == (3, 32, 32)
    (tmp_path / "bad.csv").write_text("clip,label,start_s,end_s\nmissing.mp4,x,0,1\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        user_sets(tmp_path / "bad.csv", tmp_path, val_labels=None, images=[], val_fraction=0.2,
                  seed=0, size=32, cache_dir=None)


def test_balance_sources_repeats_small_sources_up_to_the_cap() -> None:
    from lab.real_recipe import balance_sources
    from model.data import FrameSet

    def part(n: int, value: int) -> FrameSet:
        return FrameSet(torch.full((n, 3, 4, 4), value, dtype=torch.uint8), torch.zeros(n, 1),
                        ("a",))

    out = balance_sources([part(100, 1), part(25, 2), part(2, 3)], max_repeat=8)
    values = out.frames[:, 0, 0, 0]
    assert int((values == 1).sum()) == 100 and int((values == 2).sum()) == 100
    assert int((values == 3).sum()) == 16  # capped at 8 repeats
