// Streams page: every stream with its last activity and event counts per label.

import { all, ApiError } from "./api.js";
import { fmtAgo, fmtDateTime, h, labelColor, mount, ms } from "./dom.js";

const REFRESH_MS = 15000;

export async function render(main) {
  document.title = "Streams · Vigil";
  const status = h("p", { class: "muted", role: "status" }, "Loading streams…");
  const body = h("div", {});
  mount(main, h("section", { class: "page", "aria-labelledby": "streams-title" },
    h("div", { class: "page-head" },
      h("h1", { id: "streams-title" }, "Streams"),
      status),
    body));

  let timer = 0;
  let stopped = false;
  const refresh = async () => {
    try {
      const streams = await all("/v1/streams", { limit: 100 });
      if (stopped) return;
      status.textContent = `${streams.length} stream${streams.length === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`;
      mount(body, streams.length ? table(streams) : empty());
    } catch (err) {
      if (stopped) return;
      status.textContent = err instanceof ApiError ? `Could not load streams: ${err.message}` : String(err);
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  };
  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function empty() {
  return h("div", { class: "card empty" },
    h("p", {}, "No stream has sent video yet."),
    h("p", { class: "muted" }, "Recorders post segments to ", h("code", {}, "POST /v1/streams/{id}/segments"), "."));
}

function table(streams) {
  const rows = [...streams]
    .sort((a, b) => ms(b.last_segment_end) - ms(a.last_segment_end))
    .map((st) => {
      const last = ms(st.last_segment_end);
      const counts = Object.entries(st.event_counts || {}).sort(([a], [b]) => a.localeCompare(b));
      return h("tr", { dataset: { streamId: st.stream_id } },
        h("th", { scope: "row" }, h("a", { href: `#/streams/${encodeURIComponent(st.stream_id)}` }, st.stream_id)),
        h("td", {}, h("time", { datetime: st.last_segment_end, title: fmtDateTime(last) }, fmtAgo(last)),
          h("div", { class: "muted small" }, fmtDateTime(last))),
        h("td", { class: "num" }, String(st.segment_count ?? "—")),
        h("td", { class: "num", dataset: { count: String(st.event_count) } }, String(st.event_count)),
        h("td", {}, counts.length
          ? h("ul", { class: "chips", "aria-label": "Events per label" }, counts.map(([label, n]) =>
            h("li", { class: "chip", style: `--chip:${labelColor(label)}` },
              h("span", { class: "chip-label" }, label), h("span", { class: "chip-count" }, String(n)))))
          : h("span", { class: "muted" }, "none")));
    });
  return h("div", { class: "table-wrap" },
    h("table", { class: "data", id: "streams-table" },
      h("caption", { class: "visually-hidden" }, "Streams, most recently active first"),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Stream"),
        h("th", { scope: "col" }, "Last activity"),
        h("th", { scope: "col", class: "num" }, "Segments"),
        h("th", { scope: "col", class: "num" }, "Events"),
        h("th", { scope: "col" }, "By label"))),
      h("tbody", {}, rows)));
}
