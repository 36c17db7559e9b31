"""``vigil analyze`` outputs: ``timeline.json`` (the contract) and a self-contained ``report.html``.

``report.html`` makes no external request: styles are inline, the timeline plot is inline SVG
and each event card embeds its overlay JPEG as a data URI (the file still opens after being
mailed or moved without its ``overlays/`` folder).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from worker.pipeline import SegmentEvent, SegmentResult

OVERLAY_DIRNAME = "overlays"
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


class TimelineModel(BaseModel):
    """``model`` in ``timeline.json``."""

    model_config = ConfigDict(extra="forbid")
    version: str
    classes: list[str]


class TimelineEvent(BaseModel):
    """One entry of ``events`` in ``timeline.json``; ``overlay`` is relative to the output dir."""

    model_config = ConfigDict(extra="forbid")
    label: str
    start_s: float
    end_s: float
    peak_score: float
    mean_score: float
    consistency: float | None
    keyframe_s: float
    overlay: str | None


class TimelineFrames(BaseModel):
    """``frames`` in ``timeline.json``: ``scores[label][i]`` belongs to ``t_s[i]``."""

    model_config = ConfigDict(extra="forbid")
    t_s: list[float]
    scores: dict[str, list[float]]


class Timeline(BaseModel):
    """The ``timeline.json`` contract of issue 4 (exactly these keys)."""

    model_config = ConfigDict(extra="forbid")
    video: str
    model: TimelineModel
    fps_analysed: float
    duration_s: float
    events: list[TimelineEvent]
    frames: TimelineFrames


def timeline_from_result(result: SegmentResult) -> Timeline:
    """The contract view of an analysis (overlay names become ``overlays/<name>``)."""
    events = [
        TimelineEvent(
            **e.model_dump(exclude={"overlay"}),
            overlay=f"{OVERLAY_DIRNAME}/{e.overlay}" if e.overlay else None,
        )
        for e in result.events
    ]
    return Timeline(
        video=result.video,
        model=TimelineModel(version=result.model_version, classes=result.classes),
        fps_analysed=result.fps_analysed,
        duration_s=result.duration_s,
        events=events,
        frames=TimelineFrames(t_s=result.frames.t_s, scores=result.frames.scores),
    )


def write_outputs(result: SegmentResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``timeline.json`` and ``report.html`` into ``out_dir`` (overlays are already in
    ``out_dir/overlays``, written by the pipeline). Returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timeline = timeline_from_result(result)
    json_path = out / "timeline.json"
    json_path.write_text(timeline.model_dump_json(indent=1), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(render_html(result, out / OVERLAY_DIRNAME), encoding="utf-8")
    return json_path, html_path


def render_html(result: SegmentResult, overlay_dir: Path) -> str:
    """The whole report page as one string."""
    colours = {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(result.classes)}
    name = html.escape(Path(result.video).name)
    warning = ""
    if result.truncation is not None:
        warning = f'<p class="warn">Incomplete file: {html.escape(result.truncation.message)}.</p>'
    cards = "\n".join(_card(i, e, colours, overlay_dir) for i, e in enumerate(result.events))
    summary = (
        f"{len(result.events)} event(s) in {result.duration_s:.1f} s of video, analysed at "
        f"{result.fps_analysed:g} frames/s ({len(result.frames.t_s)} frames) with model "
        f"<code>{html.escape(result.model_version)}</code>."
    )
    return _PAGE.format(
        title=name,
        summary=summary,
        warning=warning,
        plot=timeline_svg(result, colours),
        cards=cards or "<p>No events.</p>",
    )


def timeline_svg(result: SegmentResult, colours: dict[str, str], width: int = 960) -> str:
    """Inline SVG: score curves per label with their ``on`` thresholds (dashed) above one lane of
    event bars per label."""
    longest = max((len(c) for c in result.classes), default=0)
    left, right, top, plot_h, lane_h = max(44, 7 * longest + 14), 12, 10, 160, 18
    lanes_top = top + plot_h + 28
    height = lanes_top + lane_h * len(result.classes) + 8
    span = max(result.duration_s, 1e-6)

    def x(t: float) -> float:
        return left + (width - left - right) * min(max(t / span, 0.0), 1.0)

    def y(score: float) -> float:
        return top + plot_h * (1.0 - score)

    parts = [_axes(left, width - right, top, plot_h, span, x)]
    for label in result.classes:
        on = result.thresholds[label].on if label in result.thresholds else None
        if on is not None:  # where an event opens
            parts.append(
                f'<line x1="{left}" x2="{width - right}" y1="{y(on):.1f}" y2="{y(on):.1f}" '
                f'stroke="{colours[label]}" stroke-dasharray="4 4" stroke-width="1">'
                f"<title>{html.escape(label)}: on threshold {on:.2f}</title></line>"
            )
        points = " ".join(
            f"{x(t):.1f},{y(s):.1f}"
            for t, s in zip(result.frames.t_s, result.frames.scores[label], strict=True)
        )
        parts.append(
            f'<polyline fill="none" stroke="{colours[label]}" stroke-width="1.5" points="{points}">'
            f"<title>{html.escape(label)}</title></polyline>"
        )
    for row, label in enumerate(result.classes):
        lane_y = lanes_top + row * lane_h
        parts.append(
            f'<text x="{left - 4}" y="{lane_y + 12}" text-anchor="end" class="lane" '
            f'style="fill:{colours[label]}">'
            f"{html.escape(label)}</text>"
        )
        for i, e in enumerate(result.events):
            if e.label != label:
                continue
            parts.append(
                f'<a href="#event-{i}"><rect x="{x(e.start_s):.1f}" y="{lane_y}" '
                f'width="{max(2.0, x(e.end_s) - x(e.start_s)):.1f}" height="{lane_h - 4}" '
                f'fill="{colours[label]}"><title>{html.escape(label)} {e.start_s:.1f}-'
                f"{e.end_s:.1f} s, peak {e.peak_score:.2f}</title></rect></a>"
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="scores and events over time">{"".join(parts)}</svg>'
    )


def _axes(
    x0: float, x1: float, top: float, plot_h: float, span: float, x: Callable[[float], float]
) -> str:
    ticks = []
    step = _tick_step(span)
    t = 0.0
    while t <= span + 1e-9:
        ticks.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + plot_h}" class="grid"/>'
            f'<text x="{x(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{t:g}s</text>'
        )
        t += step
    for s in (0.0, 0.5, 1.0):
        yy = top + plot_h * (1 - s)
        ticks.append(
            f'<line x1="{x0}" x2="{x1}" y1="{yy}" y2="{yy}" class="grid"/>'
            f'<text x="{x0 - 4}" y="{yy + 4}" text-anchor="end">{s:g}</text>'
        )
    return "".join(ticks)


def _tick_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 12:
            return float(step)
    return 7200.0


def _card(index: int, event: SegmentEvent, colours: dict[str, str], overlay_dir: Path) -> str:
    image = '<div class="noimg">no overlay</div>'
    if event.overlay:
        path = overlay_dir / event.overlay
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            image = (
                f'<img src="data:image/jpeg;base64,{data}" '
                f'alt="Grad-CAM overlay of {html.escape(event.label)} at {event.keyframe_s:.1f} s">'
            )
    consistency = "n/a" if event.consistency is None else f"{event.consistency:.2f}"
    return (
        f'<article class="card" id="event-{index}">{image}<div class="meta">'
        f'<h3 style="border-color:{colours[event.label]}">{html.escape(event.label)}</h3>'
        f"<p>{event.start_s:.1f} s – {event.end_s:.1f} s ({event.end_s - event.start_s:.1f} s)</p>"
        f"<p>peak {event.peak_score:.2f} · mean {event.mean_score:.2f}</p>"
        f"<p>key frame {event.keyframe_s:.1f} s · attention consistency {consistency}</p>"
        "</div></article>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vigil report: {title}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
.warn {{ background: #fff3cd; border: 1px solid #e0b000; padding: 8px; }}
svg {{ width: 100%; height: auto; background: #fafafa; border: 1px solid #ddd; }}
svg text {{ font-size: 11px; fill: #555; }} svg .lane {{ font-size: 11px; fill: #222; }}
svg .grid {{ stroke: #e4e4e4; stroke-width: 1; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 16px;
  margin-top: 16px; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; overflow: hidden; background: #fff; }}
.card img {{ width: 100%; display: block; }}
.noimg {{ padding: 40px; text-align: center; color: #888; }}
.meta {{ padding: 8px 12px; }} .meta p {{ margin: 2px 0; font-size: 13px; }}
.meta h3 {{ margin: 0 0 4px; font-size: 16px; border-left: 6px solid; padding-left: 6px; }}
</style></head>
<body>
<h1>Vigil report: {title}</h1>
<p>{summary}</p>
{warning}
{plot}
<section class="cards">
{cards}
</section>
</body></html>
"""


__all__ = [
    "Timeline",
    "TimelineEvent",
    "render_html",
    "timeline_from_result",
    "timeline_svg",
    "write_outputs",
]
