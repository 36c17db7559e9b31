// Admin page (admin keys only): the model registry with activate/rollback, training jobs with
// progress and metrics, a retraining form over clinician labels, and API keys.

import { all, json, query } from "./api.js";
import { fmtDateTime, fmtNumber, h, mount, ms, toast } from "./dom.js";
import { renderKeys } from "./admin-keys.js";
import { renderTrainingForm } from "./admin-train.js";

const POLL_MS = 3000;
const JOBS_PAGE = 20;

export async function render(main, { session }) {
  document.title = "Admin · Vigil";
  const modelsBox = h("div", {}, h("p", { class: "muted" }, "Loading models…"));
  const jobsBox = h("div", {}, h("p", { class: "muted" }, "Loading training jobs…"));
  const formBox = h("div", { class: "card" });
  const keysBox = h("div", { class: "card" });
  mount(main, h("section", { class: "page", "aria-labelledby": "admin-title" },
    h("div", { class: "page-head" }, h("h1", { id: "admin-title" }, "Administration")),
    h("section", { "aria-labelledby": "models-title" }, h("h2", { id: "models-title" }, "Models"), modelsBox),
    h("section", { "aria-labelledby": "jobs-title" }, h("h2", { id: "jobs-title" }, "Training jobs"), jobsBox),
    h("section", { "aria-labelledby": "train-title" }, h("h2", { id: "train-title" }, "Retrain from labeled intervals"), formBox),
    h("section", { "aria-labelledby": "keys-title" }, h("h2", { id: "keys-title" }, "API keys"), keysBox)));

  const state = { stopped: false, timer: 0, models: [], jobPages: 1 };
  const refreshModels = async () => {
    try {
      state.models = await all("/v1/admin/models", { limit: 100 });
      mount(modelsBox, modelsTable(state.models, refreshModels));
    } catch (err) {
      mount(modelsBox, h("p", { role: "alert" }, `Could not load models: ${err.message}`));
    }
  };
  const refreshJobs = async () => {
    clearTimeout(state.timer);
    try {
      const { jobs, more } = await loadJobs(state.jobPages);
      if (state.stopped) return;
      const older = more ? h("button", {
        type: "button", class: "btn btn-small", id: "jobs-more",
        onclick: () => { state.jobPages += 1; refreshJobs(); },
      }, "Show older jobs") : null;
      mount(jobsBox, jobs.length ? [jobsTable(jobs), older] : h("p", { class: "muted" }, "No training job yet."));
      const running = jobs.some((j) => j.status === "queued" || j.status === "running");
      if (running) state.timer = setTimeout(refreshJobs, POLL_MS);
      else if (jobs.some((j) => j.result?.promoted)) await refreshModels();
    } catch (err) {
      mount(jobsBox, h("p", { role: "alert" }, `Could not load training jobs: ${err.message}`));
    }
  };
  await refreshModels();
  await refreshJobs();
  renderTrainingForm(formBox, {
    onStarted: () => refreshJobs(),
  });
  renderKeys(keysBox, session.keyId);
  return () => {
    state.stopped = true;
    clearTimeout(state.timer);
  };
}

function modelsTable(models, refresh) {
  if (!models.length) return h("p", { class: "muted" }, "The registry has no model yet.");
  const active = models.find((m) => m.active);
  const metricNames = [...new Set(models.flatMap((m) => Object.keys(m.metrics || {})))].sort();
  return h("div", { class: "table-wrap" }, h("table", { class: "data", id: "models-table" },
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Version"), h("th", { scope: "col" }, "Created"),
      h("th", { scope: "col" }, "Classes"),
      metricNames.map((m) => h("th", { scope: "col", class: "num" }, m)),
      h("th", { scope: "col" }, "Parent"), h("th", { scope: "col" }, "State"))),
    h("tbody", {}, models.map((m) => h("tr", { dataset: { version: m.version, active: String(!!m.active) } },
      h("th", { scope: "row", class: "mono" }, m.version),
      h("td", {}, fmtDateTime(ms(m.created_at))),
      h("td", {}, (m.classes || []).join(", ")),
      metricNames.map((name) => h("td", { class: "num" }, fmtNumber(m.metrics?.[name], 3))),
      h("td", { class: "mono small" }, m.parent || "—"),
      h("td", {}, m.active ? h("span", { class: "badge badge-active" }, "active")
        : activateButton(m, active, refresh)))))));
}

function activateButton(model, active, refresh) {
  const older = active && ms(model.created_at) < ms(active.created_at);
  const text = older ? "Roll back to this" : "Activate";
  const button = h("button", { type: "button", class: "btn btn-small", dataset: { activate: model.version } }, text);
  button.addEventListener("click", async () => {
    const question = `${text}: the workers will use model ${model.version} for the next jobs. Continue?`;
    if (!window.confirm(question)) return;
    button.disabled = true;
    try {
      await json(`/v1/admin/models/${encodeURIComponent(model.version)}/activate`, { method: "POST" });
      toast(`Model ${model.version} is now active.`);
      await refresh();
    } catch (err) {
      toast(`Could not activate: ${err.message}`, "error");
      button.disabled = false;
    }
  });
  return button;
}

/**
 * The newest `pages` pages of training jobs (GET /v1/admin/training-jobs, newest first), and
 * whether older ones remain.
 */
async function loadJobs(pages) {
  const jobs = [];
  let cursor = null;
  for (let page = 0; page < pages; page += 1) {
    const body = await json(`/v1/admin/training-jobs${query({ limit: JOBS_PAGE, cursor })}`);
    jobs.push(...(body.data || []));
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return { jobs, more: Boolean(cursor) };
}

function jobsTable(jobs) {
  return h("div", { class: "table-wrap" }, h("table", { class: "data", id: "jobs-table" },
    h("thead", {}, h("tr", {}, ["Job", "Started", "Method", "Status", "Progress", "New model",
      "Macro-F1 new / active", "Promoted"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, jobs.map((job) => {
      const spec = job.spec || {};
      const res = job.result || {};
      const pct = Math.round((job.progress || 0) * 100);
      return h("tr", { dataset: { jobId: job.job_id, status: job.status } },
        h("th", { scope: "row", class: "mono small" }, job.job_id),
        h("td", {}, fmtDateTime(ms(job.started_at || job.created_at))),
        h("td", {}, spec.method || "—"),
        h("td", {}, h("span", { class: `badge badge-${job.status}` }, job.status),
          job.error ? h("div", { class: "small", role: "note" }, job.error.message) : null),
        h("td", {}, h("progress", { max: 100, value: pct, "aria-label": `Progress of job ${job.job_id}` }), ` ${pct}%`),
        h("td", { class: "mono small" }, res.version || "—"),
        h("td", { class: "num" }, `${fmtNumber(res.metrics?.macro_f1, 3)} / ${fmtNumber(res.active_metrics?.macro_f1, 3)}`),
        h("td", {}, res.version ? (res.promoted ? "yes" : "no") : "—"));
    }))));
}
