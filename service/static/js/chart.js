// The per-frame score curve of an event (SVG): one line per class, the event's label emphasised,
// the on/off hysteresis thresholds as dashed lines, the event interval shaded, and a playhead.

import { fmtNumber, fmtTime, h, labelColor, mount, s } from "./dom.js";

const H = 220;
const M = { left: 44, right: 12, top: 14, bottom: 28 };

export class ScoreChart {
  /**
   * @param {HTMLElement} container
   * @param {{frames: {t: number, scores: Object<string, number>}[], label: string,
   *          eventStart: number, eventEnd: number, thresholds: {on: number, off: number}|null,
   *          onSeek(ms)}} opts
   */
  constructor(container, opts) {
    this.opts = opts;
    this.playhead = null;
    this.svg = s("svg", { class: "score-chart", id: "score-chart", role: "img", tabindex: "0" });
    this.wrap = h("div", { class: "chart-wrap" }, this.svg);
    mount(container, this.wrap);
    const times = opts.frames.map((f) => f.t);
    const lo = Math.min(opts.eventStart, ...times);
    const hi = Math.max(opts.eventEnd, ...times);
    const pad = Math.max((hi - lo) * 0.04, 500);
    this.domain = [lo - pad, hi + pad];
    this.classes = [...new Set(opts.frames.flatMap((f) => Object.keys(f.scores)))]
      .sort((a, b) => (a === opts.label ? 1 : b === opts.label ? -1 : a.localeCompare(b)));
    this.svg.setAttribute("aria-label", this.describe());
    this.svg.addEventListener("click", (e) => this.seekAt(e));
    this.svg.addEventListener("keydown", (e) => this.onKey(e));
    this.observer = new ResizeObserver(() => this.render());
    this.observer.observe(this.wrap);
  }

  destroy() {
    this.observer.disconnect();
  }

  describe() {
    const { label, frames, thresholds } = this.opts;
    const peak = Math.max(0, ...frames.map((f) => f.scores[label] ?? 0));
    const th = thresholds ? ` On threshold ${fmtNumber(thresholds.on)}, off threshold ${fmtNumber(thresholds.off)}.` : "";
    return `Score of ${label} per analysed frame, ${frames.length} frames, peak ${fmtNumber(peak)}.${th} ` +
      "Click or use the arrow keys to move the video.";
  }

  x(t) {
    const [a, b] = this.domain;
    return M.left + ((t - a) / (b - a)) * (this.width - M.left - M.right);
  }

  y(v) {
    return M.top + (1 - v) * (H - M.top - M.bottom);
  }

  render() {
    this.width = Math.max(320, this.wrap.clientWidth || 600);
    const { frames, label, eventStart, eventEnd, thresholds } = this.opts;
    const svg = this.svg;
    svg.setAttribute("width", this.width);
    svg.setAttribute("height", H);
    svg.setAttribute("viewBox", `0 0 ${this.width} ${H}`);
    const lines = this.classes.map((cls) => {
      const pts = frames.filter((f) => Number.isFinite(f.scores[cls]))
        .map((f) => `${this.x(f.t).toFixed(1)},${this.y(f.scores[cls]).toFixed(1)}`);
      const main = cls === label;
      return s("polyline", {
        points: pts.join(" "), fill: "none", class: main ? "curve curve-main" : "curve",
        stroke: main ? labelColor(cls) : "#8a94a0", "stroke-width": main ? 2.5 : 1.2, dataset: { cls },
      });
    });
    const yTicks = [0, 0.25, 0.5, 0.75, 1].map((v) => s("g", { class: "ytick" },
      s("line", { x1: M.left, x2: this.width - M.right, y1: this.y(v), y2: this.y(v) }),
      s("text", { x: M.left - 6, y: this.y(v) + 4, "text-anchor": "end" }, v.toFixed(2))));
    const [a, b] = this.domain;
    const xTicks = Array.from({ length: 5 }, (_, i) => a + ((b - a) * (i + 0.5)) / 5).map((t) =>
      s("text", { x: this.x(t), y: H - 8, "text-anchor": "middle", class: "xtick" }, fmtTime(t)));
    const thresholdLines = thresholds ? [["on", thresholds.on], ["off", thresholds.off]].map(([name, v]) =>
      s("g", { class: `threshold threshold-${name}`, dataset: { threshold: name, value: String(v) } },
        s("line", { x1: M.left, x2: this.width - M.right, y1: this.y(v), y2: this.y(v) }),
        s("text", { x: this.width - M.right - 4, y: this.y(v) - 4, "text-anchor": "end" }, `${name} ${fmtNumber(v)}`))) : [];
    this.playhead = s("line", { class: "playhead", y1: M.top, y2: H - M.bottom, x1: -10, x2: -10 });
    mount(svg,
      s("rect", { class: "event-span", x: this.x(eventStart), y: M.top, width: Math.max(2, this.x(eventEnd) - this.x(eventStart)), height: H - M.top - M.bottom }),
      yTicks, xTicks, thresholdLines, lines, this.playhead,
      this.classes.length > 1 ? this.drawKey() : null);
    if (this.lastPlayhead !== undefined) this.setPlayhead(this.lastPlayhead);
  }

  drawKey() {
    let x = M.left + 8;
    return s("g", { class: "chart-key" }, this.classes.slice().reverse().map((cls) => {
      const g = s("g", { transform: `translate(${x} ${M.top + 10})` },
        s("line", { x1: 0, x2: 16, y1: -4, y2: -4, stroke: cls === this.opts.label ? labelColor(cls) : "#8a94a0", "stroke-width": cls === this.opts.label ? 2.5 : 1.2 }),
        s("text", { x: 20, y: 0 }, cls));
      x += 30 + cls.length * 7;
      return g;
    }));
  }

  setPlayhead(t) {
    this.lastPlayhead = t;
    if (!this.playhead) return;
    const px = this.x(t);
    this.playhead.setAttribute("x1", px);
    this.playhead.setAttribute("x2", px);
  }

  seekAt(e) {
    const r = this.svg.getBoundingClientRect();
    const px = ((e.clientX - r.left) / r.width) * this.width;
    const [a, b] = this.domain;
    const t = a + ((px - M.left) / (this.width - M.left - M.right)) * (b - a);
    this.opts.onSeek?.(Math.min(b, Math.max(a, t)));
  }

  onKey(e) {
    const step = { ArrowLeft: -1000, ArrowRight: 1000 }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    const [a, b] = this.domain;
    const t = Math.min(b, Math.max(a, (this.lastPlayhead ?? this.opts.eventStart) + step));
    this.opts.onSeek?.(t);
  }
}
