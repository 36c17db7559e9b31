"""``vigil analyze``: the three outputs and their contract, and a one-line reason on bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli.main import main
from tests.worker.conftest import event_clip, remux_faststart
from worker.report import Timeline

TRUTH = {"red_square": [(1.0, 3.0)], "blue_square": [(2.5, 5.0)]}
CONTRACT_KEYS = {"video", "model", "fps_analysed", "duration_s", "events", "frames"}
EVENT_KEYS = {
    "label", "start_s", "end_s", "peak_score", "mean_score", "consistency", "keyframe_s", "overlay",
}  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return event_clip(tmp_path_factory.mktemp("analyze") / "ward.mp4", TRUTH, 6.0)


def test_writes_timeline_overlays_and_report(
    clip: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(["analyze", str(clip), "--model", str(tiny_checkpoint), "--fps", "2",
                   "--out", str(out), "--no-progress"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    raw = json.loads((out / "timeline.json").read_text())
    assert set(raw) == CONTRACT_KEYS and set(raw["model"]) == {"version", "classes"}
    assert set(raw["frames"]) == {"t_s", "scores"}
    assert all(set(e) == EVENT_KEYS for e in raw["events"])
    timeline = Timeline.model_validate(raw)
    assert timeline.model.classes == ["red_square", "blue_square"]
    assert timeline.fps_analysed == 2.0 and timeline.duration_s == pytest.approx(6.0)
    assert len(timeline.frames.t_s) == 12 == len(timeline.frames.scores["blue_square"])
    found = sorted((e.label, e.start_s, e.end_s) for e in timeline.events)
    assert [label for label, *_ in found] == ["blue_square", "red_square"]
    for event in timeline.events:
        truth = TRUTH[event.label][0]
        assert abs(event.start_s - truth[0]) <= 0.5 and abs(event.end_s - truth[1]) <= 0.5
        assert event.overlay is not None and (out / event.overlay).read_bytes()[:2] == b"\xff\xd8"
    page = (out / "report.html").read_text()
    assert (
        page.count('class="card"') == len(timeline.events) == page.count("data:image/jpeg;base64,")
    )
    assert "<svg" in page and page.count("<polyline") == 2
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?https?:""", page)
    assert external == []  # self-contained: no external request


def test_default_model_is_the_recipe_detector(
    clip: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli.analyze

    calls: list[bool] = []

    def fake_default(*, progress: bool) -> Path:
        calls.append(progress)
        return tiny_checkpoint

    monkeypatch.setattr(cli.analyze, "_default_model", fake_default)
    assert main(["analyze", str(clip), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert calls == [False]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"", "empty_file"), (b"hello, not a video\n" * 10, "undecodable"), (None, "undecodable")],
)
def test_bad_input_exits_non_zero_with_one_line(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    content: bytes | None, code: str,
) -> None:  # fmt: skip
    video = tmp_path / "bad.mp4"
    if content is not None:
        video.write_bytes(content)
    status = main(["analyze", str(video), "--model", str(tiny_checkpoint),
                   "--out", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    assert status == 2
    assert _one_line_error(capsys).startswith(f"vigil analyze: {code}:")
    assert not (tmp_path / "o" / "timeline.json").exists()


def test_bad_model_and_bad_option(
    clip: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_model = tmp_path / "m.safetensors"
    not_a_model.write_text("nope")
    assert main(["analyze", str(clip), "--model", str(not_a_model), "--no-progress"]) == 2
    assert "cannot load the model" in _one_line_error(capsys)
    assert main(["analyze", str(clip), "--model", str(tiny_checkpoint), "--fps", "0"]) == 2
    assert "invalid fps" in _one_line_error(capsys)
    assert main(["analyze", str(clip), "--model", str(tiny_checkpoint), "--device", "tpu9"]) == 2
    assert "cannot use device 'tpu9'" in _one_line_error(capsys)


def test_truncated_input_writes_partial_report_and_exits_3(
    clip: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fast = remux_faststart(clip, tmp_path / "fast.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.6)])
    out = tmp_path / "o"
    status = main(["analyze", str(cut), "--model", str(tiny_checkpoint), "--out", str(out),
                   "--no-progress"])  # fmt: skip
    assert status == 3
    assert "truncated" in capsys.readouterr().err
    assert Timeline.model_validate_json((out / "timeline.json").read_text()).duration_s < 6.0
    assert "Incomplete file" in (out / "report.html").read_text()
