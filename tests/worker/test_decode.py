"""Decoding: PTS sampling (CFR, VFR, non-zero start), scaling, seeking, and every failure code."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.clips import solid_frames, write_clip
from tests.worker.conftest import remux, remux_faststart
from worker.decode import (
    DecodeError,
    DecodeOptions,
    VideoDecoder,
    VideoLimits,
    decode_frames,
    read_frame_at,
    scaled_size,
)
from worker.probe import probe


def ramp_frames(height: int = 48, width: int = 64, fps: int = 10):
    """Frame ``i`` (at ``i / fps``) is grey level ``8 * i``: the content tells which frame it is."""
    return lambda t: np.full((height, width, 3), min(255, 8 * round(t * fps)), dtype=np.uint8)


def grey_level(frame) -> float:
    return float(frame.float().mean())


def write_vfr(path: Path, times: list[float]) -> Path:
    """H.264/MP4 with frames at the given times (ms time base); frame i has grey level 20 * i."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast", "crf": "10"}
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_noise(path: Path, seconds: float = 3.0, fps: int = 10) -> Path:
    """Incompressible frames, so that the file has a real payload to cut."""
    rng = np.random.default_rng(1)
    frames = [
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(round(seconds * fps))
    ]
    return write_clip(
        path, seconds, fps=fps, frame_fn=lambda t: frames[round(t * fps) % len(frames)]
    )


def test_samples_by_pts_at_the_analysis_rate(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", 3.0, fps=10, frame_fn=ramp_frames())
    samples = decode_frames(clip, DecodeOptions(fps=2.0))
    assert [s.t_s for s in samples] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert [s.index for s in samples] == list(range(6))
    for s in samples:  # the frame shown at t is frame round(t * 10)
        assert s.frame.shape == (3, 48, 64) and s.frame.dtype.is_floating_point is False
        assert grey_level(s.frame) == pytest.approx(8 * round(s.t_s * 10), abs=3)
    three = decode_frames(clip, DecodeOptions(fps=3.0))  # 1/3 s targets fall between frames
    assert [round(s.t_s, 3) for s in three] == [0.0, 0.4, 0.7, 1.0, 1.4, 1.7, 2.0, 2.4, 2.7]


@pytest.mark.parametrize("start", [7.0, 0.1, 0.3, 1.7])  # non-dyadic starts: exact arithmetic
def test_stream_not_starting_at_zero(tmp_path: Path, start: float) -> None:
    clip = write_clip(tmp_path / "late.mp4", 2.0, fps=10, frame_fn=ramp_frames(), start_pts_s=start)
    with VideoDecoder(clip, DecodeOptions(fps=2.0)) as video:
        samples = list(video)
        assert video.info.start_s == pytest.approx(start)
    assert [s.t_s for s in samples] == [0.0, 0.5, 1.0, 1.5]
    assert grey_level(samples[1].frame) == pytest.approx(8 * 5, abs=3)


def test_variable_frame_rate_takes_first_frame_at_or_after_each_target(tmp_path: Path) -> None:
    times = [0.0, 0.1, 0.15, 0.7, 0.75, 2.3, 2.35, 2.9]
    clip = write_vfr(tmp_path / "vfr.mp4", times)
    samples = decode_frames(clip, DecodeOptions(fps=2.0))
    # targets 0, 0.5, 1.0 (-> 2.3, which also covers 1.5 and 2.0), 2.5 (-> 2.9)
    assert [s.t_s for s in samples] == [0.0, 0.7, 2.3, 2.9]
    for s in samples:
        assert grey_level(s.frame) == pytest.approx(20 * times.index(s.t_s), abs=3)


def test_only_sampled_frames_are_scaled_to_max_side(tmp_path: Path) -> None:
    clip = write_clip(
        tmp_path / "c.mp4", 1.0, fps=10, frame_fn=solid_frames(96, 128, (200, 30, 90))
    )
    small = decode_frames(clip, DecodeOptions(fps=2.0, max_side=64))
    assert small[0].frame.shape == (3, 48, 64)
    assert small[0].frame.float().mean(dim=(1, 2)).tolist() == pytest.approx([200, 30, 90], abs=4)
    full = decode_frames(clip, DecodeOptions(fps=2.0, max_side=None))
    assert full[0].frame.shape == (3, 96, 128)
    assert scaled_size(1080, 1920, 640) == (360, 640)
    assert scaled_size(48, 64, 640) == (48, 64)


def test_read_frame_at_seeks(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", 3.0, fps=10, frame_fn=ramp_frames())
    sample = read_frame_at(clip, 2.3)
    assert sample.t_s == pytest.approx(2.3)
    assert grey_level(sample.frame) == pytest.approx(8 * 23, abs=3)
    with pytest.raises(ValueError, match="no frame"):
        read_frame_at(clip, 9.0)


@pytest.mark.parametrize(
    ("container_format", "suffix", "duration"),
    [("matroska", "mkv", 3.0), ("mpegts", "ts", 3.0), ("h264", "h264", None)],
)
def test_other_containers_and_raw_h264(
    tmp_path: Path, container_format: str, suffix: str, duration: float | None
) -> None:
    clip = write_clip(tmp_path / "c.mp4", 3.0, fps=10, frame_fn=ramp_frames(), start_pts_s=5.0)
    other = remux(clip, tmp_path / f"c.{suffix}", container_format)
    info = probe(other)
    assert info.duration_s == (pytest.approx(duration) if duration else None)
    assert info.fps == pytest.approx(10.0)  # raw H.264: from the bitstream's timing info
    with VideoDecoder(other) as video:
        samples = list(video)  # raw H.264 has no timestamps: timed by frame durations
        assert video.truncation is None
    assert [s.t_s for s in samples] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert grey_level(samples[3].frame) == pytest.approx(8 * 15, abs=3)


def test_duration_limit_is_enforced_while_decoding(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", 3.0, fps=10)
    raw = remux(clip, tmp_path / "c.h264", "h264")  # no duration in the header
    probe(raw, VideoLimits(max_duration_s=1.0))  # the header cannot tell
    with pytest.raises(DecodeError) as info:
        decode_frames(raw, DecodeOptions(limits=VideoLimits(max_duration_s=1.0)))
    assert info.value.code == "too_long"


@pytest.mark.parametrize("thread_type", ["FRAME", "AUTO", "NONE"])
def test_threading_modes_give_the_same_samples(tmp_path: Path, thread_type: str) -> None:
    clip = write_clip(tmp_path / "c.mp4", 2.0, fps=10, frame_fn=ramp_frames())
    reference = decode_frames(clip, DecodeOptions(fps=2.0))
    other = decode_frames(clip, DecodeOptions(fps=2.0, thread_type=thread_type))  # type: ignore[arg-type]
    assert [s.t_s for s in other] == [s.t_s for s in reference]
    assert all(a.frame.equal(b.frame) for a, b in zip(other, reference, strict=True))


def _codes(path: Path, limits: VideoLimits | None = None) -> tuple[str, str]:
    """The DecodeError code from probe() and from decoding."""
    codes = []
    for action in (
        lambda: probe(path, limits),
        lambda: decode_frames(path, DecodeOptions(limits=limits or VideoLimits())),
    ):
        with pytest.raises(DecodeError) as info:
            action()
        codes.append(info.value.code)
    return codes[0], codes[1]


def test_empty_text_and_audio_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    audio = tmp_path / "audio.m4a"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert _codes(empty) == ("empty_file", "empty_file")
    assert _codes(text) == ("undecodable", "undecodable")
    assert _codes(audio) == ("no_video_stream", "no_video_stream")


def test_truncated_mp4_without_index(tmp_path: Path) -> None:
    clip = write_noise(tmp_path / "full.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    assert _codes(cut) == ("truncated", "truncated")


def test_truncated_stream_decodes_what_it_can(tmp_path: Path) -> None:
    clip = remux_faststart(write_noise(tmp_path / "full.mp4"), tmp_path / "fast.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: int(clip.stat().st_size * 0.6)])
    assert probe(cut).duration_s == pytest.approx(3.0)  # the header still promises 3 s
    with VideoDecoder(cut, DecodeOptions(fps=2.0)) as video:
        samples = list(video)
    assert video.truncation is not None and video.truncation.code == "truncated"
    stopped = video.truncation.stopped_at_s
    assert stopped is not None and 0.5 < stopped < 2.5
    assert samples and samples[-1].t_s <= stopped
    with pytest.raises(DecodeError) as info:
        decode_frames(cut)
    assert info.value.code == "truncated"


def test_limits(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", 3.0, fps=10)
    assert _codes(clip, VideoLimits(max_pixels=100 * 90)) == ("too_large", "too_large")
    assert _codes(clip, VideoLimits(max_duration_s=2.0)) == ("too_long", "too_long")
    probe(clip, VideoLimits(max_pixels=128 * 96, max_duration_s=3.0))  # at the limit: accepted


def test_unsupported_codec(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", 1.0, fps=10)
    unknown = tmp_path / "unknown.mp4"  # same file, the H.264 sample entry renamed to "zzzz"
    unknown.write_bytes(clip.read_bytes().replace(b"avc1", b"zzzz"))
    assert _codes(unknown) == ("unsupported_codec", "unsupported_codec")


def test_probe_reports_header_facts(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", 2.0, fps=10, start_pts_s=1.5)
    info = probe(clip)
    assert (info.width, info.height, info.codec) == (128, 96, "h264")
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(2.0)
    assert info.start_s == pytest.approx(1.5)


def test_probe_module_does_not_import_torch() -> None:
    code = "import sys, worker.probe; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
