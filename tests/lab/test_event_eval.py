"""``vigil evaluate``: each metric on hand-made timelines where it can go wrong, then the command
end to end on a generated clip with a tiny detector (and a re-score of its own timelines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli.main import main
from lab.datasets import BoxRow, Interval
from lab.event_eval import (
    ClipData,
    EvalEvent,
    EvalFrames,
    EvalTimeline,
    TimelineError,
    alert_times,
    clip_data,
    evaluate,
    fall_onsets,
    load_timeline,
    markdown_report,
    match_greedy,
    merge_spans,
    temporal_iou,
)
from lab.event_eval_boxes import pointing_hit, score_cam, union_boxes
from tests.worker.conftest import TRAIN_EVENTS, TRAIN_SECONDS, event_clip, train_tiny_detector


def timeline(
    duration_s: float,
    events: list[tuple[str, float, float]] = (),  # type: ignore[assignment]
    *,
    fps: float = 5.0,
    scores: dict[str, list[float]] | None = None,
) -> EvalTimeline:
    """A timeline with frames on the grid ``k / fps`` and the given events."""
    times = [k / fps for k in range(round(duration_s * fps))]
    return EvalTimeline(
        duration_s=duration_s,
        fps_analysed=fps,
        events=[EvalEvent(label=label, start_s=s, end_s=e) for label, s, e in events],
        frames=EvalFrames(t_s=times, scores=scores or {}),
    )


def one_clip(tl: EvalTimeline, *intervals: tuple[str, float, float]) -> ClipData:
    return clip_data("c.mp4", tl, [Interval("c.mp4", label, s, e) for label, s, e in intervals])


# ----------------------------------------------------------------------------- frames and AP


def test_frames_are_half_open_and_predicted_from_events() -> None:
    # Truth [1, 2): frames 1.0..1.8 (2.0 is outside); prediction [1.4, 2.4): 1.4..2.2.
    tl = timeline(4.0, [("a", 1.4, 2.4)])
    ev = evaluate({"c.mp4": tl}, [Interval("c.mp4", "a", 1.0, 2.0)], ["a"])
    f = ev.labels["a"].frames
    assert (f.frames, f.positives, f.predicted, f.tp, f.fp, f.fn) == (20, 5, 5, 3, 2, 2)
    assert f.precision == pytest.approx(0.6) and f.recall == pytest.approx(0.6)
    assert f.f1 == pytest.approx(0.6)


def test_ap_from_scores_and_none_for_a_label_without_scores() -> None:
    # Frames 0.0, 0.2, 0.4, 0.6: positives at 0.0 and 0.4 -> AP = 0.5 * 1 + 0.5 * 2/3.
    tl = timeline(0.8, [("b", 0.0, 0.8)], scores={"a": [0.9, 0.8, 0.7, 0.6]})
    labels = [Interval("c.mp4", "a", 0.0, 0.2), Interval("c.mp4", "a", 0.4, 0.6),
              Interval("c.mp4", "b", 0.0, 0.4)]  # fmt: skip
    ev = evaluate({"c.mp4": tl}, labels, ["a", "b"])
    assert ev.labels["a"].ap == pytest.approx(0.5 + 0.5 * 2 / 3) and ev.labels["a"].ap_frames == 4
    b = ev.labels["b"]
    assert b.ap is None and b.ap_frames == 0 and "no per-frame scores" in (b.ap_note or "")
    # Frame metrics for the label without scores still come from its events.
    assert (b.frames.tp, b.frames.fp, b.frames.fn) == (2, 2, 0)


def test_ap_is_none_without_positive_frames() -> None:
    tl = timeline(1.0, scores={"a": [0.1] * 5})
    ev = evaluate({"c.mp4": tl}, [], ["a"])
    assert ev.labels["a"].ap is None and ev.labels["a"].frames.recall is None


# ----------------------------------------------------------------------------- events


def test_temporal_iou_below_threshold_does_not_match() -> None:
    truth = [(0.0, 10.0)]
    assert temporal_iou((0.0, 2.9), truth[0]) == pytest.approx(0.29)
    assert match_greedy([(0.0, 2.9)], truth) == []
    assert match_greedy([(0.0, 3.0)], truth) == [(0, 0)]
    assert temporal_iou((0.0, 1.0), (2.0, 3.0)) == 0.0


def test_event_matching_is_one_to_one_and_greedy_by_iou() -> None:
    # Both predictions overlap the first truth; the better one (IoU 0.8) takes it, the other
    # (IoU 0.4 with truth 0, 0.5 with truth 1) takes the second truth.
    assert match_greedy([(0.0, 4.0), (3.0, 8.0)], [(0.0, 5.0), (5.0, 10.0)]) == [(0, 0), (1, 1)]
    assert match_greedy([(0.0, 4.0), (0.5, 5.0)], [(0.0, 5.0)]) == [(1, 0)]  # 0.8 < 0.9
    assert match_greedy([(0.0, 4.0), (0.5, 4.5)], [(0.0, 5.0)]) == [(0, 0)]  # tie: the first
    tl = timeline(12.0, [("a", 0.0, 4.0), ("a", 6.0, 7.0), ("a", 9.0, 11.0)])
    ev = evaluate({"c.mp4": tl}, [Interval("c.mp4", "a", 0.0, 5.0)], ["a"])
    e = ev.labels["a"].events
    assert (e.labeled, e.predicted, e.matched) == (1, 3, 1)
    assert e.recall == 1.0 and e.precision == pytest.approx(1 / 3)


def test_touching_intervals_of_one_label_are_one_interval() -> None:
    assert merge_spans([(2.0, 3.0), (0.0, 1.0), (1.0, 2.0), (5.0, 6.0)]) == [(0.0, 3.0), (5.0, 6.0)]
    labels = [Interval("c.mp4", "a", 0.0, 1.0), Interval("c.mp4", "a", 1.0, 2.0)]
    ev = evaluate({"c.mp4": timeline(3.0, [("a", 0.0, 2.0)])}, labels, ["a"])
    assert ev.labels["a"].events.labeled == 1 and ev.labels["a"].events.matched == 1


def test_false_alarms_count_only_clips_without_the_label() -> None:
    timelines = {
        "pos.mp4": timeline(30.0, [("a", 1.0, 3.0), ("a", 10.0, 12.0)]),  # one is a false alarm
        "neg1.mp4": timeline(60.0, [("a", 1.0, 2.0), ("a", 5.0, 6.0), ("a", 9.0, 10.0)]),
        "neg2.mp4": timeline(30.0, [("b", 1.0, 2.0)]),
    }
    ev = evaluate(timelines, [Interval("pos.mp4", "a", 1.0, 3.0)], ["a", "b"])
    fa = ev.labels["a"].false_alarms
    assert (fa.events, fa.clips, fa.minutes) == (3, 2, pytest.approx(1.5))
    assert fa.per_minute == pytest.approx(2.0)
    assert ev.labels["b"].false_alarms.per_minute == pytest.approx(1 / 2.0)  # 1 in 2 minutes


# ----------------------------------------------------------------------------- fall alerts


def fall_ev(events: list[tuple[str, float, float]], falls: list[tuple[str, float, float]],
            duration_s: float = 10.0):  # fmt: skip
    labels = [Interval("c.mp4", label, s, e) for label, s, e in falls]
    seen = [("person_present", 0.0, duration_s), *events]  # the person is seen upright first
    return evaluate({"c.mp4": timeline(duration_s, seen)}, labels, ["falling", "fallen"])


@pytest.mark.parametrize(
    ("alert_s", "hit"), [(0.9, False), (1.0, True), (3.0, True), (4.0, True), (4.1, False)]
)
def test_fall_alert_window_is_one_second_before_to_two_after(alert_s: float, hit: bool) -> None:
    fa = fall_ev([("falling", alert_s, alert_s + 1.0)], [("falling", 2.0, 2.5)]).fall_alerts
    assert (fa.falls, fa.hits, fa.misses) == (1, int(hit), int(not hit))
    row = fa.rows[0]
    assert row.onset_s == 2.0 and row.hit is hit
    assert row.delay_s == (pytest.approx(alert_s - 2.0) if hit else None)
    # A missed fall's alert is unmatched, but this clip has a fall: not a fall-free false alert.
    assert fa.unmatched_alerts == int(not hit) and fa.false_alerts == 0
    assert fa.fall_free_minutes == 0.0 and fa.false_alerts_per_fall_free_minute is None


def test_alert_2_5_s_after_onset_is_a_miss() -> None:
    fa = fall_ev([("fallen", 4.5, 9.0)], [("falling", 2.0, 2.5), ("fallen", 2.5, 10.0)]).fall_alerts
    assert fa.falls == 1 and fa.hits == 0 and fa.alerted_within_2s == 0.0
    assert fa.rows[0].alert_s is None and fa.unmatched_alerts == 1


def test_falling_then_fallen_within_one_second_is_one_alert() -> None:
    ev = fall_ev([("falling", 3.0, 3.6), ("fallen", 4.4, 9.0)], [("falling", 3.2, 3.6)])
    fa = ev.fall_alerts
    assert fa.alerts == 1 and fa.hits == 1 and fa.unmatched_alerts == 0
    assert fa.rows[0].delay_s == pytest.approx(-0.2) and fa.median_delay_s == pytest.approx(-0.2)
    # A gap of 1.5 s makes two episodes: the second alert is unmatched.
    fa = fall_ev([("falling", 3.0, 3.6), ("fallen", 5.1, 9.0)], [("falling", 3.2, 3.6)]).fall_alerts
    assert fa.alerts == 2 and fa.hits == 1 and fa.unmatched_alerts == 1


def test_fall_onsets_from_falling_and_from_fallen_alone() -> None:
    tl = timeline(10.0)
    # fallen right after falling: one onset (the falling start)
    assert fall_onsets(one_clip(tl, ("falling", 2.0, 2.5), ("fallen", 2.5, 10.0))) == [
        (2.0, "falling")
    ]
    # fallen 0.9 s after the falling ended is still that fall; 1.5 s after is a new onset
    assert len(fall_onsets(one_clip(tl, ("falling", 2.0, 2.5), ("fallen", 3.4, 10.0)))) == 1
    assert fall_onsets(one_clip(tl, ("falling", 2.0, 2.5), ("fallen", 4.0, 10.0))) == [
        (2.0, "falling"), (4.0, "fallen"),
    ]  # fmt: skip
    # fallen without falling, mid-clip: an onset; fallen from the first frame: not a fall
    assert fall_onsets(one_clip(tl, ("fallen", 3.4, 10.0))) == [(3.4, "fallen")]
    assert fall_onsets(one_clip(tl, ("fallen", 0.0, 10.0))) == []


def test_false_fall_alerts_are_per_fall_free_minute() -> None:
    up = ("person_present", 0.0, 30.0)
    timelines = {
        "fall.mp4": timeline(30.0, [up, ("falling", 2.0, 3.0), ("falling", 20.0, 21.0)]),
        # lying from the start: never seen upright, so no alert (a nurse needs "was up, is down")
        "lying.mp4": timeline(60.0, [("person_present", 0.0, 60.0), ("fallen", 0.0, 60.0)]),
        "walk.mp4": timeline(30.0, [up, ("falling", 5.0, 5.4), ("fallen", 6.0, 9.0)]),
    }
    labels = [Interval("fall.mp4", "falling", 2.2, 2.8), Interval("fall.mp4", "fallen", 2.8, 30.0),
              Interval("lying.mp4", "fallen", 0.0, 60.0)]  # fmt: skip
    fa = evaluate(timelines, labels, ["falling", "fallen"]).fall_alerts
    assert (fa.falls, fa.hits, fa.alerts) == (1, 1, 3)
    assert fa.unmatched_alerts == 2  # fall.mp4 at 20 s, walk.mp4 at 5 s
    assert fa.fall_free_clips == 2 and fa.fall_free_minutes == pytest.approx(1.5)
    assert fa.false_alerts == 1 and fa.false_alerts_per_fall_free_minute == pytest.approx(1 / 1.5)
    assert {(a.clip, a.t_s, a.fall_free_clip) for a in fa.unmatched} == {
        ("fall.mp4", 20.0, False), ("walk.mp4", 5.0, True),
    }  # fmt: skip
    assert alert_times(one_clip(timelines["walk.mp4"])) == [5.0]


def test_a_fall_episode_alerts_only_after_the_person_was_seen_upright() -> None:
    down = ("fallen", 4.0, 10.0)
    assert alert_times(one_clip(timeline(10.0, [("person_present", 0.0, 10.0), down]))) == [4.0]
    # nobody seen before the episode (empty room, then a lying person appears): no alert
    assert alert_times(one_clip(timeline(10.0, [("person_present", 4.0, 10.0), down]))) == []
    # seen, but more than 3 s before the episode: no alert
    assert alert_times(one_clip(timeline(10.0, [("person_present", 0.0, 0.8), down]))) == []


# ------------------------------------------------------------------------- inputs, report, boxes


def test_load_timeline_reads_the_worker_contract_and_rejects_bad_files(tmp_path: Path) -> None:
    from worker.report import Timeline

    contract = Timeline.model_validate({
        "video": "v.mp4", "model": {"version": "m", "classes": ["a"]}, "fps_analysed": 2.0,
        "duration_s": 1.0,
        "events": [{"label": "a", "start_s": 0.0, "end_s": 1.0, "peak_score": 0.9,
                    "mean_score": 0.8, "consistency": None, "keyframe_s": 0.5, "overlay": None}],
        "frames": {"t_s": [0.0, 0.5], "scores": {"a": [0.9, 0.8]}},
    })  # fmt: skip
    good = tmp_path / "good.json"
    good.write_text(contract.model_dump_json())
    tl = load_timeline(good)
    assert tl.model.classes == ["a"] and tl.events[0].end_s == 1.0 and tl.frames.t_s == [0.0, 0.5]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"duration_s": 1.0, "frames": {"t_s": [0.0], "scores": {"a": []}}}))
    with pytest.raises(TimelineError, match="1 frame times"):
        load_timeline(bad)
    # A peer without frame times is scored on a grid at its rate.
    peer = tmp_path / "peer.json"
    peer.write_text(json.dumps({"duration_s": 1.0, "fps_analysed": 4, "events": []}))
    assert clip_data("p", load_timeline(peer), []).times == [0.0, 0.25, 0.5, 0.75]


def test_markdown_has_one_row_per_label() -> None:
    ev = evaluate({"c.mp4": timeline(4.0, [("a", 1.0, 2.0)])}, [], ["a", "b"])
    lines = markdown_report(ev).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:4]] == ["| a", "| b"]
    assert lines[4] == "" and lines[5].startswith("**Fall alerts**")


def test_box_helpers() -> None:
    rows = [BoxRow("c", 1.0, (10, 10, 20, 20), "a"), BoxRow("c", 1.0, (15, 5, 30, 18), "a"),
            BoxRow("c", 2.0, (0, 0, 4, 4), "a")]  # fmt: skip
    assert union_boxes(rows) == {("c", 1.0, "a"): (10, 5, 30, 20), ("c", 2.0, "a"): (0, 0, 4, 4)}
    cam = torch.zeros(40, 60)
    cam[10:20, 30:50] = 0.9
    cam[12, 40] = 2.0
    iou, box, hit = score_cam(cam, (30.0, 10.0, 50.0, 20.0))
    assert box == (40.0, 12.0, 41.0, 13.0) and iou == pytest.approx(1 / 200)  # peak only >= 1.0
    assert hit and not pointing_hit(cam, (0.0, 0.0, 40.0, 40.0))  # column 40 is outside x1=40
    assert score_cam(torch.zeros(5, 5), (0.0, 0.0, 5.0, 5.0))[:2] == (0.0, None)


# ----------------------------------------------------------------------------- end to end

TRUTH = {
    "ward/a.mp4": {"red_square": [(1.0, 3.0)], "blue_square": [(2.5, 5.0)]},
    "ward/b.mp4": {"red_square": [(0.5, 2.5)], "blue_square": []},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A data root with two labeled clips, their labels and boxes, and a tiny detector."""
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    for clip, events in TRUTH.items():
        event_clip(data / clip, events, 6.0)
    labels = root / "labels.csv"
    rows = ["clip,label,start_s,end_s,note"] + [
        f"{clip},{label},{s},{e},generated"
        for clip, events in TRUTH.items() for label, spans in events.items() for s, e in spans
    ]  # fmt: skip
    labels.write_text("\n".join(rows) + "\n")
    boxes = root / "boxes.csv"  # the red square of tests.worker.conftest.two_square_frames
    boxes.write_text("clip,t_s,x0,y0,x1,y1,label\nward/a.mp4,2.0,10,20,42,52,red_square\n"
                     "ward/a.mp4,2.0,12,22,40,50,red_square\nward/b.mp4,1.0,10,20,42,52,red_square\n")
    train = event_clip(root / "train.mp4", TRAIN_EVENTS, TRAIN_SECONDS)
    model = train_tiny_detector(root / "tiny.safetensors", train, steps=8)
    return {"data": data, "labels": labels, "boxes": boxes, "model": model, "root": root}


def test_evaluate_command_end_to_end_and_rescore(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    common = ["--labels", str(setup["labels"]), "--data-root", str(setup["data"]), "--no-progress",
              "--threads", "1"]  # fmt: skip
    status = main(["evaluate", str(setup["model"]), *common, "--boxes", str(setup["boxes"]),
                   "--fps", "5", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "| red_square |" in printed.out and "**Fall alerts**" in printed.out
    for clip in TRUTH:
        assert (out / "timelines" / f"{clip}.json").is_file()
    raw = json.loads((out / "evaluation.json").read_text())
    assert set(raw) == {"source", "classes", "clips", "labels", "fall_alerts", "boxes", "notes"}
    assert raw["source"]["kind"] == "checkpoint" and raw["classes"] == ["red_square", "blue_square"]
    assert [c["clip"] for c in raw["clips"]] == list(TRUTH) and raw["clips"][0]["frames"] == 30
    red = raw["labels"]["red_square"]
    assert set(red) == {"frames", "ap", "ap_frames", "ap_note", "events", "false_alarms", "boxes"}
    assert red["frames"]["frames"] == 60 and red["frames"]["positives"] == 20
    assert red["ap_frames"] == 60 and red["ap"] is not None
    assert red["events"]["labeled"] == 2
    assert raw["labels"]["blue_square"]["false_alarms"]["clips"] == 1  # b.mp4 has no blue
    assert red["boxes"]["boxes"] == 2 and raw["labels"]["blue_square"]["boxes"] is None
    assert {b["clip"] for b in raw["boxes"]} == set(TRUTH)
    assert raw["boxes"][0]["box"] == [10.0, 20.0, 42.0, 52.0]  # the union of a.mp4's two rows
    assert raw["fall_alerts"]["falls"] == 0 and raw["fall_alerts"]["fall_free_clips"] == 2
    assert (out / "evaluation.md").read_text().startswith("| label |")

    again = tmp_path / "again"
    status = main(["evaluate", str(out / "timelines"), *common, "--out", str(again)])
    assert status == 0, capsys.readouterr().err
    peer = json.loads((again / "evaluation.json").read_text())
    assert peer["source"]["kind"] == "timelines"
    for label, metrics in raw["labels"].items():
        assert {**metrics, "boxes": None} == peer["labels"][label]
    assert peer["fall_alerts"] == raw["fall_alerts"] and peer["clips"] == raw["clips"]


def test_evaluate_bad_inputs_fail_with_one_line(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fails(*argv: str) -> str:
        assert main(["evaluate", *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vigil evaluate: ") and "Traceback" not in err
        return err

    data, labels = str(setup["data"]), str(setup["labels"])
    assert "labels file not found" in fails(str(setup["model"]), "--labels", str(tmp_path / "x"),
                                            "--data-root", data)  # fmt: skip
    assert "clip not found under" in fails(str(setup["model"]), "--labels", labels,
                                           "--data-root", str(tmp_path))  # fmt: skip
    assert "neither a checkpoint" in fails(str(tmp_path / "nothing"), "--labels", labels,
                                           "--data-root", data)  # fmt: skip
    peers = tmp_path / "peers" / "ward"
    peers.mkdir(parents=True)
    (peers / "a.mp4.json").write_text(json.dumps({"duration_s": 6.0, "events": []}))
    err = fails(str(tmp_path / "peers"), "--labels", labels, "--data-root", data)
    assert "no timeline for labeled clip ward/b.mp4" in err
    assert "matches no labeled clip" in fails(str(tmp_path / "peers"), "--labels", labels,
                                              "--data-root", data, "--clips", "x/*")  # fmt: skip
    # --clips narrows the set: with only a.mp4 the peer directory is complete.
    assert main(["evaluate", str(tmp_path / "peers"), "--labels", labels, "--data-root", data,
                 "--clips", "ward/a*", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert [c["clip"] for c in json.loads((tmp_path / "o/evaluation.json").read_text())["clips"]] \
        == ["ward/a.mp4"]  # fmt: skip
