// Small DOM and formatting helpers shared by every page (no framework: the viewer has no build step).

const SVG_NS = "http://www.w3.org/2000/svg";

/** Create an HTML element: h("button", {type: "button", onclick: f}, "Text", child). */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Create an SVG element with the same calling convention as h(). */
export function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "style") {
      // Through the CSSOM: allowed by the page's Content-Security-Policy (style-src 'self').
      el.style.cssText = String(value);
    } else if (name === "text") {
      el.textContent = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace every child of `el`. */
export function mount(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return el;
}

let toastTimer = 0;

/** Show a short status message in the polite live region. */
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.dataset.kind = kind;
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), 5000);
}

// --- time -----------------------------------------------------------------------------------

export const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const timeFmt = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

/** Epoch ms from an ISO-8601 string (the API's times are UTC). */
export function ms(iso) {
  return iso ? Date.parse(iso) : NaN;
}

/** ISO-8601 UTC from epoch ms, as the API expects. */
export function iso(msValue) {
  return new Date(msValue).toISOString();
}

export function fmtDateTime(msValue) {
  return Number.isFinite(msValue) ? dateTimeFmt.format(new Date(msValue)) : "—";
}

export function fmtTime(msValue) {
  return Number.isFinite(msValue) ? timeFmt.format(new Date(msValue)) : "—";
}

/** "4.2 s", "3 min 5 s", "2 h 10 min". */
export function fmtDuration(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** "5 min ago" relative to now. */
export function fmtAgo(msValue) {
  if (!Number.isFinite(msValue)) return "never";
  const s = (Date.now() - msValue) / 1000;
  if (s < 0) return "in the future";
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** Value for <input type="datetime-local" step="1"> in the browser's time zone. */
export function toLocalInput(msValue) {
  const d = new Date(msValue);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Epoch ms from a datetime-local value (read as local time). */
export function fromLocalInput(value) {
  return value ? new Date(value).getTime() : NaN;
}

export function fmtNumber(value, digits = 2) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
}

/** A stable colour per label name (same on every page; dark enough for white text, ≥ 4.5:1). */
export function labelColor(label) {
  let hash = 0;
  for (const ch of String(label)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  const hue = Math.round(((hash % 360) * 137.508) % 360);
  return `hsl(${hue} 70% 32%)`;
}
