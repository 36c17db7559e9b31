"""The synthetic room generator: boxes match what is drawn, labels match boxes, MP4 decodes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cli.main import main as vigil
from lab.synth.render import frame_labels, label_boxes, random_clip, render_frame
from lab.synth.scenario import ScenarioConfig
from lab.synth.writer import SynthConfig, build_clip, clip_refs, intervals
from worker.decode import DecodeOptions, decode_frames


def _people_frames(n_clips: int = 6) -> list[tuple[object, int]]:
    """(clip, frame index) pairs where at least one person is in view."""
    found = []
    for seed in range(n_clips):
        clip = random_clip(
            room_seed=seed, clip_seed=1000 + seed, width=160, height=120, duration_s=12.0
        )
        for index in range(0, clip.n_frames, 17):
            if any(p.box is not None for p in render_frame(clip, index).people):
                found.append((clip, index))
    return found


def test_labeled_box_covers_the_drawn_figure() -> None:
    """Render each frame with and without each person: the pixels that change lie in their box."""
    checked = 0
    for clip, index in _people_frames():
        full = render_frame(clip, index)
        for person in full.people:
            if person.box is None:
                continue
            without = render_frame(clip, index, exclude=[person.actor])
            changed = np.any(full.image != without.image, axis=2)
            ys, xs = np.nonzero(changed)
            x0, y0, x1, y1 = person.box
            assert ys.size > 0, "a person with a box must put pixels in the frame"
            assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
            # The box is tight: the drawn pixels reach (nearly) every side of it, unless a
            # blanket or curtain hides that side.
            drawn = (xs.max() + 1 - xs.min()) * (ys.max() + 1 - ys.min())
            assert drawn >= 0.3 * (x1 - x0) * (y1 - y0)
            checked += 1
    assert checked >= 10


def test_rendering_is_deterministic_and_labels_follow_people() -> None:
    clip = random_clip(room_seed=3, clip_seed=7, width=160, height=120, duration_s=8.0)
    again = random_clip(room_seed=3, clip_seed=7, width=160, height=120, duration_s=8.0)
    for index in (0, 33, 79):
        a, b = render_frame(clip, index), render_frame(again, index)
        assert np.array_equal(a.image, b.image)
        present = [p for p in a.people if p.visible >= 0.5 and p.box is not None]
        labels = frame_labels(a.people)
        assert ("person_present" in labels) == (len(present) >= 1)
        assert ("multiple_people" in labels) == (len(present) >= 2)


def test_falls_are_labelled_falling_then_fallen() -> None:
    cfg = SynthConfig(
        rooms=3,
        clips_per_room=2,
        duration_s=15.0,
        width=160,
        height=120,
        scenario=ScenarioConfig(fall_prob=1.0),
    )
    seen_fall = 0
    for ref in clip_refs(cfg):
        clip = build_clip(cfg, ref)
        flags = {k: np.zeros(clip.n_frames, dtype=bool) for k in ("falling", "fallen")}
        for index in range(clip.n_frames):
            for label, _ in label_boxes(render_frame(clip, index).people, ("falling", "fallen")):
                flags[label][index] = True
        falling, fallen = intervals(flags["falling"], cfg.fps), intervals(flags["fallen"], cfg.fps)
        if falling and fallen:
            seen_fall += 1
            assert falling[0][1] == pytest.approx(fallen[0][0])  # lands exactly when the fall ends
            assert not flags["falling"][flags["fallen"]].any()
    assert seen_fall >= 4


def test_unknown_class_is_rejected() -> None:
    clip = random_clip(room_seed=0, clip_seed=0, width=160, height=120, duration_s=2.0)
    with pytest.raises(ValueError, match="unknown classes"):
        label_boxes(render_frame(clip, 0).people, ("person_present", "dancing"))


def _pool(image: np.ndarray) -> np.ndarray:
    h, w, _ = image.shape
    return image.reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_decodable_clips_whose_labels_match_boxes(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = [
        "synth",
        str(out),
        "--rooms",
        "2",
        "--clips-per-room",
        "1",
        "--duration",
        "6",
        "--width",
        "160",
        "--height",
        "120",
        "--seed",
        "5",
        "--fall-prob",
        "1",
    ]
    assert vigil(args) == 0
    labels, boxes, clips = (
        _read(out / "labels.csv"),
        _read(out / "boxes.csv"),
        _read(out / "clips.csv"),
    )
    assert [c["clip"] for c in clips] == ["clips/r000_c000.mp4", "clips/r001_c000.mp4"]
    for row in clips:
        frames = decode_frames(out / row["clip"], DecodeOptions(fps=10.0, max_side=None))
        assert len(frames) == 60 and tuple(frames[0].frame.shape) == (3, 120, 160)
        cfg = SynthConfig(
            rooms=2,
            clips_per_room=1,
            duration_s=6,
            width=160,
            height=120,
            seed=5,
            scenario=ScenarioConfig(fall_prob=1.0),
        )
        clip = build_clip(cfg, next(r for r in clip_refs(cfg) if r.name == row["clip"]))
        rendered = render_frame(clip, 30).image.astype(np.float32)
        decoded = frames[30].frame.permute(1, 2, 0).numpy().astype(np.float32)
        # The video shows what was rendered (4x4 means average away the camera noise that
        # the encoder smooths).
        assert np.abs(_pool(rendered) - _pool(decoded)).mean() < 3.0
    # Every box row lies in an interval of its label, and every labeled frame has a box.
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in labels:
        spans.setdefault((row["clip"], row["label"]), []).append(
            (float(row["start_s"]), float(row["end_s"]))
        )
    box_times: dict[tuple[str, str], set[float]] = {}
    for row in boxes:
        t = float(row["t_s"])
        key = (row["clip"], row["label"])
        assert any(s <= t < e for s, e in spans[key]), row
        box_times.setdefault(key, set()).add(round(t * 10))
    for key, ranges in spans.items():
        for s, e in ranges:
            assert set(range(round(s * 10), round(e * 10))) <= box_times[key]
