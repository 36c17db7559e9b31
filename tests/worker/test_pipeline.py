"""analyze_file end to end on generated clips with known event intervals."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.checkpoint import LoadedModel
from tests.worker.conftest import event_clip, remux_faststart
from worker import pipeline
from worker.decode import DecodeError, SampledFrame
from worker.events import detect_events
from worker.feeding import FrameFeeder, PeakFrames
from worker.pipeline import AnalyzeOptions, analyze_file

TRUTH = {"red_square": [(1.5, 4.0), (8.0, 10.5)], "blue_square": [(3.0, 6.5)]}


@pytest.fixture(scope="module")
def truth_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return event_clip(tmp_path_factory.mktemp("pipeline") / "truth.mp4", TRUTH, 12.0)


def _assert_matches_truth(events, step: float) -> None:
    found = sorted((e.label, e.start_s, e.end_s) for e in events)
    expected = sorted((label, s, e) for label, spans in TRUTH.items() for s, e in spans)
    assert len(found) == len(expected), found
    for (label, start, end), (t_label, t_start, t_end) in zip(found, expected, strict=True):
        assert label == t_label
        assert abs(start - t_start) <= step + 1e-9 and abs(end - t_end) <= step + 1e-9, found


@pytest.mark.parametrize("fps", [2.0, 3.0])
def test_events_within_one_step_of_the_truth(
    tiny_loaded: LoadedModel, truth_clip: Path, tmp_path: Path, fps: float
) -> None:
    progress: list[float] = []
    result = analyze_file(
        truth_clip,
        tiny_loaded,
        options=AnalyzeOptions(fps=fps, batch_size=4),
        overlay_dir=tmp_path / "overlays",
        progress=progress.append,
    )
    _assert_matches_truth(result.events, 1.0 / fps)
    assert result.fps_analysed == fps and result.duration_s == pytest.approx(12.0)
    assert len(result.frames.t_s) == round(12.0 * fps)
    assert set(result.frames.scores) == {"red_square", "blue_square"}
    assert progress == sorted(progress) and progress[-1] == 1.0
    for event in result.events:
        assert event.start_s <= event.keyframe_s < event.end_s
        assert event.peak_score >= 0.5 and event.mean_score <= event.peak_score
        assert event.consistency is not None and -1.0 <= event.consistency <= 1.0
        assert (
            event.overlay is not None and (tmp_path / "overlays" / event.overlay).stat().st_size > 0
        )
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == sorted(
        e.overlay for e in result.events
    )  # one JPEG per event, no temporary files left
    assert result.timings.total_s >= result.timings.inference_s > 0


def test_key_frames_come_from_memory(
    tiny_loaded: LoadedModel, truth_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_seek(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a key frame was re-read from the file")

    monkeypatch.setattr(pipeline, "read_frame_at", no_seek)
    result = analyze_file(truth_clip, tiny_loaded, options=AnalyzeOptions(consistency=False))
    assert len(result.events) == 3 and all(e.consistency is None for e in result.events)
    assert all(e.overlay is None for e in result.events)  # no overlay_dir: no files


def test_truncated_file_keep_or_fail(
    tiny_loaded: LoadedModel, truth_clip: Path, tmp_path: Path
) -> None:
    fast = remux_faststart(truth_clip, tmp_path / "fast.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.5)])
    kept = analyze_file(cut, tiny_loaded)
    assert kept.truncation is not None and kept.truncation.stopped_at_s is not None
    assert kept.frames.t_s[-1] <= kept.truncation.stopped_at_s < 11.0
    assert kept.duration_s < 12.0
    with pytest.raises(DecodeError) as info:
        analyze_file(cut, tiny_loaded, options=AnalyzeOptions(on_truncated="fail"))
    assert info.value.code == "truncated"


def test_bad_input_raises_decode_error(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    text = tmp_path / "x.mp4"
    text.write_text("not a video")
    with pytest.raises(DecodeError) as info:
        analyze_file(text, tiny_loaded)
    assert info.value.code == "undecodable"


def test_decoder_errors_reach_the_caller_and_the_thread_stops(tiny_loaded: LoadedModel) -> None:
    class Failing:
        def __iter__(self):
            frame = torch.zeros(3, 8, 8, dtype=torch.uint8)
            for i in range(40):  # more than the queue holds
                if i == 30:
                    raise DecodeError("too_long", "the stream runs past the limit")
                yield SampledFrame(index=i, t_s=i / 2, frame=frame)

    feeder = FrameFeeder(Failing(), size=4)
    seen = 0
    with pytest.raises(DecodeError, match="too_long"), feeder:
        for batch in feeder.batches(8):
            seen += len(batch)
    assert seen == 24 and not feeder._thread.is_alive()


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.floats(0, 1), min_size=1, max_size=40), seed=st.integers(0, 99))
def test_peak_frames_hold_every_event_key_frame(scores: list[float], seed: int) -> None:
    rng = random.Random(seed)
    times, t = [], 0.0
    for _ in scores:  # mostly regular, sometimes a hole longer than three steps
        times.append(round(t, 3))
        t += 0.5 if rng.random() > 0.1 else 2.5
    other = [rng.random() for _ in scores]
    keeper = PeakFrames(off=[0.4, 0.3], on=[0.6, 0.7], hole_s=1.5)
    for i, (t_i, a, b) in enumerate(zip(times, scores, other, strict=True)):
        keeper.add(SampledFrame(index=i, t_s=t_i, frame=torch.tensor([i])), [a, b])
    kept = keeper.finish()
    thresholds = {"a": _T(0.6, 0.4), "b": _T(0.7, 0.3)}
    for merge_gap, min_length in [(0.0, 0.0), (1.0, 1.0), (3.0, 0.5)]:
        events = detect_events(
            times,
            {"a": scores, "b": other},
            thresholds,
            step_s=0.5,
            merge_gap_s=merge_gap,
            min_length_s=min_length,
        )
        for event in events:
            assert times.index(event.keyframe_s) in kept


class _T:
    def __init__(self, on: float, off: float) -> None:
        self.on, self.off = on, off
