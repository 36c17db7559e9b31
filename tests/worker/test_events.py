"""Event segmentation: worked examples and properties over random score sequences."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.events import Event, detect_events


@dataclass(frozen=True)
class T:
    on: float
    off: float


STEP = 0.5
TH = {"fall": T(on=0.6, off=0.4)}


def grid(n: int, start: float = 0.0) -> list[float]:
    return [start + i * STEP for i in range(n)]


def test_square_wave_gives_exact_intervals() -> None:
    scores = [0.1] * 4 + [0.9] * 6 + [0.1] * 4 + [0.8] * 3 + [0.0] * 3
    events = detect_events(grid(len(scores)), {"fall": scores}, TH, step_s=STEP, merge_gap_s=0.0)
    assert [(e.start_s, e.end_s) for e in events] == [(2.0, 5.0), (7.0, 8.5)]
    assert events[0].peak_score == 0.9 and events[0].keyframe_s == 2.0
    assert events[0].frame_count == 6


def test_hysteresis_keeps_event_open_between_off_and_on() -> None:
    scores = [0.1, 0.7, 0.5, 0.45, 0.65, 0.3, 0.5, 0.1]  # 0.5 after 0.3 must not reopen
    events = detect_events(
        grid(8), {"fall": scores}, TH, step_s=STEP, min_length_s=0, merge_gap_s=0
    )
    assert [(e.start_s, e.end_s) for e in events] == [(0.5, 2.5)]
    assert events[0].mean_score == pytest.approx((0.7 + 0.5 + 0.45 + 0.65) / 4)
    assert events[0].keyframe_s == 0.5


def test_merge_gap_and_minimum_length() -> None:
    scores = [0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9]
    times = grid(len(scores))
    merged = detect_events(
        times, {"fall": scores}, TH, step_s=STEP, merge_gap_s=0.5, min_length_s=1.0
    )
    assert [(e.start_s, e.end_s) for e in merged] == [
        (0.0, 2.5)
    ]  # the lone last frame is too short
    assert merged[0].frame_count == 5 and merged[0].mean_score == pytest.approx(3.7 / 5)
    apart = detect_events(
        times, {"fall": scores}, TH, step_s=STEP, merge_gap_s=0.0, min_length_s=0.0
    )
    assert len(apart) == 3


def test_hole_in_the_data_closes_an_event() -> None:
    times = [0.0, 0.5, 1.0, 10.0, 10.5]
    events = detect_events(
        times, {"fall": [0.9] * 5}, TH, step_s=STEP, merge_gap_s=0.0, min_length_s=0
    )
    assert [(e.start_s, e.end_s) for e in events] == [(0.0, 1.5), (10.0, 11.0)]


def test_labels_are_independent_and_unknown_labels_ignored() -> None:
    scores = {"fall": [0.9, 0.9, 0.9, 0.1], "other": [0.1, 0.9, 0.9, 0.9], "nothr": [1.0] * 4}
    events = detect_events(
        grid(4), scores, {**TH, "other": T(0.5, 0.5)}, step_s=STEP, min_length_s=0
    )
    assert [(e.label, e.start_s, e.end_s) for e in events] == [
        ("fall", 0.0, 1.5),
        ("other", 0.5, 2.0),
    ]


@pytest.mark.parametrize(
    ("times", "scores", "thresholds", "message"),
    [
        ([0.0, 0.0], {"fall": [0.1, 0.2]}, TH, "unique"),
        ([0.0, 0.5], {"fall": [0.1]}, TH, "scores for"),
        ([0.0, 0.5], {"fall": [0.1, 0.2]}, {"fall": T(0.3, 0.5)}, "above on"),
    ],
)
def test_invalid_input_is_rejected(times, scores, thresholds, message) -> None:
    with pytest.raises(ValueError, match=message):
        detect_events(times, scores, thresholds, step_s=STEP)


score_lists = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    scores=score_lists,
    on=st.floats(0.2, 0.9),
    gap=st.floats(0.0, 0.45),
    min_length=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    merge_gap=st.sampled_from([0.0, 0.5, 1.5]),
    seed=st.integers(0, 2**16),
)
def test_properties(scores, on, gap, min_length, merge_gap, seed) -> None:
    thresholds = {"fall": T(on=on, off=on - gap * on)}
    times = grid(len(scores), start=3.25)
    kwargs = {"step_s": STEP, "min_length_s": min_length, "merge_gap_s": merge_gap}
    events = detect_events(times, {"fall": scores}, thresholds, **kwargs)

    # Order independence: shuffling the frames changes nothing.
    order = list(range(len(scores)))
    random.Random(seed).shuffle(order)
    shuffled = detect_events(
        [times[i] for i in order], {"fall": [scores[i] for i in order]}, thresholds, **kwargs
    )
    assert shuffled == events

    for event in events:
        inside = [s for t, s in zip(times, scores, strict=True) if event.start_s <= t < event.end_s]
        assert event.peak_score == max(inside) >= on
        assert min(inside) - 1e-12 <= event.mean_score <= event.peak_score + 1e-12
        assert event.start_s <= event.keyframe_s < event.end_s
        assert scores[times.index(event.keyframe_s)] == event.peak_score
        assert event.duration_s >= min_length - 1e-9
        assert scores[times.index(event.start_s)] >= on  # events open only at `on`
    for before, after in itertools.pairwise(events):
        assert after.start_s - before.end_s > merge_gap  # otherwise they would have merged

    if min_length == 0.0:
        covered = _covered(events, times)
        assert all(covered[i] for i, s in enumerate(scores) if s >= on)


def _covered(events: list[Event], times: list[float]) -> list[bool]:
    return [any(e.start_s <= t < e.end_s for e in events) for t in times]


@dataclass(frozen=True)
class Timed:
    on: float
    off: float
    min_length_s: float | None = None
    merge_gap_s: float | None = None


def test_per_label_minimum_length_and_merge_gap_override_the_call() -> None:
    # a half-second fall between two states: with the call's 1 s minimum it would vanish
    scores = [0.1, 0.1, 0.9, 0.1, 0.1, 0.1]
    times = grid(len(scores))
    plain = detect_events(times, {"fall": scores}, TH, step_s=STEP, min_length_s=1.0)
    assert plain == []
    own = {"fall": Timed(on=0.6, off=0.4, min_length_s=0.0)}
    kept = detect_events(times, {"fall": scores}, own, step_s=STEP, min_length_s=1.0)
    assert [(e.start_s, e.end_s) for e in kept] == [(1.0, 1.5)]
    # its own merge gap: two fall frames 1 s apart stay two events with a 0.5 s gap
    twice = [0.9, 0.1, 0.1, 0.9]
    own_gap = {"fall": Timed(on=0.6, off=0.4, min_length_s=0.0, merge_gap_s=0.5)}
    split = detect_events(grid(4), {"fall": twice}, own_gap, step_s=STEP, merge_gap_s=2.0)
    assert len(split) == 2
    merged = detect_events(grid(4), {"fall": twice}, {"fall": Timed(0.6, 0.4, 0.0)},
                           step_s=STEP, merge_gap_s=2.0)
    assert len(merged) == 1
