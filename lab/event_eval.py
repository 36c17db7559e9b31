"""Scoring of event timelines against interval labels (``vigil evaluate``).

Pure code: the inputs are timelines (``worker.report.Timeline`` JSON, from Vigil or from a peer
detector) and interval labels; nothing here decodes video or runs a model, and torch is imported
only inside :func:`average_precision` (which delegates to :mod:`model.metrics`). Definitions
(also in ``docs/pipeline.md``, "Evaluating on labeled clips"):

- intervals are half-open ``[start_s, end_s)``; a labeled or predicted interval of one label that
  overlaps or touches another of the same label in the same clip is merged with it first;
- **frames**: at every analysed frame time ``t`` the truth is ``start_s <= t < end_s`` of a labeled
  interval and the prediction is ``start_s <= t < end_s`` of a predicted event (what the product
  shows), pooled over clips;
- **AP** from the per-frame scores (:func:`model.metrics.average_precision`), ``None`` when a
  timeline has no scores for the label or there is no positive frame;
- **events**: predicted and labeled intervals matched one-to-one, greedily by temporal IoU
  (highest first), a pair counting when IoU >= 0.3, per clip and label;
- **false alarms per minute**: predicted events of a label on the clips that have no labeled
  interval of it, over those clips' total duration;
- **fall alerts**: see :func:`fall_alerts`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IOU_MATCH = 0.3
"""Temporal IoU a predicted event needs with a labeled interval to match it."""
FALL_LABELS = ("falling", "fallen")
EPISODE_GAP_S = 1.0
"""Predicted fall events this close (or overlapping) form one episode, i.e. one alert."""
ALERT_EARLY_S = 1.0
ALERT_LATE_S = 2.0
"""An alert in ``[onset - ALERT_EARLY_S, onset + ALERT_LATE_S]`` alerts the fall."""
FALLING_BEFORE_S = 1.0
"""A labeled ``fallen`` is its own onset unless a labeled ``falling`` ends this close before it."""
FIRST_FRAME_TOLERANCE_S = 1e-3
UPRIGHT_WINDOW_S = 3.0
"""A fall episode is an alert only if, within this long before its start, the detector saw the
person upright: a frame inside a predicted ``person_present`` event and outside every predicted
fall episode (a nurse needs "was up, is now down"; lying from the start raises none)."""
DEFAULT_GRID_FPS = 5.0
"""Frame grid for a peer timeline that lists no frame times and states no analysis rate."""

Span = tuple[float, float]


class IntervalLike(Protocol):
    """A labeled interval (:class:`lab.datasets.Interval` is one)."""

    @property
    def clip(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...


class TimelineError(ValueError):
    """A timeline file that cannot be read or does not fit the timeline contract."""


# ------------------------------------------------------------------------------ timeline input


class EvalEvent(BaseModel):
    """The part of a ``timeline.json`` event that scoring uses (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")
    label: str
    start_s: float
    end_s: float


class EvalFrames(BaseModel):
    """``frames``: ``scores[label][i]`` belongs to ``t_s[i]``; a peer may leave labels out."""

    model_config = ConfigDict(extra="ignore")
    t_s: list[float] = Field(default_factory=list)
    scores: dict[str, list[float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _same_length(self) -> EvalFrames:
        for label, values in self.scores.items():
            if len(values) != len(self.t_s):
                raise ValueError(f"frames.scores[{label!r}] has {len(values)} values for "
                                 f"{len(self.t_s)} frame times")
        return self


class EvalModel(BaseModel):
    """``model`` of a timeline (optional for peers)."""

    model_config = ConfigDict(extra="ignore")
    version: str | None = None
    classes: list[str] = Field(default_factory=list)


class EvalTimeline(BaseModel):
    """A ``worker.report.Timeline`` read leniently: what a peer detector must provide is
    ``duration_s`` and ``events``; ``frames`` and ``fps_analysed`` are optional."""

    model_config = ConfigDict(extra="ignore")
    video: str = ""
    model: EvalModel = Field(default_factory=EvalModel)
    fps_analysed: float | None = Field(default=None, gt=0)
    duration_s: float = Field(ge=0)
    events: list[EvalEvent] = Field(default_factory=list)
    frames: EvalFrames = Field(default_factory=EvalFrames)


def load_timeline(path: str | Path) -> EvalTimeline:
    """Read one timeline JSON file; :class:`TimelineError` says what is wrong with it."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return EvalTimeline.model_validate(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TimelineError(f"{path}: cannot read the timeline ({exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "timeline"
        raise TimelineError(f"{path}: invalid timeline: {where}: {first['msg']}") from exc


def frame_times(timeline: EvalTimeline) -> list[float]:
    """The analysed frame times; for a timeline without any, the grid ``k / fps`` over its
    duration (``fps_analysed``, else :data:`DEFAULT_GRID_FPS`)."""
    if timeline.frames.t_s:
        return list(timeline.frames.t_s)
    fps = timeline.fps_analysed or DEFAULT_GRID_FPS
    return [k / fps for k in range(math.ceil(timeline.duration_s * fps - 1e-9))]


# ------------------------------------------------------------------------------ interval helpers


def merge_spans(spans: Iterable[Span], gap_s: float = 0.0) -> list[Span]:
    """Sorted union of ``spans``: spans that overlap or lie within ``gap_s`` of each other
    become one (``gap_s=0`` merges touching spans)."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + gap_s:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def inside(t: float, spans: Sequence[Span]) -> bool:
    """Whether ``start <= t < end`` for one of ``spans``."""
    return any(start <= t < end for start, end in spans)


def temporal_iou(a: Span, b: Span) -> float:
    """Intersection over union of two intervals (0 when the union is empty)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(0.0, a[1] - a[0]) + max(0.0, b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def match_greedy(
    predicted: Sequence[Span], labeled: Sequence[Span], threshold: float = IOU_MATCH
) -> list[tuple[int, int]]:
    """One-to-one ``(predicted index, labeled index)`` pairs: the pair with the highest IoU
    first (ties: earlier predicted, then earlier labeled), only pairs with IoU >= ``threshold``."""
    pairs = sorted(
        (temporal_iou(p, t), i, j)
        for i, p in enumerate(predicted)
        for j, t in enumerate(labeled)
    )
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches = []
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            matches.append((i, j))
    return sorted(matches)


def ratio(num: float, den: float) -> float | None:
    """``num / den``, ``None`` when ``den`` is 0 (undefined, not zero)."""
    return num / den if den > 0 else None


def average_precision(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """AP of one label (:func:`model.metrics.average_precision`); ``None`` without positives."""
    if not any(positives):
        return None
    import torch

    from model.metrics import average_precision as ap

    value = ap(torch.tensor(scores, dtype=torch.float64), torch.tensor(positives))
    return None if math.isnan(value) else value


# ------------------------------------------------------------------------------ per-clip view


@dataclass(frozen=True)
class ClipData:
    """One evaluated clip: its frame times, merged labeled and predicted spans per label, scores."""

    clip: str
    duration_s: float
    times: list[float]
    truth: dict[str, list[Span]]
    predicted: dict[str, list[Span]]
    scores: dict[str, list[float]]
    fall_events: list[Span]
    """Predicted ``falling``/``fallen`` events, unmerged, for :func:`alert_times`."""

    @property
    def first_t(self) -> float:
        """The first analysed frame's time (0 without frames)."""
        return self.times[0] if self.times else 0.0


def clip_data(clip: str, timeline: EvalTimeline, intervals: Iterable[IntervalLike]) -> ClipData:
    """The scoring view of one clip from its timeline and its labeled intervals."""
    truth: dict[str, list[Span]] = {}
    for iv in intervals:
        truth.setdefault(iv.label, []).append((iv.start_s, iv.end_s))
    predicted: dict[str, list[Span]] = {}
    for ev in timeline.events:
        predicted.setdefault(ev.label, []).append((ev.start_s, ev.end_s))
    return ClipData(
        clip=clip,
        duration_s=timeline.duration_s,
        times=frame_times(timeline),
        truth={k: merge_spans(v) for k, v in truth.items()},
        predicted={k: merge_spans(v) for k, v in predicted.items()},
        scores=dict(timeline.frames.scores) if timeline.frames.t_s else {},
        fall_events=[(e.start_s, e.end_s) for e in timeline.events if e.label in FALL_LABELS],
    )


# ------------------------------------------------------------------------------ result models


class FrameMetrics(BaseModel):
    """Per-frame counts and rates of one label, pooled over clips (``None``: undefined)."""

    frames: int
    positives: int
    predicted: int
    tp: int
    fp: int
    fn: int
    precision: float | None
    recall: float | None
    f1: float | None


class EventMetrics(BaseModel):
    """Event-level recall and precision of one label (one-to-one IoU matching)."""

    labeled: int
    predicted: int
    matched: int
    recall: float | None
    precision: float | None
    iou_threshold: float = IOU_MATCH


class FalseAlarms(BaseModel):
    """Predicted events of one label on the clips without any labeled interval of it."""

    events: int
    clips: int
    minutes: float
    per_minute: float | None


class BoxMetrics(BaseModel):
    """Grad-CAM localisation of one label against labeled boxes."""

    boxes: int
    mean_iou: float | None
    pointing_hits: int
    pointing_hit_rate: float | None


class LabelMetrics(BaseModel):
    """Everything measured for one label."""

    frames: FrameMetrics
    ap: float | None
    ap_frames: int = Field(description="frames whose scores entered the AP (0: no AP)")
    ap_note: str | None = None
    events: EventMetrics
    false_alarms: FalseAlarms
    boxes: BoxMetrics | None = None


class FallRow(BaseModel):
    """One labeled fall onset and the alert that matched it (``None``: missed)."""

    clip: str
    onset_s: float
    onset_label: str
    alert_s: float | None
    delay_s: float | None
    hit: bool


class AlertRow(BaseModel):
    """A fall alert that matched no labeled fall."""

    clip: str
    t_s: float
    fall_free_clip: bool


class FallAlerts(BaseModel):
    """Fall alerting over all clips (see :func:`fall_alerts` for the definitions)."""

    falls: int
    hits: int
    misses: int
    alerted_within_2s: float | None
    median_delay_s: float | None
    alerts: int
    unmatched_alerts: int = Field(description="alerts matched to no fall, on all clips")
    fall_free_clips: int
    fall_free_minutes: float
    false_alerts: int = Field(description="unmatched alerts on fall-free clips")
    false_alerts_per_fall_free_minute: float | None
    window_s: tuple[float, float] = (-ALERT_EARLY_S, ALERT_LATE_S)
    episode_gap_s: float = EPISODE_GAP_S
    rows: list[FallRow]
    unmatched: list[AlertRow]


class ClipSummary(BaseModel):
    """One evaluated clip."""

    clip: str
    duration_s: float
    frames: int
    events: int


class BoxRowResult(BaseModel):
    """One labeled box (the union of a (clip, time, label)'s boxes) and the CAM's answer."""

    clip: str
    t_s: float
    frame_t_s: float
    label: str
    box: tuple[float, float, float, float]
    cam_box: tuple[float, float, float, float] | None
    iou: float
    pointing_hit: bool


class Evaluation(BaseModel):
    """``evaluation.json``."""

    source: dict[str, object] = Field(default_factory=dict)
    classes: list[str]
    clips: list[ClipSummary]
    labels: dict[str, LabelMetrics]
    fall_alerts: FallAlerts
    boxes: list[BoxRowResult] | None = None
    notes: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------ per-label scoring


def frame_metrics(label: str, clips: Sequence[ClipData]) -> FrameMetrics:
    """Frame counts of ``label``: truth from the labels, prediction from the events."""
    tp = fp = fn = frames = 0
    for c in clips:
        truth, pred = c.truth.get(label, []), c.predicted.get(label, [])
        for t in c.times:
            is_true, is_pred = inside(t, truth), inside(t, pred)
            tp += is_true and is_pred
            fp += is_pred and not is_true
            fn += is_true and not is_pred
            frames += 1
    return FrameMetrics(
        frames=frames, positives=tp + fn, predicted=tp + fp, tp=tp, fp=fp, fn=fn,
        precision=ratio(tp, tp + fp), recall=ratio(tp, tp + fn), f1=ratio(2 * tp, 2 * tp + fp + fn),
    )  # fmt: skip


def label_ap(label: str, clips: Sequence[ClipData]) -> tuple[float | None, int, str | None]:
    """``(AP, frames used, note)`` from the pooled per-frame scores of ``label``."""
    lacking = [c.clip for c in clips if label not in c.scores]
    if lacking:
        return None, 0, f"no per-frame scores for {label!r} in {len(lacking)} clip(s)"
    scores: list[float] = []
    positives: list[bool] = []
    for c in clips:
        truth = c.truth.get(label, [])
        scores.extend(c.scores[label])
        positives.extend(inside(t, truth) for t in c.times)
    ap = average_precision(scores, positives)
    return ap, len(scores), (None if ap is not None else f"no positive frame of {label!r}")


def event_metrics(label: str, clips: Sequence[ClipData]) -> EventMetrics:
    """Event recall and precision of ``label`` with one-to-one matching per clip."""
    labeled = predicted = matched = 0
    for c in clips:
        truth, pred = c.truth.get(label, []), c.predicted.get(label, [])
        labeled += len(truth)
        predicted += len(pred)
        matched += len(match_greedy(pred, truth))
    return EventMetrics(
        labeled=labeled, predicted=predicted, matched=matched,
        recall=ratio(matched, labeled), precision=ratio(matched, predicted),
    )  # fmt: skip


def false_alarms(label: str, clips: Sequence[ClipData]) -> FalseAlarms:
    """Predicted ``label`` events on clips without a labeled ``label`` interval, per minute."""
    negative = [c for c in clips if not c.truth.get(label)]
    events = sum(len(c.predicted.get(label, [])) for c in negative)
    minutes = sum(c.duration_s for c in negative) / 60.0
    return FalseAlarms(
        events=events, clips=len(negative), minutes=minutes, per_minute=ratio(events, minutes)
    )


def label_metrics(label: str, clips: Sequence[ClipData]) -> LabelMetrics:
    """All per-label metrics of ``label``."""
    ap, ap_frames, note = label_ap(label, clips)
    return LabelMetrics(
        frames=frame_metrics(label, clips),
        ap=ap,
        ap_frames=ap_frames,
        ap_note=note,
        events=event_metrics(label, clips),
        false_alarms=false_alarms(label, clips),
    )


# ------------------------------------------------------------------------------ fall alerts


def fall_onsets(clip: ClipData) -> list[tuple[float, str]]:
    """Labeled fall onsets ``(time, label)`` of one clip, in time order.

    The start of every labeled ``falling`` interval, and the start of a labeled ``fallen``
    interval that no ``falling`` interval precedes within :data:`FALLING_BEFORE_S` (a falling
    span starting at or before it and ending at or after ``start - 1 s``) and that does not start
    at the clip's first frame (lying from the start is not a fall).
    """
    falling = clip.truth.get("falling", [])
    onsets = [(start, "falling") for start, _ in falling]
    for start, _ in clip.truth.get("fallen", []):
        preceded = any(s <= start and e >= start - FALLING_BEFORE_S for s, e in falling)
        at_first_frame = start <= clip.first_t + FIRST_FRAME_TOLERANCE_S
        if not preceded and not at_first_frame:
            onsets.append((start, "fallen"))
    return sorted(onsets)


def alert_times(clip: ClipData) -> list[float]:
    """Fall alerts of one clip: the start of every episode of predicted ``falling``/``fallen``
    events (events that overlap or lie within :data:`EPISODE_GAP_S` form one episode) that
    follows an upright observation within :data:`UPRIGHT_WINDOW_S`."""
    episodes = merge_spans(clip.fall_events, EPISODE_GAP_S)
    present = clip.predicted.get("person_present", [])

    def upright_before(start: float) -> bool:
        return any(
            start - UPRIGHT_WINDOW_S <= t < start and inside(t, present)
            and not inside(t, episodes)
            for t in clip.times
        )

    return [start for start, _ in episodes if upright_before(start)]


def match_alerts(onsets: Sequence[float], alerts: Sequence[float]) -> list[int | None]:
    """For each onset (in order), the index of the earliest unused alert in
    ``[onset - ALERT_EARLY_S, onset + ALERT_LATE_S]``, else ``None``. Each alert serves one fall."""
    used: set[int] = set()
    found: list[int | None] = []
    eps = 1e-9  # an alert exactly at a window's edge is inside it
    for onset in onsets:
        low, high = onset - ALERT_EARLY_S - eps, onset + ALERT_LATE_S + eps
        pick = next(
            (i for i, a in enumerate(alerts) if i not in used and low <= a <= high), None
        )
        if pick is not None:
            used.add(pick)
        found.append(pick)
    return found


def _clip_falls(clip: ClipData) -> tuple[list[FallRow], list[AlertRow]]:
    """Fall rows and unmatched alerts of one clip."""
    onsets = fall_onsets(clip)
    alerts = alert_times(clip)
    picks = match_alerts([t for t, _ in onsets], alerts)
    rows = [
        FallRow(
            clip=clip.clip, onset_s=t, onset_label=label,
            alert_s=None if i is None else alerts[i],
            delay_s=None if i is None else alerts[i] - t, hit=i is not None,
        )
        for (t, label), i in zip(onsets, picks, strict=True)
    ]  # fmt: skip
    used = {i for i in picks if i is not None}
    unmatched = [
        AlertRow(clip=clip.clip, t_s=a, fall_free_clip=not onsets)
        for i, a in enumerate(alerts)
        if i not in used
    ]
    return rows, unmatched


def fall_alerts(clips: Sequence[ClipData]) -> FallAlerts:
    """Fall alerting: hits and delays per labeled onset (:func:`fall_onsets`, :func:`alert_times`,
    :func:`match_alerts`), and false alerts per fall-free minute, where fall-free minutes are the
    total duration of the clips without a labeled fall onset (clips with falls add nothing)."""
    rows: list[FallRow] = []
    unmatched: list[AlertRow] = []
    alerts = 0
    for clip in clips:
        clip_rows, clip_unmatched = _clip_falls(clip)
        rows += clip_rows
        unmatched += clip_unmatched
        alerts += len(alert_times(clip))
    fall_free = [c for c in clips if not fall_onsets(c)]
    minutes = sum(c.duration_s for c in fall_free) / 60.0
    false = sum(a.fall_free_clip for a in unmatched)
    hits = [r for r in rows if r.hit]
    delays = [r.delay_s for r in hits if r.delay_s is not None]
    return FallAlerts(
        falls=len(rows), hits=len(hits), misses=len(rows) - len(hits),
        alerted_within_2s=ratio(len(hits), len(rows)),
        median_delay_s=statistics.median(delays) if delays else None,
        alerts=alerts, unmatched_alerts=len(unmatched),
        fall_free_clips=len(fall_free), fall_free_minutes=minutes,
        false_alerts=false, false_alerts_per_fall_free_minute=ratio(false, minutes),
        rows=rows, unmatched=unmatched,
    )  # fmt: skip


# ------------------------------------------------------------------------------ whole evaluation


def evaluate(
    timelines: Mapping[str, EvalTimeline],
    intervals: Iterable[IntervalLike],
    classes: Sequence[str],
) -> Evaluation:
    """Score ``timelines`` (clip -> timeline) against the labeled ``intervals`` of those clips
    (intervals of other clips are ignored) for each of ``classes``."""
    by_clip: dict[str, list[IntervalLike]] = {clip: [] for clip in timelines}
    for iv in intervals:
        if iv.clip in by_clip:
            by_clip[iv.clip].append(iv)
    clips = [clip_data(name, timelines[name], by_clip[name]) for name in timelines]
    summaries = [
        ClipSummary(clip=c.clip, duration_s=c.duration_s, frames=len(c.times),
                    events=len(timelines[c.clip].events))
        for c in clips
    ]  # fmt: skip
    return Evaluation(
        classes=list(classes),
        clips=summaries,
        labels={label: label_metrics(label, clips) for label in classes},
        fall_alerts=fall_alerts(clips),
    )


def summarize_boxes(rows: Sequence[BoxRowResult]) -> dict[str, BoxMetrics]:
    """Mean IoU and pointing-game hit rate per label."""
    out: dict[str, BoxMetrics] = {}
    for label in dict.fromkeys(r.label for r in rows):
        mine = [r for r in rows if r.label == label]
        hits = sum(r.pointing_hit for r in mine)
        out[label] = BoxMetrics(
            boxes=len(mine), mean_iou=statistics.fmean(r.iou for r in mine),
            pointing_hits=hits, pointing_hit_rate=hits / len(mine),
        )  # fmt: skip
    return out


def labels_in_order(intervals: Iterable[IntervalLike]) -> list[str]:
    """The distinct labels of ``intervals`` in order of first appearance."""
    return list(dict.fromkeys(iv.label for iv in intervals))


# ------------------------------------------------------------------------------ markdown


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _label_row(label: str, m: LabelMetrics) -> str:
    f, e, fa, b = m.frames, m.events, m.false_alarms, m.boxes
    cells = [
        label,
        f"{_num(f.precision)} / {_num(f.recall)} / {_num(f.f1)} "
        f"({f.tp}/{f.fp}/{f.fn} of {f.frames})",
        _num(m.ap),
        f"{_num(e.recall)} ({e.matched}/{e.labeled})",
        f"{_num(e.precision)} ({e.matched}/{e.predicted})",
        f"{_num(fa.per_minute, 2)} ({fa.events} in {fa.minutes:.1f} min, {fa.clips} clips)",
        "–" if b is None else f"{_num(b.mean_iou)} / {_num(b.pointing_hit_rate)} ({b.boxes})",
    ]
    return "| " + " | ".join(cells) + " |"


def _fall_lines(fa: FallAlerts) -> list[str]:
    delay = "–" if fa.median_delay_s is None else f"{fa.median_delay_s:+.2f} s"
    lines = [
        f"**Fall alerts** (window {fa.window_s[0]:+g} s .. {fa.window_s[1]:+g} s around the onset; "
        f"events within {fa.episode_gap_s:g} s form one alert): "
        f"{fa.hits}/{fa.falls} falls alerted ({_num(fa.alerted_within_2s)}), {fa.misses} missed, "
        f"median delay {delay}; {fa.alerts} alerts, {fa.unmatched_alerts} unmatched on all clips; "
        f"false alerts {fa.false_alerts} in {fa.fall_free_minutes:.1f} fall-free min "
        f"({fa.fall_free_clips} clips) = {_num(fa.false_alerts_per_fall_free_minute, 2)}/min.",
    ]
    if fa.rows:
        lines += ["", "| clip | onset s | from | alert s | delay s |", "| --- " * 5 + "|"]
        lines += [
            f"| {r.clip} | {r.onset_s:.3f} | {r.onset_label} | {_num(r.alert_s, 2)} | "
            f"{'missed' if r.delay_s is None else f'{r.delay_s:+.2f}'} |"
            for r in fa.rows
        ]
    return lines


def markdown_report(ev: Evaluation) -> str:
    """The summary table (one row per label) and the fall-alert block, as markdown."""
    header = (
        "| label | frames P / R / F1 (tp/fp/fn of frames) | AP | event recall | event precision "
        "| false alarms/min | box IoU / pointing (boxes) |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_label_row(label, m) for label, m in ev.labels.items()]
    lines += ["", *_fall_lines(ev.fall_alerts)]
    if ev.notes:
        lines += ["", *(f"- {n}" for n in ev.notes)]
    return "\n".join(lines) + "\n"
