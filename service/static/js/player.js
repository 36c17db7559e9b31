// The segment player of an event: plays the stream's video from the event's start.
//
// A <video src> cannot send the Authorization header, so the segment is fetched with the key
// (GET /v1/segments/{id}/video) into a blob and played from an object URL; seeking then happens
// inside the blob. See docs/viewer.md for the signed-URL alternative that would stream by Range.

import { blobUrl, json } from "./api.js";
import { fmtDuration, fmtTime, h, mount, ms } from "./dom.js";

export class SegmentPlayer {
  /**
   * @param {HTMLElement} container
   * @param {{segmentIds: string[], eventStart: number, eventEnd: number,
   *          onTime(wallMs), onSegments(segments)}} opts
   */
  constructor(container, opts) {
    this.opts = opts;
    this.segments = [];
    this.current = null;
    this.url = null;
    this.video = h("video", {
      id: "event-video", controls: true, muted: true, playsinline: true, preload: "auto",
      "aria-label": "Video of the event",
    });
    this.video.muted = true; // autoplay is allowed for muted video only
    this.progress = h("progress", { id: "video-progress", max: 1, value: 0, "aria-label": "Video download" });
    this.status = h("p", { class: "muted small", role: "status", id: "video-status" }, "Loading the video…");
    this.stopAtEnd = h("input", { type: "checkbox", id: "stop-at-end", checked: true });
    this.segmentNav = h("div", { class: "segment-nav", role: "group", "aria-label": "Segments of this event" });
    mount(container,
      h("div", { class: "video-box" }, this.video),
      this.progress, this.status,
      h("div", { class: "row" },
        h("button", { type: "button", class: "btn", id: "play-event", onclick: () => this.playEvent() }, "▶ Play the event"),
        h("span", { class: "check" }, this.stopAtEnd, h("label", { for: "stop-at-end" }, "Stop at the event's end"))),
      this.segmentNav);
    this.video.addEventListener("timeupdate", () => this.tick());
    this.video.addEventListener("seeked", () => this.tick());
    this.video.addEventListener("ended", () => this.next());
  }

  destroy() {
    this.video.pause();
    this.video.removeAttribute("src");
    if (this.url) URL.revokeObjectURL(this.url);
  }

  async start() {
    this.segments = (await Promise.all(this.opts.segmentIds.map((id) =>
      json(`/v1/segments/${encodeURIComponent(id)}`)))).map((sg) => ({ ...sg, _start: ms(sg.start), _end: ms(sg.end) }))
      .sort((a, b) => a._start - b._start);
    if (!this.segments.length) {
      this.status.textContent = "This event has no stored video.";
      return;
    }
    this.opts.onSegments?.(this.segments);
    const first = this.segmentAt(this.opts.eventStart) || this.segments[0];
    await this.load(first, this.opts.eventStart);
    this.video.play().catch(() => {
      this.status.textContent = "Press play to start the video.";
    });
  }

  segmentAt(wallMs) {
    return this.segments.find((sg) => wallMs >= sg._start && wallMs < sg._end);
  }

  renderNav() {
    if (this.segments.length < 2) return mount(this.segmentNav);
    mount(this.segmentNav, h("span", { class: "muted small" }, "Segments: "),
      this.segments.map((sg, i) => h("button", {
        type: "button", class: "btn btn-small", "aria-pressed": String(sg === this.current),
        onclick: () => this.load(sg, sg._start),
      }, `${i + 1} · ${fmtTime(sg._start)}`)));
  }

  async load(segment, wallMs) {
    if (this.current !== segment) {
      this.current = segment;
      this.renderNav();
      this.progress.hidden = false;
      this.status.textContent = `Loading the video (${fmtDuration(segment.duration_s)})…`;
      const url = await blobUrl(segment.video_url || `/v1/segments/${encodeURIComponent(segment.segment_id)}/video`, {
        onProgress: (got, total) => {
          if (total) this.progress.value = got / total;
        },
      });
      if (this.url) URL.revokeObjectURL(this.url);
      this.url = url;
      this.video.src = url;
      await once(this.video, "loadedmetadata");
      this.progress.hidden = true;
      this.status.textContent = `Segment from ${fmtTime(segment._start)} to ${fmtTime(segment._end)}.`;
    }
    await this.seekWall(wallMs);
  }

  /** Seek to a wall-clock time, switching segment when needed. */
  async seekWall(wallMs) {
    const segment = this.segmentAt(wallMs) || this.current;
    if (segment !== this.current) return this.load(segment, wallMs);
    const offset = Math.max(0, Math.min(this.video.duration || 0, (wallMs - segment._start) / 1000));
    this.video.currentTime = offset;
    await once(this.video, "seeked");
  }

  /** The wall-clock time of the frame on screen. */
  wallTime() {
    return this.current ? this.current._start + this.video.currentTime * 1000 : NaN;
  }

  async playEvent() {
    await this.seekWall(this.opts.eventStart);
    this.stopAtEnd.checked = true;
    await this.video.play().catch(() => {});
  }

  tick() {
    const t = this.wallTime();
    this.opts.onTime?.(t);
    if (this.stopAtEnd.checked && !this.video.paused && t >= this.opts.eventEnd && t - this.opts.eventEnd < 1000) {
      this.video.pause();
    }
  }

  next() {
    const i = this.segments.indexOf(this.current);
    const following = this.segments[i + 1];
    if (following && following._start < this.opts.eventEnd) {
      this.load(following, following._start).then(() => this.video.play().catch(() => {}));
    }
  }

  /** A second, hidden decode of the same blob at `wallMs`, for the raw frame under the overlay. */
  async grabFrame(wallMs) {
    const segment = this.segmentAt(wallMs);
    if (!segment || segment !== this.current || !this.url) return null;
    const probe = h("video", { muted: true, preload: "auto", playsinline: true });
    probe.muted = true;
    probe.src = this.url;
    await once(probe, "loadeddata");
    probe.currentTime = Math.max(0, (wallMs - segment._start) / 1000);
    await once(probe, "seeked");
    return probe;
  }
}

function once(target, name, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${name}`)), timeoutMs);
    target.addEventListener(name, () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
    target.addEventListener("error", () => {
      clearTimeout(timer);
      reject(new Error("the video could not be played"));
    }, { once: true });
  });
}
