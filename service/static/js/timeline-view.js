// The timeline drawing: one lane per label, events as bars over wall-clock time (SVG).
//
// Interaction: wheel or +/- zooms around the pointer, drag or arrow keys pan, "0" fits the data;
// in marking mode (or with Shift held) a drag selects an interval for a clinician label.

import { fmtDuration, fmtNumber, fmtTime, h, labelColor, mount, s, TIME_ZONE } from "./dom.js";

const LANE_H = 44;
const AXIS_H = 30;
const LEFT = 150;
const RIGHT = 16;
const MIN_SPAN_MS = 2000;
const MAX_SPAN_MS = 31 * 86400e3;
const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
  21600, 43200, 86400, 172800, 604800].map((x) => x * 1000);

/** Bar opacity from ATCON consistency in [-1, 1]: agreement is solid, disagreement is faint. */
export function consistencyOpacity(c) {
  if (c === null || c === undefined) return 0.75;
  return 0.3 + 0.7 * Math.max(0, Math.min(1, c));
}

/** Words for a consistency value, used in tooltips, badges and the legend. */
export function consistencyWords(c) {
  if (c === null || c === undefined) return "not computed";
  if (c >= 0.6) return "high";
  if (c >= 0.3) return "medium";
  return "low";
}

export const CONSISTENCY_HELP =
  "Consistency is the agreement (Pearson correlation, −1 to 1) between two explanations of the " +
  "model's decision: Grad-CAM and Guided Backprop. High means both point at the same region of " +
  "the frame; low means they disagree, so check the overlay before trusting the alert.";

export function eventSummary(ev) {
  const dur = (ev._end - ev._start) / 1000;
  return `${ev.label}, ${fmtTime(ev._start)} to ${fmtTime(ev._end)} (${fmtDuration(dur)})` +
    `, peak score ${fmtNumber(ev.peak_score)}, consistency ${fmtNumber(ev.consistency)} ` +
    `(${consistencyWords(ev.consistency)})${ev.open ? ", open: still growing" : ""}`;
}

export class TimelineView {
  /**
   * @param {HTMLElement} container
   * @param {{onOpen(ev), onSelect(startMs, endMs), onView(startMs, endMs)}} callbacks
   */
  constructor(container, callbacks) {
    this.cb = callbacks;
    this.events = [];
    this.labels = [];
    this.lanes = [];
    this.view = { start: Date.now() - 3600e3, end: Date.now() };
    this.marking = false;
    this.selection = null;
    this.width = 800;
    this.tooltip = h("div", { class: "tooltip", role: "tooltip", id: "timeline-tooltip", hidden: true });
    this.svg = s("svg", {
      class: "timeline-svg", id: "timeline", tabindex: "0", role: "group",
      "aria-roledescription": "timeline",
      "aria-label": `Timeline. Times in ${TIME_ZONE}. Arrow keys pan, plus and minus zoom, 0 fits all events; Tab moves through the events.`,
    });
    this.wrap = h("div", { class: "timeline-wrap" }, this.svg, this.tooltip);
    mount(container, this.wrap);
    this.bindPointer();
    this.bindKeys();
    this.resizeObserver = new ResizeObserver(() => this.render());
    this.resizeObserver.observe(this.wrap);
  }

  destroy() {
    this.resizeObserver.disconnect();
  }

  setData({ events, labels, lanes }) {
    this.events = events;
    this.labels = labels;
    this.lanes = lanes;
    this.render();
  }

  setView(start, end, { notify = true } = {}) {
    let span = Math.min(MAX_SPAN_MS, Math.max(MIN_SPAN_MS, end - start));
    const mid = (start + end) / 2;
    if (end - start !== span) [start, end] = [mid - span / 2, mid + span / 2];
    this.view = { start, end };
    this.render();
    if (notify) this.cb.onView?.(start, end);
  }

  setMarking(on) {
    this.marking = on;
    this.svg.classList.toggle("marking", on);
  }

  clearSelection() {
    this.selection = null;
    this.render();
  }

  /** Fit the view to the events and labels (with a margin), or keep it when there are none. */
  fit() {
    const items = [...this.events, ...this.labels];
    if (!items.length) return;
    const lo = Math.min(...items.map((e) => e._start));
    const hi = Math.max(...items.map((e) => e._end));
    const pad = Math.max((hi - lo) * 0.08, 2000);
    this.setView(lo - pad, hi + pad);
  }

  zoom(factor, centerMs = (this.view.start + this.view.end) / 2) {
    const { start, end } = this.view;
    this.setView(centerMs - (centerMs - start) * factor, centerMs + (end - centerMs) * factor);
  }

  pan(fraction) {
    const shift = (this.view.end - this.view.start) * fraction;
    this.setView(this.view.start + shift, this.view.end + shift);
  }

  // --- geometry -------------------------------------------------------------------------------

  x(msValue) {
    const { start, end } = this.view;
    return LEFT + ((msValue - start) / (end - start)) * (this.width - LEFT - RIGHT);
  }

  timeAt(px) {
    const { start, end } = this.view;
    return start + ((px - LEFT) / (this.width - LEFT - RIGHT)) * (end - start);
  }

  // --- drawing --------------------------------------------------------------------------------

  render() {
    this.width = Math.max(480, this.wrap.clientWidth || 800);
    const height = AXIS_H + Math.max(1, this.lanes.length) * LANE_H + 8;
    const svg = this.svg;
    svg.setAttribute("width", this.width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${this.width} ${height}`);
    svg.dataset.viewStart = String(Math.round(this.view.start));
    svg.dataset.viewEnd = String(Math.round(this.view.end));
    svg.dataset.plotLeft = String(LEFT);
    svg.dataset.plotRight = String(this.width - RIGHT);
    const clipId = "timeline-clip";
    // Re-rendering replaces the bars; keep keyboard focus on the same event across polls.
    const focused = document.activeElement?.closest?.(".event")?.dataset.eventId;
    mount(svg,
      s("defs", {},
        s("clipPath", { id: clipId }, s("rect", { x: LEFT, y: 0, width: this.width - LEFT - RIGHT, height })),
        s("pattern", { id: "open-stripes", width: 8, height: 8, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
          s("rect", { width: 4, height: 8, fill: "rgba(255,255,255,0.45)" }))),
      this.drawLanes(height),
      this.drawAxis(height),
      s("g", { "clip-path": `url(#${clipId})` },
        this.drawLabels(), this.drawEvents(), this.drawSelection(height)),
      this.lanes.length ? null : s("text", { x: LEFT + 12, y: AXIS_H + 28, class: "timeline-empty" },
        "No events in this time range."));
    if (focused) svg.querySelector(`.event[data-event-id="${CSS.escape(focused)}"]`)?.focus();
  }

  drawLanes(height) {
    return s("g", { class: "lanes" }, this.lanes.map((label, i) => {
      const y = AXIS_H + i * LANE_H;
      return s("g", { class: "lane", dataset: { lane: label }, transform: `translate(0 ${y})` },
        s("rect", { x: 0, y: 0, width: this.width, height: LANE_H, class: i % 2 ? "lane-bg odd" : "lane-bg" }),
        s("rect", { x: 8, y: LANE_H / 2 - 6, width: 12, height: 12, rx: 2, fill: labelColor(label) }),
        s("text", { x: 26, y: LANE_H / 2 + 5, class: "lane-name" }, label));
    }), s("line", { x1: LEFT, x2: LEFT, y1: AXIS_H, y2: height, class: "lane-sep" }));
  }

  drawAxis(height) {
    const { start, end } = this.view;
    const target = (end - start) / Math.max(2, (this.width - LEFT) / 110);
    const step = TICK_STEPS.find((st) => st >= target) || TICK_STEPS.at(-1);
    const offset = new Date(start).getTimezoneOffset() * 60e3;
    const first = Math.ceil((start - offset) / step) * step + offset;
    const ticks = [];
    let lastDay = "";
    for (let t = first; t <= end; t += step) {
      const px = this.x(t);
      const day = new Date(t).toLocaleDateString(undefined, { month: "short", day: "numeric" });
      const text = step < 60e3 ? fmtTime(t) : fmtTime(t).slice(0, 5);
      ticks.push(s("g", { class: "tick" },
        s("line", { x1: px, x2: px, y1: AXIS_H - 6, y2: height, class: "tick-line" }),
        s("text", { x: px, y: AXIS_H - 10, "text-anchor": "middle" }, day !== lastDay ? `${day} ${text}` : text)));
      lastDay = day;
    }
    return s("g", { class: "axis", "aria-hidden": "true" },
      s("rect", { x: 0, y: 0, width: this.width, height: AXIS_H, class: "axis-bg" }), ticks);
  }

  laneY(label) {
    const i = this.lanes.indexOf(label);
    return i < 0 ? null : AXIS_H + i * LANE_H;
  }

  drawEvents() {
    const { start, end } = this.view;
    return s("g", { class: "events" }, this.events
      .filter((ev) => ev._end >= start && ev._start <= end)
      .map((ev) => this.drawEvent(ev)));
  }

  drawEvent(ev) {
    const y = this.laneY(ev.label) + 6;
    const x0 = this.x(ev._start);
    const w = Math.max(4, this.x(ev._end) - x0);
    const barH = LANE_H - 18;
    const g = s("g", {
      class: `event${ev.open ? " open" : ""}`, tabindex: "0", role: "button",
      "aria-label": `Open event: ${eventSummary(ev)}`, "aria-describedby": "timeline-tooltip",
      dataset: { eventId: ev.event_id, label: ev.label, startMs: String(ev._start), endMs: String(ev._end), open: String(ev.open) },
    },
    s("rect", { x: x0, y, width: w, height: barH, rx: 3, class: "bar", fill: labelColor(ev.label), "fill-opacity": consistencyOpacity(ev.consistency) }),
    ev.open ? s("rect", { x: x0, y, width: w, height: barH, rx: 3, fill: "url(#open-stripes)", class: "open-stripes" }) : null,
    ev.open ? s("path", { d: `M${x0 + w} ${y - 3} l6 ${barH / 2 + 3} l-6 ${barH / 2 + 3}z`, class: "open-arrow" }) : null,
    w > 64 ? s("text", { x: x0 + 6, y: y + barH / 2 + 4, class: "bar-text" }, `${fmtNumber(ev.peak_score)} · c ${fmtNumber(ev.consistency, 1)}`) : null);
    g.addEventListener("click", () => this.cb.onOpen(ev));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        e.stopPropagation();
        this.cb.onOpen(ev);
      }
    });
    g.addEventListener("pointerenter", (e) => this.showTip(ev, e.clientX, e.clientY));
    g.addEventListener("pointermove", (e) => this.showTip(ev, e.clientX, e.clientY));
    g.addEventListener("pointerleave", () => this.hideTip());
    g.addEventListener("focus", () => {
      const r = g.getBoundingClientRect();
      this.showTip(ev, r.left + r.width / 2, r.bottom);
    });
    g.addEventListener("blur", () => this.hideTip());
    return g;
  }

  drawLabels() {
    return s("g", { class: "labels" }, this.labels.map((lb) => {
      const y = this.laneY(lb.label);
      if (y === null) return null;
      const x0 = this.x(lb._start);
      const w = Math.max(3, this.x(lb._end) - x0);
      return s("g", { class: "label-mark", dataset: { labelId: lb.label_id, label: lb.label }, role: "img",
        "aria-label": `Clinician label ${lb.label}, ${fmtTime(lb._start)} to ${fmtTime(lb._end)}` },
      s("rect", { x: x0, y: y + LANE_H - 10, width: w, height: 7, rx: 1, class: "label-band", stroke: labelColor(lb.label) }),
      s("title", {}, `Clinician label: ${lb.label} (${fmtTime(lb._start)}–${fmtTime(lb._end)})`));
    }));
  }

  drawSelection(height) {
    if (!this.selection) return null;
    const a = this.x(Math.min(this.selection.a, this.selection.b));
    const b = this.x(Math.max(this.selection.a, this.selection.b));
    return s("rect", { x: a, y: AXIS_H, width: Math.max(1, b - a), height: height - AXIS_H, class: "selection" });
  }

  showTip(ev, clientX, clientY) {
    const dur = (ev._end - ev._start) / 1000;
    mount(this.tooltip,
      h("strong", {}, ev.label), ev.open ? h("span", { class: "badge badge-open" }, "open") : null,
      h("div", {}, `${fmtTime(ev._start)} – ${fmtTime(ev._end)} (${fmtDuration(dur)})`),
      h("div", {}, `Peak ${fmtNumber(ev.peak_score)} · mean ${fmtNumber(ev.mean_score)}`),
      h("div", {}, `Consistency ${fmtNumber(ev.consistency)} — ${consistencyWords(ev.consistency)}`),
      h("p", { class: "tooltip-help" }, CONSISTENCY_HELP),
      ev.open ? h("p", { class: "tooltip-help" }, "Open: the event was still going on at the end of the latest video; it may grow.") : null);
    this.tooltip.hidden = false;
    const box = this.wrap.getBoundingClientRect();
    const tipW = this.tooltip.offsetWidth;
    const left = Math.min(Math.max(0, clientX - box.left + 12), box.width - tipW - 4);
    this.tooltip.style.left = `${left}px`;
    this.tooltip.style.top = `${clientY - box.top + 14}px`;
  }

  hideTip() {
    this.tooltip.hidden = true;
  }

  // --- input ----------------------------------------------------------------------------------

  localX(e) {
    const r = this.svg.getBoundingClientRect();
    return ((e.clientX - r.left) / r.width) * this.width;
  }

  bindPointer() {
    this.svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const factor = Math.pow(1.0015, e.deltaY || e.deltaX);
      this.zoom(factor, this.timeAt(Math.max(LEFT, this.localX(e))));
    }, { passive: false });
    let drag = null;
    this.svg.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || e.target.closest(".event")) return;
      const px = this.localX(e);
      if (px < LEFT) return;
      const selecting = this.marking || e.shiftKey;
      drag = { px, selecting, view: { ...this.view }, moved: false };
      if (selecting) this.selection = { a: this.timeAt(px), b: this.timeAt(px) };
      this.svg.setPointerCapture(e.pointerId);
    });
    this.svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const px = this.localX(e);
      drag.moved = drag.moved || Math.abs(px - drag.px) > 3;
      if (drag.selecting) {
        this.selection.b = this.timeAt(px);
        this.render();
      } else {
        const perPx = (drag.view.end - drag.view.start) / (this.width - LEFT - RIGHT);
        const shift = (drag.px - px) * perPx;
        this.setView(drag.view.start + shift, drag.view.end + shift);
      }
    });
    const finish = () => {
      if (!drag) return;
      if (drag.selecting) {
        const a = Math.min(this.selection.a, this.selection.b);
        const b = Math.max(this.selection.a, this.selection.b);
        if (drag.moved && b - a >= 100) this.cb.onSelect(a, b);
        else this.clearSelection();
      }
      drag = null;
    };
    this.svg.addEventListener("pointerup", finish);
    this.svg.addEventListener("pointercancel", finish);
  }

  bindKeys() {
    this.svg.addEventListener("keydown", (e) => {
      const actions = {
        ArrowLeft: () => this.pan(-0.1), ArrowRight: () => this.pan(0.1),
        "+": () => this.zoom(1 / 1.5), "=": () => this.zoom(1 / 1.5), "-": () => this.zoom(1.5),
        0: () => this.fit(),
      };
      const act = actions[e.key];
      if (act && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        act();
      }
    });
  }
}
