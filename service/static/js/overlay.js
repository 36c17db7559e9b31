// The explanation panel of an event: the overlay image for a chosen attention method over the
// raw frame, with an opacity slider.
//
// Grad-CAM of the key frame is stored by the worker; the other methods are rendered on demand by
// a worker job: the API answers 202 with the job, which is polled until the image exists.

import { ApiError, json, query, raw } from "./api.js";
import { fmtTime, h, mount } from "./dom.js";

export const METHODS = [
  ["gradcam", "Grad-CAM", "Where the last convolutional layer's evidence for the label lies (coarse regions)."],
  ["guided_backprop", "Guided Backprop", "Which pixels most increase the score (fine edges and texture)."],
  ["integrated_gradients", "Integrated Gradients", "Each pixel's share of the score, from a black frame to this one."],
];

const WAIT_S = 10;
const JOB_POLL_MS = 1000;
const JOB_TIMEOUT_MS = 180000;

export class OverlayPanel {
  constructor(container, { eventId, keyframeMs }) {
    this.eventId = eventId;
    this.timeMs = keyframeMs;
    this.keyframeMs = keyframeMs;
    this.method = "gradcam";
    this.cache = new Map(); // `${method}@${time}` -> object URL
    this.request = 0;
    this.img = h("img", { class: "overlay-img", id: "overlay-img", alt: "" });
    this.rawCanvas = h("canvas", { class: "raw-frame", id: "raw-frame", "aria-hidden": "true" });
    this.status = h("p", { class: "muted small", role: "status", id: "overlay-status" }, "Loading the overlay…");
    this.slider = h("input", { type: "range", id: "overlay-opacity", min: 0, max: 100, value: 70, "aria-describedby": "overlay-opacity-help" });
    this.sliderOut = h("output", { for: "overlay-opacity", id: "overlay-opacity-value" }, "70%");
    this.rawNote = h("p", { class: "help", id: "overlay-opacity-help" },
      "0% shows the raw frame, 100% the explanation only.");
    this.timeNote = h("p", { class: "muted small", id: "overlay-time" });
    const radios = METHODS.map(([value, name, help]) => h("label", { class: "radio", title: help },
      h("input", { type: "radio", name: "overlay-method", value, checked: value === this.method,
        onchange: () => this.setMethod(value) }),
      h("span", {}, name)));
    this.methodHelp = h("p", { class: "help", id: "method-help" }, METHODS[0][2]);
    mount(container,
      h("fieldset", { class: "methods" }, h("legend", {}, "Explanation method"), radios),
      this.methodHelp,
      h("div", { class: "overlay-stack", id: "overlay-stack" }, this.rawCanvas, this.img),
      this.status, this.timeNote,
      h("div", { class: "field field-inline" },
        h("label", { for: "overlay-opacity" }, "Overlay opacity"), this.slider, this.sliderOut),
      this.rawNote);
    this.slider.addEventListener("input", () => this.applyOpacity());
    this.applyOpacity();
  }

  destroy() {
    this.request += 1;
    for (const url of this.cache.values()) URL.revokeObjectURL(url);
    this.cache.clear();
  }

  applyOpacity() {
    const v = Number(this.slider.value);
    this.img.style.opacity = String(v / 100);
    this.sliderOut.textContent = `${v}%`;
  }

  /** Draw the raw frame (from the video) under the overlay; without it the slider fades to black. */
  setRawFrame(source) {
    if (!source) {
      this.rawNote.textContent = "The raw frame is not available; 0% shows a dark background.";
      return;
    }
    this.rawCanvas.width = source.videoWidth || source.width;
    this.rawCanvas.height = source.videoHeight || source.height;
    this.rawCanvas.getContext("2d").drawImage(source, 0, 0, this.rawCanvas.width, this.rawCanvas.height);
    this.rawCanvas.dataset.ready = "true";
  }

  setMethod(method) {
    this.method = method;
    this.methodHelp.textContent = METHODS.find(([v]) => v === method)[2];
    return this.load();
  }

  /** Explain another moment of the event (the video's current frame). */
  setTime(timeMs) {
    this.timeMs = timeMs;
    return this.load();
  }

  async load() {
    const ticket = ++this.request;
    const method = this.method;
    const timeMs = this.timeMs;
    const cacheKey = `${method}@${Math.round(timeMs)}`;
    const name = METHODS.find(([v]) => v === method)[1];
    this.img.setAttribute("aria-busy", "true");
    this.timeNote.textContent = `Frame at ${fmtTime(timeMs)}${timeMs === this.keyframeMs ? " (key frame)" : ""}.`;
    try {
      let url = this.cache.get(cacheKey);
      if (!url) {
        this.status.textContent = `Loading ${name}…`;
        url = await this.fetchOverlay(method, timeMs, () => ticket !== this.request, name);
        this.cache.set(cacheKey, url);
      }
      if (ticket !== this.request) return;
      await this.show(url, `${name} explanation of the ${timeMs === this.keyframeMs ? "key " : ""}frame at ${fmtTime(timeMs)}`);
      this.img.dataset.method = method;
      this.status.textContent = `${name} loaded.`;
    } catch (err) {
      if (ticket !== this.request) return;
      this.status.textContent = `Could not load the ${name} overlay: ${err.message}`;
    } finally {
      if (ticket === this.request) this.img.removeAttribute("aria-busy");
    }
  }

  show(url, alt) {
    return new Promise((resolve, reject) => {
      this.img.onload = () => resolve();
      this.img.onerror = () => reject(new Error("the image could not be decoded"));
      this.img.alt = alt;
      this.img.src = url;
    });
  }

  async fetchOverlay(method, timeMs, cancelled, name) {
    const params = { method, wait: WAIT_S };
    if (timeMs !== this.keyframeMs) params.time = new Date(timeMs).toISOString();
    const path = `/v1/events/${encodeURIComponent(this.eventId)}/overlay`;
    const deadline = Date.now() + JOB_TIMEOUT_MS;
    for (;;) {
      const response = await raw(path + query(params));
      if (response.status !== 202) return URL.createObjectURL(await response.blob());
      // Not rendered yet: follow the render job, then ask again.
      const body = await response.json().catch(() => ({}));
      this.status.textContent = `Rendering ${name} on a worker…`;
      if (body.job_id) await waitForJob(body.job_id, cancelled, (p) => {
        this.status.textContent = `Rendering ${name} on a worker… ${Math.round((p || 0) * 100)}%`;
      });
      if (cancelled()) throw new ApiError(0, { detail: "cancelled" });
      if (Date.now() > deadline) throw new ApiError(0, { detail: "the render job took too long" });
    }
  }
}

async function waitForJob(jobId, cancelled, onProgress) {
  for (;;) {
    if (cancelled()) return;
    const job = await json(`/v1/jobs/${encodeURIComponent(jobId)}`);
    if (job.status === "succeeded") return;
    if (job.status === "failed") throw new ApiError(0, { detail: job.error?.message || "render job failed" });
    onProgress(job.progress);
    await new Promise((r) => setTimeout(r, JOB_POLL_MS));
  }
}
