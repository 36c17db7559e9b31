// Event page: what was detected, its explanation overlays, the video from the event's start,
// the per-frame score curve, and labeling from the player.

import { json } from "./api.js";
import { fmtDateTime, fmtDuration, fmtNumber, fmtTime, h, labelColor, mount, ms } from "./dom.js";
import { ScoreChart } from "./chart.js";
import { openLabelDialog } from "./labels.js";
import { OverlayPanel } from "./overlay.js";
import { SegmentPlayer } from "./player.js";
import { CONSISTENCY_HELP, consistencyWords } from "./timeline-view.js";

// Seconds of scores before and after the event in the chart (GET /v1/events/{id}?context_s=), so
// the curve shows the score rising to the on threshold and falling below the off threshold.
export const CONTEXT_S = 10;

export async function render(main, { args, session }) {
  const eventId = args[0];
  document.title = "Event · Vigil";
  mount(main, h("section", { class: "page" }, h("p", { class: "muted", role: "status" }, "Loading the event…")));
  let detail;
  try {
    detail = await json(`/v1/events/${encodeURIComponent(eventId)}?context_s=${CONTEXT_S}`);
  } catch (err) {
    mount(main, h("section", { class: "page" }, h("h1", {}, "Event not available"),
      h("p", { role: "alert" }, err.message), h("p", {}, h("a", { href: "#/streams" }, "Back to the streams"))));
    return null;
  }
  const page = new EventPage(main, detail, session);
  page.start();
  return () => page.destroy();
}

/** Thresholds of the event's label when the API provides them ({on, off}), else null. */
function thresholdsOf(detail) {
  const th = detail.thresholds;
  if (!th) return null;
  const t = th[detail.label] ?? th;
  return Number.isFinite(t?.on) && Number.isFinite(t?.off) ? { on: t.on, off: t.off } : null;
}

class EventPage {
  constructor(main, detail, session) {
    this.detail = detail;
    this.session = session;
    this.start_ = ms(detail.start);
    this.end_ = ms(detail.end);
    this.keyframe = ms(detail.keyframe?.time) || this.start_;
    this.marks = { start: this.start_, end: this.end_ };
    document.title = `${detail.label} at ${fmtTime(this.start_)} · Vigil`;
    const overlayBox = h("div", { class: "card" });
    const playerBox = h("div", { class: "card" });
    const chartBox = h("div", {});
    this.markOut = h("p", { class: "muted small", id: "marks", role: "status" });
    mount(main, h("section", { class: "page", "aria-labelledby": "ev-title", dataset: { eventId: detail.event_id } },
      this.header(),
      h("div", { class: "event-grid" },
        h("section", { "aria-labelledby": "ov-title" }, h("h2", { id: "ov-title" }, "Explanation"), overlayBox),
        h("section", { "aria-labelledby": "vid-title" }, h("h2", { id: "vid-title" }, "Video"), playerBox,
          session.canLabel ? this.labelTools() : null)),
      h("section", { "aria-labelledby": "sc-title" }, h("h2", { id: "sc-title" }, "Scores per frame"),
        h("div", { class: "card" }, chartBox, this.chartNote()))));
    this.overlay = new OverlayPanel(overlayBox, { eventId: detail.event_id, keyframeMs: this.keyframe });
    this.player = new SegmentPlayer(playerBox, {
      segmentIds: detail.segment_ids || [], eventStart: this.start_, eventEnd: this.end_,
      onTime: (t) => this.chart?.setPlayhead(t),
    });
    const frames = (detail.frames || []).map((f) => ({ t: ms(f.time), scores: f.scores || {} }));
    this.chart = frames.length ? new ScoreChart(chartBox, {
      frames, label: detail.label, eventStart: this.start_, eventEnd: this.end_,
      thresholds: thresholdsOf(detail), onSeek: (t) => this.player.seekWall(t),
    }) : (mount(chartBox, h("p", { class: "muted" }, "No per-frame scores were stored for this event.")), null);
  }

  header() {
    const d = this.detail;
    const around = (this.end_ - this.start_) * 3 + 20000;
    const back = `#/streams/${encodeURIComponent(d.stream_id)}?start=${Math.round(this.start_ - around)}&end=${Math.round(this.end_ + around)}`;
    return h("div", { class: "page-head" },
      h("div", {},
        h("p", { class: "crumbs" }, h("a", { href: "#/streams" }, "Streams"), " / ",
          h("a", { href: back, id: "back-to-timeline" }, d.stream_id), " /"),
        h("h1", { id: "ev-title" }, h("span", { class: "dot dot-lg", style: `background:${labelColor(d.label)}` }),
          `${d.label} `, h("span", { class: "muted" }, `at ${fmtDateTime(this.start_)}`),
          d.open ? h("span", { class: "badge badge-open", title: "Still going on at the end of the latest video; it may grow." }, "open") : null)),
      h("dl", { class: "facts" },
        fact("Duration", fmtDuration((this.end_ - this.start_) / 1000)),
        fact("Peak score", fmtNumber(d.peak_score)),
        fact("Mean score", fmtNumber(d.mean_score)),
        fact("Consistency", h("span", { title: CONSISTENCY_HELP, class: `consistency c-${consistencyWords(d.consistency).replace(" ", "-")}` },
          `${fmtNumber(d.consistency)} (${consistencyWords(d.consistency)})`)),
        fact("Model", h("span", { class: "mono" }, d.model_version))));
  }

  chartNote() {
    return thresholdsOf(this.detail)
      ? h("p", { class: "help", id: "threshold-help" }, `Dashed lines: the event starts when the score rises above ‘on’ and ends when it falls below ‘off’. The shaded band is the event, with up to ${CONTEXT_S} s before and after. Click the chart to move the video there.`)
      : h("p", { class: "help", id: "no-thresholds" }, "The API did not report this model's thresholds, so they are not drawn. Click the chart to move the video there.");
  }

  labelTools() {
    const setMark = (which) => {
      const t = this.player.wallTime();
      if (Number.isFinite(t)) this.marks[which] = t;
      this.showMarks();
    };
    this.showMarks();
    return h("div", { class: "card label-tools", role: "group", "aria-labelledby": "lt-title" },
      h("h3", { id: "lt-title" }, "Label from the player"),
      h("div", { class: "row" },
        h("button", { type: "button", class: "btn", id: "mark-start", onclick: () => setMark("start") }, "Mark start here"),
        h("button", { type: "button", class: "btn", id: "mark-end", onclick: () => setMark("end") }, "Mark end here"),
        h("button", { type: "button", class: "btn btn-primary", id: "label-marked", onclick: () => this.label() }, "Label this interval…"),
        h("button", { type: "button", class: "btn", id: "explain-frame", onclick: () => this.explainFrame() }, "Explain the frame on screen")),
      this.markOut);
  }

  showMarks() {
    this.markOut.textContent = `Interval: ${fmtTime(this.marks.start)} – ${fmtTime(this.marks.end)} (defaults to the event).`;
  }

  async label() {
    let { start, end } = this.marks;
    if (end < start) [start, end] = [end, start];
    await openLabelDialog({ streamId: this.detail.stream_id, startMs: start, endMs: end,
      knownLabels: [this.detail.label], suggested: this.detail.label });
  }

  explainFrame() {
    const t = this.player.wallTime();
    if (!Number.isFinite(t)) return;
    if (t < this.start_ || t > this.end_) {
      // The API explains frames of the event only (422 time_out_of_range otherwise).
      this.overlay.status.textContent = "Move the video into the event's interval to explain a frame.";
      return;
    }
    this.overlay.setTime(t).then(() => this.rawFrameAt(t));
  }

  async rawFrameAt(t) {
    try {
      this.overlay.setRawFrame(await this.player.grabFrame(t));
    } catch {
      this.overlay.setRawFrame(null);
    }
  }

  async start() {
    const overlayDone = this.overlay.load();
    try {
      await this.player.start();
      await this.rawFrameAt(this.keyframe);
    } catch (err) {
      this.player.status.textContent = `Could not load the video: ${err.message}`;
      this.overlay.setRawFrame(null);
    }
    await overlayDone;
  }

  destroy() {
    this.overlay.destroy();
    this.player.destroy();
    this.chart?.destroy();
  }
}

function fact(name, value) {
  return h("div", {}, h("dt", {}, name), h("dd", {}, value));
}
