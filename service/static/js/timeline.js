// Timeline page of one stream: range picker, zoom/pan, live polling, events table, labeling.

import { all, ApiError } from "./api.js";
import {
  fmtDateTime, fmtDuration, fmtNumber, fmtTime, fromLocalInput, h, iso, labelColor, mount, ms,
  TIME_ZONE, toast, toLocalInput,
} from "./dom.js";
import { openLabelDialog } from "./labels.js";
import { CONSISTENCY_HELP, consistencyOpacity, consistencyWords, TimelineView } from "./timeline-view.js";

const POLL_MS = 5000;
const MIN_POLL_MS = 1000;
const PRESETS = [
  ["900", "15 minutes"], ["3600", "1 hour"], ["21600", "6 hours"], ["86400", "24 hours"], ["604800", "7 days"],
];

function withTimes(item) {
  return { ...item, _start: ms(item.start), _end: ms(item.end) };
}

export async function render(main, { args, params, session }) {
  const streamId = args[0];
  document.title = `${streamId} · Timeline · Vigil`;
  const page = new TimelinePage(main, streamId, session);
  // `?poll=ms` shortens the live-update interval (tests, wall displays); never below 1 s.
  page.pollMs = Math.max(MIN_POLL_MS, Number(params.get("poll")) || POLL_MS);
  await page.start(params);
  return () => page.stop();
}

class TimelinePage {
  constructor(main, streamId, session) {
    this.streamId = streamId;
    this.session = session;
    this.events = new Map();
    this.labels = new Map();
    this.loaded = null; // {start, end} in ms: the window whose events are loaded
    this.lastUpdated = null; // ISO updated_at of the newest change seen (for updated_since)
    this.timer = 0;
    this.stopped = false;
    this.build(main);
  }

  build(main) {
    const id = (x) => `tl-${x}`;
    this.status = h("p", { class: "muted small", role: "status", id: id("status") }, "Loading…");
    this.fromInput = h("input", { type: "datetime-local", step: "1", id: id("from") });
    this.toInput = h("input", { type: "datetime-local", step: "1", id: id("to") });
    this.preset = h("select", { id: id("preset") },
      h("option", { value: "" }, "Choose…"),
      PRESETS.map(([v, t]) => h("option", { value: v }, `Last ${t} of activity`)),
      h("option", { value: "fit" }, "All loaded events"));
    this.live = h("input", { type: "checkbox", id: id("live"), checked: true });
    this.markBtn = h("button", { type: "button", class: "btn", id: id("mark"), "aria-pressed": "false",
      title: "Then drag across the timeline (or hold Shift and drag)" }, "Mark interval");
    const btn = (text, label, fn, extra = {}) =>
      h("button", { type: "button", class: "btn btn-icon", "aria-label": label, title: label, onclick: fn, ...extra }, text);
    const rangeForm = h("form", { class: "toolbar-group", "aria-label": "Time range" },
      h("div", { class: "field" }, h("label", { for: id("from") }, "From"), this.fromInput),
      h("div", { class: "field" }, h("label", { for: id("to") }, "To"), this.toInput),
      h("button", { type: "submit", class: "btn" }, "Show"),
      h("div", { class: "field" }, h("label", { for: id("preset") }, "Quick range"), this.preset));
    rangeForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const a = fromLocalInput(this.fromInput.value);
      const b = fromLocalInput(this.toInput.value);
      if (b > a) this.view.setView(a, b);
      else toast("The range must end after it starts.", "error");
    });
    this.preset.addEventListener("change", () => this.applyPreset());
    this.live.addEventListener("change", () => this.schedule());
    this.markBtn.addEventListener("click", () => this.toggleMarking());
    const zoomGroup = h("div", { class: "toolbar-group", role: "group", "aria-label": "Zoom and pan" },
      btn("◀", "Pan earlier", () => this.view.pan(-0.25)),
      btn("−", "Zoom out", () => this.view.zoom(1.5)),
      btn("+", "Zoom in", () => this.view.zoom(1 / 1.5)),
      btn("▶", "Pan later", () => this.view.pan(0.25)),
      h("button", { type: "button", class: "btn", onclick: () => this.view.fit() }, "Fit"));
    const labelGroup = this.session.canLabel
      ? h("div", { class: "toolbar-group", role: "group", "aria-label": "Labeling" }, this.markBtn,
        h("button", { type: "button", class: "btn", id: id("add-label"), onclick: () => this.labelAtCenter() }, "Add label…"))
      : null;
    this.timelineBox = h("div", { class: "timeline-box" });
    this.eventsBox = h("div", {});
    this.labelsBox = h("div", {});
    mount(main, h("section", { class: "page", "aria-labelledby": "tl-title" },
      h("div", { class: "page-head" },
        h("div", {}, h("p", { class: "crumbs" }, h("a", { href: "#/streams" }, "Streams"), " / "),
          h("h1", { id: "tl-title" }, streamTitle(this.streamId))),
        h("div", { class: "live" }, this.live, h("label", { for: id("live") }, "Live updates"), this.status)),
      h("div", { class: "toolbar" }, rangeForm, zoomGroup, labelGroup),
      h("p", { class: "muted small" }, `Times in ${TIME_ZONE}. Drag to pan, scroll to zoom. `,
        this.session.canLabel ? "Hold Shift and drag (or use Mark interval) to label a span." : ""),
      this.timelineBox,
      legend(),
      h("h2", {}, "Events in view"), this.eventsBox,
      h("h2", {}, "Clinician labels"), this.labelsBox));
    this.view = new TimelineView(this.timelineBox, {
      onOpen: (ev) => { location.hash = `#/events/${encodeURIComponent(ev.event_id)}`; },
      onSelect: (a, b) => this.label(a, b),
      onView: (a, b) => this.viewChanged(a, b),
    });
  }

  async start(params) {
    const start = Number(params.get("start"));
    const end = Number(params.get("end"));
    try {
      let fit = false;
      if (end > start) {
        await this.load(start, end);
        this.view.setView(start, end, { notify: false });
      } else {
        fit = await this.loadDefault();
      }
      await this.loadLabels();
      this.redraw();
      if (fit) this.view.fit();
      this.syncInputs();
    } catch (err) {
      this.status.textContent = `Could not load the timeline: ${err.message}`;
    }
    this.schedule();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.viewTimer);
    this.view.destroy();
  }

  async loadDefault() {
    // Start from the day before the stream's latest activity, then fit the view to what is there.
    const streams = await all("/v1/streams", { limit: 100 });
    const summary = streams.find((st) => st.stream_id === this.streamId);
    const last = summary ? ms(summary.last_segment_end) : Date.now();
    this.lastActivity = last;
    await this.load(last - 86400e3, last + 60e3);
    this.view.setView(last - 3600e3, last + 60e3, { notify: false });
    return this.events.size > 0;
  }

  /** Load the events overlapping [start, end] and merge them. */
  async load(start, end) {
    const items = await all(`/v1/streams/${encodeURIComponent(this.streamId)}/events`,
      { start: iso(start), end: iso(end), limit: 500 });
    this.merge(items);
    this.loaded = this.loaded && start <= this.loaded.end && end >= this.loaded.start
      ? { start: Math.min(start, this.loaded.start), end: Math.max(end, this.loaded.end) }
      : { start, end };
    this.stamp();
  }

  async loadLabels() {
    const items = await all(`/v1/streams/${encodeURIComponent(this.streamId)}/labels`, { limit: 500 });
    this.labels = new Map(items.map((lb) => [lb.label_id, withTimes(lb)]));
  }

  merge(items) {
    for (const ev of items) {
      if (ev.superseded) this.events.delete(ev.event_id);
      else this.events.set(ev.event_id, withTimes(ev));
      if (ev.updated_at && (!this.lastUpdated || ms(ev.updated_at) > ms(this.lastUpdated))) {
        this.lastUpdated = ev.updated_at;
      }
    }
  }

  stamp() {
    this.status.textContent = `${this.events.size} event${this.events.size === 1 ? "" : "s"} loaded · updated ${new Date().toLocaleTimeString()}`;
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.stopped && this.live.checked) this.timer = setTimeout(() => this.poll(), this.pollMs);
  }

  /** Live updates: only what changed since the newest `updated_at` seen (grown, closed, new). */
  async poll() {
    if (document.hidden) return this.schedule();
    try {
      if (this.lastUpdated) {
        const items = await all(`/v1/streams/${encodeURIComponent(this.streamId)}/events`,
          { updated_since: this.lastUpdated, limit: 500 });
        this.merge(items);
      } else if (this.loaded) {
        await this.load(this.loaded.start, this.loaded.end);
      }
      await this.loadLabels();
      if (!this.stopped) {
        this.redraw();
        this.stamp();
      }
    } catch (err) {
      if (err instanceof ApiError) this.status.textContent = `Live update failed: ${err.message}`;
    }
    this.schedule();
  }

  viewChanged(a, b) {
    this.syncInputs();
    this.preset.value = "";
    const poll = this.pollMs !== POLL_MS ? `&poll=${this.pollMs}` : "";
    history.replaceState(null, "", `#/streams/${encodeURIComponent(this.streamId)}?start=${Math.round(a)}&end=${Math.round(b)}${poll}`);
    this.renderTables();
    // Fetch more once panning or zooming leaves the loaded window (debounced).
    clearTimeout(this.viewTimer);
    if (this.loaded && a >= this.loaded.start && b <= this.loaded.end) return;
    this.viewTimer = setTimeout(async () => {
      const span = b - a;
      try {
        await this.load(a - span / 2, b + span / 2);
        this.redraw();
      } catch (err) {
        this.status.textContent = `Could not load events: ${err.message}`;
      }
    }, 250);
  }

  applyPreset() {
    const v = this.preset.value;
    if (v === "fit") this.view.fit();
    else if (v) {
      // "Last hour" means the stream's last hour of activity: recordings may be historical.
      const latest = Math.max(this.lastActivity || 0, ...[...this.events.values()].map((e) => e._end));
      const end = latest > 0 ? latest : Date.now();
      this.view.setView(end - Number(v) * 1000, end);
    }
  }

  syncInputs() {
    this.fromInput.value = toLocalInput(this.view.view.start);
    this.toInput.value = toLocalInput(this.view.view.end);
  }

  redraw() {
    const events = [...this.events.values()].sort((a, b) => a._start - b._start);
    const labels = [...this.labels.values()];
    const lanes = [...new Set([...events.map((e) => e.label), ...labels.map((l) => l.label)])].sort();
    this.view.setData({ events, labels, lanes });
    this.renderTables();
  }

  renderTables() {
    const { start, end } = this.view.view;
    const inView = [...this.events.values()].filter((e) => e._end >= start && e._start <= end)
      .sort((a, b) => a._start - b._start);
    mount(this.eventsBox, inView.length ? eventsTable(inView) : h("p", { class: "muted" }, "No events in view."));
    const labels = [...this.labels.values()].sort((a, b) => a._start - b._start);
    mount(this.labelsBox, labels.length ? labelsTable(labels) : h("p", { class: "muted" }, "No labels yet."));
  }

  toggleMarking(force) {
    const on = force ?? this.markBtn.getAttribute("aria-pressed") !== "true";
    this.markBtn.setAttribute("aria-pressed", String(on));
    this.view.setMarking(on);
  }

  labelAtCenter() {
    const { start, end } = this.view.view;
    const mid = (start + end) / 2;
    const half = Math.min(5000, (end - start) / 10);
    this.label(mid - half, mid + half);
  }

  async label(a, b) {
    const known = [...new Set([...this.events.values()].map((e) => e.label))].sort();
    const created = await openLabelDialog({ streamId: this.streamId, startMs: a, endMs: b, knownLabels: known });
    this.view.clearSelection();
    this.toggleMarking(false);
    if (created) {
      this.labels.set(created.label_id, created);
      this.redraw();
    }
    this.view.svg.focus();
  }
}

function streamTitle(streamId) {
  return h("span", {}, "Timeline of ", h("span", { class: "mono" }, streamId));
}

function legend() {
  return h("div", { class: "legend", id: "tl-legend" },
    h("span", { class: "legend-item" },
      h("span", { class: "swatch", style: `opacity:${consistencyOpacity(0.9)}` }), "high consistency"),
    h("span", { class: "legend-item" },
      h("span", { class: "swatch", style: `opacity:${consistencyOpacity(0.1)}` }), "low consistency"),
    h("span", { class: "legend-item" }, h("span", { class: "swatch swatch-open" }), "open (still growing)"),
    h("span", { class: "legend-item" }, h("span", { class: "swatch swatch-label" }), "clinician label"),
    h("details", { class: "legend-help" }, h("summary", {}, "What is consistency?"), h("p", {}, CONSISTENCY_HELP)));
}

function eventsTable(events) {
  return h("div", { class: "table-wrap" }, h("table", { class: "data", id: "events-table" },
    h("thead", {}, h("tr", {}, ["Label", "Start", "Duration", "Peak", "Mean", "Consistency", "State"]
      .map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, events.map((ev) => h("tr", { dataset: { eventId: ev.event_id } },
      h("td", {}, h("span", { class: "dot", style: `background:${labelColor(ev.label)}` }),
        h("a", { href: `#/events/${encodeURIComponent(ev.event_id)}` }, ev.label)),
      h("td", {}, h("time", { datetime: ev.start }, fmtDateTime(ev._start))),
      h("td", {}, fmtDuration((ev._end - ev._start) / 1000)),
      h("td", { class: "num" }, fmtNumber(ev.peak_score)),
      h("td", { class: "num" }, fmtNumber(ev.mean_score)),
      h("td", { title: CONSISTENCY_HELP }, `${fmtNumber(ev.consistency)} (${consistencyWords(ev.consistency)})`),
      h("td", {}, ev.open ? h("span", { class: "badge badge-open" }, "open") : "closed"))))));
}

function labelsTable(labels) {
  return h("div", { class: "table-wrap" }, h("table", { class: "data", id: "labels-table" },
    h("thead", {}, h("tr", {}, ["Label", "Start", "End", "Duration", "By key"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, labels.map((lb) => h("tr", { dataset: { labelId: lb.label_id } },
      h("td", {}, h("span", { class: "dot", style: `background:${labelColor(lb.label)}` }), lb.label),
      h("td", {}, fmtDateTime(lb._start)),
      h("td", {}, fmtTime(lb._end)),
      h("td", {}, fmtDuration((lb._end - lb._start) / 1000)),
      h("td", { class: "mono small" }, lb.created_by))))));
}
