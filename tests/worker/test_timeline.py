"""Stream timelines across segments: the result must not depend on arrival order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from model.checkpoint import LabelThresholds
from service.schemas import Event, FrameScores
from service.store import EventQuery, Store
from worker.events import EventParams
from worker.timeline import SegmentSpan, TimelineParams, grow_cluster, stream_events

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
STEP = 0.5
PARAMS = TimelineParams(
    events=EventParams(step_s=STEP, min_length_s=1.0, merge_gap_s=1.0),
    thresholds={"fall": LabelThresholds(on=0.6, off=0.4), "seizure": LabelThresholds()},
)


def segment(
    segment_id: str, start_s: float, length_s: float, active: dict[str, list[tuple[float, float]]]
) -> FrameScores:
    """Frames every STEP from ``start_s``; score 0.9 inside the active intervals, else 0.1."""
    times = [start_s + i * STEP for i in range(round(length_s / STEP))]

    def score(label: str, t: float) -> float:
        return 0.9 if any(a <= t < b for a, b in active.get(label, [])) else 0.1

    return FrameScores(
        segment_id=segment_id,
        stream_id="bed-1",
        model_version="m-1",
        classes=["fall", "seizure"],
        times=[T0 + t for t in times],
        scores=[[score("fall", t), score("seizure", t)] for t in times],
    )


# Three contiguous 10-s segments; a fall from 7 s to 24 s spans all three, a seizure in the
# first one only, and a fall still going at the end of the recording.
TRUTH = {"fall": [(7.0, 24.0), (27.0, 30.0)], "seizure": [(2.0, 4.0)]}
SEGMENTS = {f"seg-{i}": segment(f"seg-{i}", 10.0 * i, 10.0, TRUTH) for i in range(3)}


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> Iterator[Store]:
    s = Store.from_url(redis_url, redis_prefix)
    yield s
    s.close()


def arrive(store: Store, stored: dict[str, FrameScores], new: FrameScores) -> None:
    """What the worker does for one analysed segment (frames in, events out)."""
    stored[new.segment_id] = new
    spans = [SegmentSpan(s.segment_id, min(s.times), max(s.times) + STEP) for s in stored.values()]
    parts = grow_cluster(new.segment_id, spans, stored.get, PARAMS)
    events, (lo, hi) = stream_events("bed-1", parts, PARAMS)
    window = (datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC))
    store.events.write("bed-1", events, window=window)


def live(store: Store) -> list[Event]:
    page, _ = store.events.list("bed-1", EventQuery(limit=100))
    return page


def summary(events: list[Event]) -> list[tuple[str, str, float, float, bool]]:
    return sorted(
        (e.event_id, e.label, e.start.timestamp() - T0, e.end.timestamp() - T0, e.open)
        for e in events
    )


@pytest.mark.parametrize("order", [("seg-0", "seg-1"), ("seg-1", "seg-0")])
def test_event_spanning_two_segments_is_one_event_in_either_order(
    store: Store, order: tuple[str, str]
) -> None:
    stored: dict[str, FrameScores] = {}
    for name in order:
        arrive(store, stored, SEGMENTS[name])
    falls = [e for e in live(store) if e.label == "fall"]
    assert len(falls) == 1
    fall = falls[0]
    assert fall.start.timestamp() - T0 == pytest.approx(7.0)
    assert fall.end.timestamp() - T0 == pytest.approx(20.0)  # runs to the end of seg-1
    assert fall.open and fall.segment_ids == ["seg-0", "seg-1"]


def test_all_arrival_orders_of_three_segments_give_the_same_timeline(store: Store) -> None:
    results = []
    for n, order in enumerate(itertools.permutations(SEGMENTS)):
        scoped = Store(store.r, store.keys.__class__(f"{store.keys.prefix}{n}:"))
        stored: dict[str, FrameScores] = {}
        for name in order:
            arrive(scoped, stored, SEGMENTS[name])
        results.append(summary(live(scoped)))
    assert all(r == results[0] for r in results)
    shape = [(label, start, end, is_open) for _, label, start, end, is_open in results[0]]
    assert sorted(shape) == [
        ("fall", 7.0, 24.0, False),
        ("fall", 27.0, 30.0, True),
        ("seizure", 2.0, 4.0, False),
    ]


def test_event_growing_at_its_end_keeps_its_id_and_late_start_supersedes(store: Store) -> None:
    stored: dict[str, FrameScores] = {}
    arrive(store, stored, SEGMENTS["seg-1"])  # the fall seems to start at 10 s
    first = next(e for e in live(store) if e.label == "fall")
    assert first.start.timestamp() - T0 == pytest.approx(10.0)
    arrive(store, stored, SEGMENTS["seg-2"])  # grows at its end: same id
    grown = next(e for e in live(store) if e.label == "fall" and e.event_id == first.event_id)
    assert grown.end.timestamp() - T0 == pytest.approx(24.0) and not grown.open
    arrive(store, stored, SEGMENTS["seg-0"])  # starts earlier: new id, the old one superseded
    changed, _ = store.events.list("bed-1", EventQuery(updated_since=grown.updated_at, limit=50))
    by_id = {e.event_id: e for e in changed}
    assert by_id[first.event_id].superseded
    assert any(e.label == "fall" and e.start.timestamp() - T0 == 7.0 for e in changed)


def test_quiet_boundary_and_holes_keep_segments_apart() -> None:
    quiet = {"fall": [(2.0, 5.0), (13.0, 17.0)]}
    a, b = segment("a", 0.0, 10.0, quiet), segment("b", 10.0, 10.0, quiet)
    frames = {"a": a, "b": b}
    spans = [SegmentSpan("a", T0, T0 + 10), SegmentSpan("b", T0 + 10, T0 + 20)]
    assert [p.segment_id for p in grow_cluster("b", spans, frames.get, PARAMS)] == ["b"]
    busy = {"fall": [(8.0, 12.0)]}
    a, far = segment("a", 0.0, 10.0, busy), segment("far", 30.0, 10.0, {"fall": [(30.0, 33.0)]})
    frames = {"a": a, "far": far}
    spans = [SegmentSpan("a", T0, T0 + 10), SegmentSpan("far", T0 + 30, T0 + 40)]
    assert [p.segment_id for p in grow_cluster("a", spans, frames.get, PARAMS)] == ["a"]
    joined = {"a": a, "b": segment("b", 10.0, 10.0, busy)}
    spans = [SegmentSpan("a", T0, T0 + 10), SegmentSpan("b", T0 + 10, T0 + 20)]
    assert [p.segment_id for p in grow_cluster("a", spans, joined.get, PARAMS)] == ["a", "b"]
