"""Datasets from video: interval labels to frame targets, clip-wise splits, k-shot sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lab.datasets import (
    Interval,
    k_shot,
    load_clip_frames,
    read_boxes,
    read_intervals,
    split_clips,
    split_groups,
    synth_room,
    targets_at,
    upfall_trial,
)
from lab.synth.writer import SynthConfig, write_dataset
from tests.support.clips import square_event_frames, write_clip

CLASSES = ("person_present", "fallen")


def test_read_intervals_ignores_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "clip,label,start_s,end_s,note\n"
        'upfall-s1/A1_S1_T1_Cam1.mp4,fallen,3.278,7.889,"lying, on the mattress"\n'
    )
    assert read_intervals(path) == [Interval("upfall-s1/A1_S1_T1_Cam1.mp4", "fallen", 3.278, 7.889)]
    (tmp_path / "bad.csv").write_text("clip,label,start_s\n")
    with pytest.raises(ValueError, match="end_s"):
        read_intervals(tmp_path / "bad.csv")


def test_targets_are_half_open_intervals() -> None:
    ivs = [Interval("a", "fallen", 1.0, 2.0), Interval("a", "other", 0.0, 9.0)]
    t = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    assert targets_at(ivs, t, CLASSES)[:, 1].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert targets_at(ivs, t, CLASSES)[:, 0].sum() == 0


def test_load_clip_frames_labels_decoded_frames(tmp_path: Path) -> None:
    # A bright square is drawn during [1, 2) s; that interval is the "fallen" label.
    write_clip(tmp_path / "v/a.mp4", 3.0, fps=10, frame_fn=square_event_frames([(1.0, 2.0)]))
    write_clip(tmp_path / "v/b.mp4", 2.0, fps=10)
    ivs = [Interval("v/a.mp4", "fallen", 1.0, 2.0), Interval("v/b.mp4", "person_present", 0, 2)]
    data = load_clip_frames(
        tmp_path,
        ivs,
        ["v/a.mp4", "v/b.mp4"],
        CLASSES,
        fps=2.0,
        size=32,
        cache_dir=tmp_path / "cache",
    )
    assert tuple(data.frames.frames.shape) == (10, 3, 32, 32)
    assert data.clips == ("v/a.mp4",) * 6 + ("v/b.mp4",) * 4
    fallen = data.frames.targets[:6, 1].bool()
    assert fallen.tolist() == [False, False, True, True, False, False]
    red = data.frames.frames[:6, 0].float().amax(dim=(1, 2))
    assert bool((red[fallen] > 150).all()) and bool((red[~fallen] < 100).all())
    again = load_clip_frames(
        tmp_path, ivs, ["v/a.mp4"], CLASSES, fps=2.0, size=32, cache_dir=tmp_path / "cache"
    )
    assert torch.equal(again.frames.frames, data.frames.frames[:6])  # from the cache
    assert data.of_clips(["v/b.mp4"]).frames.targets[:, 0].sum() == 4


def test_synthetic_boxes_load_scaled(tmp_path: Path) -> None:
    cfg = SynthConfig(rooms=1, clips_per_room=1, duration_s=3.0, width=160, height=120, seed=2)
    root = write_dataset(cfg, tmp_path / "s")
    data = load_clip_frames(
        root,
        read_intervals(root / "labels.csv"),
        ["clips/r000_c000.mp4"],
        CLASSES,
        fps=2.0,
        size=80,
        boxes=read_boxes(root / "boxes.csv"),
    )
    boxes, targets = data.frames.boxes, data.frames.targets
    assert boxes is not None
    has_box = ~torch.isnan(boxes[..., 0])
    assert torch.equal(has_box, targets > 0.5)  # a box exactly where the label holds
    if has_box.any():
        b = boxes[has_box]
        assert bool((b[:, 2] <= 80).all() and (b[:, 3] <= 80).all() and (b[:, :2] >= 0).all())


def _fake_clip_frames(tmp_path: Path) -> object:
    for name in ("r000_c000", "r000_c001", "r001_c000", "r002_c000"):
        write_clip(tmp_path / f"clips/{name}.mp4", 4.0, fps=10)
    ivs = [
        Interval("clips/r000_c000.mp4", "fallen", 0.0, 2.0),
        Interval("clips/r001_c000.mp4", "person_present", 0.0, 4.0),
        Interval("clips/r002_c000.mp4", "person_present", 1.0, 2.0),
        Interval("clips/r002_c000.mp4", "fallen", 1.0, 4.0),
    ]
    clips = [f"clips/{n}.mp4" for n in ("r000_c000", "r000_c001", "r001_c000", "r002_c000")]
    return load_clip_frames(tmp_path, ivs, clips, CLASSES, fps=4.0, size=16)


def test_splits_never_share_a_clip_or_group(tmp_path: Path) -> None:
    data = _fake_clip_frames(tmp_path)
    names = data.clip_names
    train, test = split_groups(names, synth_room, held_out=["r000"])
    assert set(test) == {"clips/r000_c000.mp4", "clips/r000_c001.mp4"} and not set(train) & set(
        test
    )
    a, b = split_clips(names, 1, seed=3)
    assert len(a) == 1 and sorted(a + b) == sorted(names)
    assert not set(data.of_clips(a).clips) & set(data.of_clips(b).clips)
    assert upfall_trial("upfall-s1/A3_S1_T2_Cam1.mp4") == "T2"


def test_k_shot_has_k_frames_per_class_and_negatives(tmp_path: Path) -> None:
    data = _fake_clip_frames(tmp_path)
    for k in (1, 3):
        chosen = k_shot(data, k, seed=k)
        targets = data.frames.targets[chosen]
        assert bool((targets.sum(0) >= k).all())
        assert int((targets.sum(1) == 0).sum()) == k
        assert len(chosen) == len(set(chosen)) <= 3 * k
    assert k_shot(data, 2, seed=1) == k_shot(data, 2, seed=1)
