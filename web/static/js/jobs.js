// The recent-jobs table. Rows are keyed by job id and updated in place, so a tick does
// not rebuild the table (text selection and hover survive). Every job field reaches the
// page through textContent or a clamped number, never as markup.

import { clampProgress, formatDuration, formatLocalTime, parseTime } from "./format.js";

export const MAX_ROWS = 50;
const STATUSES = new Set(["pending", "running", "completed", "failed", "cancelled"]);

const rows = new Map(); // job id -> row parts

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function cell(row, className) {
  const td = document.createElement("td");
  td.className = className;
  row.append(td);
  return td;
}

function createRow(id) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = id;
  tr.dataset.testid = "job-row";

  const idCell = cell(tr, "col-id");
  const nameCell = cell(tr, "col-name");
  const name = document.createElement("span");
  name.className = "job-name";
  const error = document.createElement("span");
  error.className = "job-error";
  nameCell.append(name, error);

  const badge = document.createElement("span");
  badge.className = "badge";
  cell(tr, "col-status").append(badge);

  const progressCell = cell(tr, "col-progress");
  const bar = document.createElement("div");
  bar.className = "progress";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  const fill = document.createElement("div");
  fill.className = "progress-fill";
  bar.append(fill);
  const percent = document.createElement("span");
  percent.className = "progress-text";
  progressCell.append(bar, percent);

  const provider = cell(tr, "col-provider");
  const vm = cell(tr, "col-vm");
  const duration = cell(tr, "col-duration");
  const startCell = cell(tr, "col-start");
  const start = document.createElement("time");
  startCell.append(start);

  return { tr, idCell, name, error, badge, bar, fill, percent, provider, vm, duration, start };
}

function setText(element, value) {
  if (element.textContent !== value) element.textContent = value;
}

function fillRow(parts, job) {
  setText(parts.idCell, text(job.id));
  setText(parts.name, text(job.name));
  const error = text(job.error_msg);
  setText(parts.error, error);
  parts.error.hidden = error === "";

  const status = text(job.status);
  const known = STATUSES.has(status) ? status : "unknown";
  parts.badge.className = `badge badge-${known}`;
  parts.badge.dataset.status = known;
  setText(parts.badge, status || "unknown");
  parts.tr.dataset.status = known;

  const progress = clampProgress(job.progress);
  const rounded = Math.round(progress);
  parts.fill.style.width = `${progress}%`;
  parts.bar.setAttribute("aria-valuenow", String(rounded));
  parts.bar.dataset.value = String(progress);
  parts.fill.dataset.status = known;
  setText(parts.percent, `${rounded}%`);

  setText(parts.provider, text(job.provider));
  setText(parts.vm, text(job.vm_name));
  const started = parseTime(job.start_time);
  // A job that has not started has no duration yet (the server may still send 0).
  const notStarted = started === null && !(Number(job.duration) > 0);
  setText(parts.duration, notStarted ? "\u2014" : formatDuration(job.duration));

  setText(parts.start, formatLocalTime(job.start_time));
  if (started === null) {
    parts.start.removeAttribute("datetime");
    parts.start.removeAttribute("title");
  } else {
    const iso = new Date(started).toISOString();
    parts.start.dateTime = iso;
    parts.start.title = iso;
  }
}

/** Shows up to 50 jobs, newest first as the server sends them; an empty list shows a note. */
export function updateJobsTable(jobs) {
  const body = document.getElementById("jobs-body");
  if (!body) return;
  const list = Array.isArray(jobs) ? jobs : [];
  const seen = new Set();
  const ordered = [];
  for (const job of list) {
    if (ordered.length >= MAX_ROWS) break;
    if (!job || typeof job !== "object") continue;
    const id = text(job.id);
    if (seen.has(id)) continue; // a duplicate id would fight over one row
    seen.add(id);
    let parts = rows.get(id);
    if (!parts) {
      parts = createRow(id);
      rows.set(id, parts);
    }
    fillRow(parts, job);
    ordered.push(parts.tr);
  }
  for (const [id, parts] of rows) {
    if (!seen.has(id)) {
      parts.tr.remove();
      rows.delete(id);
    }
  }
  const current = body.children;
  const sameOrder =
    current.length === ordered.length && ordered.every((tr, i) => current[i] === tr);
  if (!sameOrder) body.replaceChildren(...ordered);

  const empty = document.getElementById("jobs-empty");
  if (empty) empty.hidden = ordered.length > 0;
  const count = document.getElementById("jobs-count");
  if (count) {
    count.dataset.count = String(ordered.length);
    count.textContent = ordered.length === 1 ? "1 job" : `${ordered.length} jobs`;
  }
}
