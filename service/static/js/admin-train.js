// The retraining form: streams whose clinician labels become training data, the method
// (supervised or ATCON), hyper-parameters and the promotion rule; POST /v1/admin/training-jobs.

import { all, json } from "./api.js";
import { h, mount, toast } from "./dom.js";

const METHODS = [
  ["supervised", "Supervised", "Fine-tune on the labeled frames only."],
  ["atcon_guided_backprop", "ATCON · Guided Backprop",
    "Also make Grad-CAM and Guided Backprop agree on unlabeled frames (the paper's main variant)."],
  ["atcon_integrated_gradients", "ATCON · Integrated Gradients",
    "Also make Grad-CAM and Integrated Gradients agree on unlabeled frames."],
];

const HYPER = [
  ["epochs", "Epochs", 3, { min: 1, max: 200, step: 1 }],
  ["batch_size", "Batch size", 16, { min: 1, max: 512, step: 1 }],
  ["learning_rate", "Learning rate", 0.001, { min: 0.0000001, max: 1, step: "any" }],
  ["consistency_weight", "Consistency weight λ", 0.5, { min: 0, max: 100, step: "any" }],
  ["sample_fps", "Sample rate (fps)", 1, { min: 0.1, max: 30, step: "any" }],
  ["val_fraction", "Validation fraction", 0.25, { min: 0.05, max: 0.95, step: "any" }],
  ["seed", "Seed", 0, { step: 1 }],
];

export async function renderTrainingForm(box, { onStarted }) {
  mount(box, h("p", { class: "muted" }, "Loading streams and labels…"));
  let streams;
  try {
    streams = await all("/v1/streams", { limit: 100 });
    await Promise.all(streams.map(async (st) => {
      st._labels = await all(`/v1/streams/${encodeURIComponent(st.stream_id)}/labels`, { limit: 500 }, { maxPages: 4 });
    }));
  } catch (err) {
    mount(box, h("p", { role: "alert" }, `Could not load streams: ${err.message}`));
    return;
  }
  const error = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", id: "train-submit" }, "Start retraining");
  const streamChecks = streams.map((st) => {
    const id = `train-stream-${st.stream_id}`;
    const counts = {};
    for (const lb of st._labels) counts[lb.label] = (counts[lb.label] || 0) + 1;
    const summary = Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ") || "no labels";
    return h("div", { class: "check" },
      h("input", { type: "checkbox", id, name: "stream", value: st.stream_id, checked: st._labels.length > 0 }),
      h("label", { for: id }, h("span", { class: "mono" }, st.stream_id), h("span", { class: "muted small" }, ` — ${summary}`)));
  });
  const methodRadios = METHODS.map(([value, name, help], i) => h("div", { class: "check" },
    h("input", { type: "radio", id: `train-method-${value}`, name: "method", value, checked: i === 0 }),
    h("label", { for: `train-method-${value}` }, name, h("span", { class: "muted small" }, ` — ${help}`))));
  const hyper = HYPER.map(([name, label, value, attrs]) => h("div", { class: "field" },
    h("label", { for: `train-${name}` }, label),
    h("input", { type: "number", id: `train-${name}`, name, value, required: true, ...attrs })));
  const promotion = [["manual", "Manual: an admin activates the new model"],
    ["auto", "Automatic: only if its validation macro-F1 is not below the active model's"]]
    .map(([value, text], i) => h("div", { class: "check" },
      h("input", { type: "radio", id: `train-promotion-${value}`, name: "promotion", value, checked: i === 0 }),
      h("label", { for: `train-promotion-${value}` }, text)));
  const unlabeled = h("textarea", { id: "train-unlabeled", name: "unlabeled", rows: 2, "aria-describedby": "train-unlabeled-help" });
  const form = h("form", { class: "stack", id: "train-form" },
    h("fieldset", {}, h("legend", {}, "Labeled streams (their clinician labels are the positives)"),
      streamChecks.length ? streamChecks : h("p", { class: "muted" }, "No stream yet.")),
    h("fieldset", {}, h("legend", {}, "Method"), methodRadios),
    h("div", { class: "field" }, h("label", { for: "train-unlabeled" }, "Unlabeled segment ids for ATCON (optional)"), unlabeled,
      h("p", { class: "help", id: "train-unlabeled-help" }, "One per line or separated by commas.")),
    h("fieldset", {}, h("legend", {}, "Hyper-parameters"), h("div", { class: "grid-fields" }, hyper)),
    h("fieldset", {}, h("legend", {}, "Promotion"), promotion),
    error, h("div", { class: "row" }, submit));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const data = new FormData(form);
    const chosen = data.getAll("stream");
    if (!chosen.length) {
      error.textContent = "Choose at least one stream with labels.";
      return;
    }
    const body = {
      streams: chosen.map((stream_id) => ({ stream_id, intervals: null })),
      unlabeled_segment_ids: String(data.get("unlabeled") || "").split(/[\s,]+/).filter(Boolean),
      method: data.get("method"),
      hyperparameters: Object.fromEntries(HYPER.map(([name]) => [name, Number(data.get(name))])),
      promotion: data.get("promotion"),
    };
    submit.disabled = true;
    try {
      const job = await json("/v1/admin/training-jobs", { method: "POST", body });
      toast(`Training job ${job.job_id} queued.`);
      onStarted(job);
    } catch (err) {
      error.textContent = `Could not start the job: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
  });
  mount(box, form);
}
