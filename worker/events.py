"""Per-label event segmentation over sampled frame scores (pure: no I/O, no torch).

For each label, independently:

1. **Hysteresis**: an event opens at a frame whose score is ``>= on`` and stays open while the
   scores stay ``>= off`` (``off <= on``); it also closes across a hole in the data longer than
   ``break_gap_s`` (a missing segment must not be bridged silently).
2. **Merge**: events of the same label separated by at most ``merge_gap_s`` become one.
3. **Minimum length**: events shorter than ``min_length_s`` are dropped.

A sampled frame at ``t`` stands for ``[t, t + step_s)``, so an event covering the frames
``t_i .. t_j`` spans ``[t_i, min(t_j + step_s, t_{j+1}))``. Peak and mean are over the event's
frames (a merged event includes the frames of the gap); the key frame is the first frame at the
peak. The function is deterministic and independent of the order of its input frames, so that
:mod:`worker.timeline` can run it over the frames of several segments of one stream.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol


class Thresholds(Protocol):
    """Anything with hysteresis thresholds (e.g. ``model.checkpoint.LabelThresholds``).

    An object that also has ``min_length_s`` / ``merge_gap_s`` attributes that are not ``None``
    overrides the call's values for its label.
    """

    @property
    def on(self) -> float: ...

    @property
    def off(self) -> float: ...


@dataclass(frozen=True)
class Event:
    """One detected event of one label; times are seconds on the input's clock."""

    label: str
    start_s: float
    end_s: float
    peak_score: float
    mean_score: float
    keyframe_s: float
    frame_count: int

    @property
    def duration_s(self) -> float:
        """``end_s - start_s``."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class EventParams:
    """Segmentation parameters shared by every label (the keywords of :func:`detect_events`).

    Attributes:
        step_s: analysis step (1 / analysis fps): how long one sampled frame stands for.
        min_length_s: drop events shorter than this (after merging).
        merge_gap_s: merge events of one label whose gap is at most this.
        break_gap_s: close an open event across a hole in the frames longer than this
            (``None``: three steps).
    """

    step_s: float
    min_length_s: float = 1.0
    merge_gap_s: float = 1.0
    break_gap_s: float | None = None

    def __post_init__(self) -> None:
        if not self.step_s > 0:
            raise ValueError("step_s must be > 0")
        if self.min_length_s < 0 or self.merge_gap_s < 0:
            raise ValueError("min_length_s and merge_gap_s must be >= 0")

    @property
    def hole_s(self) -> float:
        """The effective ``break_gap_s``."""
        return self.break_gap_s if self.break_gap_s is not None else 3.0 * self.step_s


def detect_events(
    t_s: Sequence[float],
    scores: Mapping[str, Sequence[float]],
    thresholds: Mapping[str, Thresholds],
    *,
    step_s: float,
    min_length_s: float = 1.0,
    merge_gap_s: float = 1.0,
    break_gap_s: float | None = None,
) -> list[Event]:
    """Events of every label in ``scores``, sorted by ``(start_s, label)``.

    Args:
        t_s: frame times, unique, in any order.
        scores: per label, one score in ``[0, 1]`` per entry of ``t_s``.
        thresholds: per label ``on``/``off``; a label missing here is not segmented.
        step_s, min_length_s, merge_gap_s, break_gap_s: see :class:`EventParams`.

    Raises:
        ValueError: duplicate times, a score list of the wrong length, or ``off > on``.
    """
    params = EventParams(
        step_s=step_s, min_length_s=min_length_s, merge_gap_s=merge_gap_s, break_gap_s=break_gap_s
    )
    order = sorted(range(len(t_s)), key=lambda i: t_s[i])
    times = [float(t_s[i]) for i in order]
    if any(a == b for a, b in itertools.pairwise(times)):
        raise ValueError("frame times must be unique")
    events: list[Event] = []
    for label, values in scores.items():
        if len(values) != len(t_s):
            raise ValueError(f"{label}: {len(values)} scores for {len(t_s)} frames")
        if label not in thresholds:
            continue
        limits = thresholds[label]
        if limits.off > limits.on:
            raise ValueError(f"{label}: off threshold {limits.off} is above on {limits.on}")
        ordered = [float(values[i]) for i in order]
        events.extend(_label_events(label, times, ordered, limits, params))
    return sorted(events, key=lambda e: (e.start_s, e.label))


def _label_events(
    label: str, times: list[float], values: list[float], limits: Thresholds, params: EventParams
) -> list[Event]:
    params = label_params(params, limits)
    runs = _merge(_hysteresis_runs(times, values, limits, params.hole_s), times, params)
    events = [_summarise(label, times, values, first, last, params) for first, last in runs]
    return [e for e in events if e.duration_s >= params.min_length_s - 1e-9]


def label_params(params: EventParams, limits: Thresholds) -> EventParams:
    """``params`` with the label's own ``min_length_s`` / ``merge_gap_s``, where it has them."""
    min_length = getattr(limits, "min_length_s", None)
    merge_gap = getattr(limits, "merge_gap_s", None)
    if min_length is None and merge_gap is None:
        return params
    return replace(
        params,
        min_length_s=params.min_length_s if min_length is None else float(min_length),
        merge_gap_s=params.merge_gap_s if merge_gap is None else float(merge_gap),
    )


def _hysteresis_runs(
    times: list[float], values: list[float], limits: Thresholds, hole_s: float
) -> list[tuple[int, int]]:
    """Inclusive index ranges ``(first, last)`` of the hysteresis-on frames."""
    runs: list[tuple[int, int]] = []
    first: int | None = None
    for i, value in enumerate(values):
        if first is not None and (value < limits.off or times[i] - times[i - 1] > hole_s):
            runs.append((first, i - 1))
            first = None
        if first is None and value >= limits.on:
            first = i
    if first is not None:
        runs.append((first, len(values) - 1))
    return runs


def _merge(
    runs: list[tuple[int, int]], times: list[float], params: EventParams
) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in runs:
        if (
            merged
            and times[first] - _end(times, merged[-1][1], params) <= params.merge_gap_s + 1e-9
        ):
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _end(times: list[float], last: int, params: EventParams) -> float:
    """End time of an event whose last frame is ``times[last]``."""
    end = times[last] + params.step_s
    if last + 1 < len(times):
        end = min(end, times[last + 1])
    return end


def _summarise(
    label: str, times: list[float], values: list[float], first: int, last: int, params: EventParams
) -> Event:
    window = values[first : last + 1]
    peak = max(window)
    key = first + window.index(peak)
    return Event(
        label=label,
        start_s=times[first],
        end_s=_end(times, last, params),
        peak_score=peak,
        mean_score=sum(window) / len(window),
        keyframe_s=times[key],
        frame_count=len(window),
    )


__all__ = ["Event", "EventParams", "Thresholds", "detect_events", "label_params"]
