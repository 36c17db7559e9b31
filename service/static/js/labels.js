// The labeling dialog: a clinician names an interval of a stream; it is posted to the labels API.

import { ApiError, json } from "./api.js";
import { fromLocalInput, h, iso, ms, TIME_ZONE, toast } from "./dom.js";

const LABEL_PATTERN = "[A-Za-z0-9._\\-]+";

function toLocalMsInput(msValue) {
  // datetime-local with millisecond precision (step 0.001) so a dragged interval is kept exactly.
  const d = new Date(msValue);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/**
 * Ask for a label over [startMs, endMs] and POST it. Resolves with the created label (with
 * _start/_end in ms) or null when cancelled.
 */
export function openLabelDialog({ streamId, startMs, endMs, knownLabels = [], suggested = "" }) {
  return new Promise((resolve) => {
    const error = h("p", { class: "form-error", role: "alert" });
    const name = h("input", {
      id: "label-name", name: "label", required: true, pattern: LABEL_PATTERN, maxlength: 64,
      list: "label-suggestions", value: suggested, autocomplete: "off", "aria-describedby": "label-name-help",
    });
    const start = h("input", { id: "label-start", type: "datetime-local", step: "0.001", required: true, value: toLocalMsInput(startMs) });
    const end = h("input", { id: "label-end", type: "datetime-local", step: "0.001", required: true, value: toLocalMsInput(endMs) });
    const save = h("button", { type: "submit", class: "btn btn-primary", id: "label-save" }, "Save label");
    const cancel = h("button", { type: "button", class: "btn", value: "cancel" }, "Cancel");
    const form = h("form", { method: "dialog", class: "stack" },
      h("h2", { id: "label-title" }, `Label an interval of ${streamId}`),
      h("label", { for: "label-name" }, "Label"),
      name,
      h("datalist", { id: "label-suggestions" }, knownLabels.map((l) => h("option", { value: l }))),
      h("p", { class: "help", id: "label-name-help" }, "Letters, digits, dot, dash or underscore, e.g. fall or bed_exit."),
      h("div", { class: "row" },
        h("div", { class: "field" }, h("label", { for: "label-start" }, `Start (${TIME_ZONE})`), start),
        h("div", { class: "field" }, h("label", { for: "label-end" }, `End (${TIME_ZONE})`), end)),
      error,
      h("div", { class: "row row-end" }, cancel, save));
    const dialog = h("dialog", { class: "dialog", "aria-labelledby": "label-title", id: "label-dialog" }, form);
    document.body.append(dialog);

    const close = (result) => {
      dialog.close();
      dialog.remove();
      resolve(result);
    };
    cancel.addEventListener("click", () => close(null));
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      close(null);
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const a = fromLocalInput(start.value);
      const b = fromLocalInput(end.value);
      if (!(b > a)) {
        error.textContent = "The end must be after the start.";
        return;
      }
      save.disabled = true;
      error.textContent = "";
      try {
        const created = await json(`/v1/streams/${encodeURIComponent(streamId)}/labels`, {
          method: "POST", body: { label: name.value.trim(), start: iso(a), end: iso(b) },
        });
        toast(`Label “${created.label}” saved.`);
        close({ ...created, _start: ms(created.start), _end: ms(created.end) });
      } catch (err) {
        error.textContent = err instanceof ApiError && err.status === 403
          ? "Your key may not create labels (needs the ingest or admin role)."
          : `Could not save the label: ${err.message}`;
        save.disabled = false;
      }
    });
    dialog.showModal();
    name.focus();
  });
}
