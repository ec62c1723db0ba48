// The recent-jobs table. Rows are keyed by job id and updated in place, so a tick does
// not rebuild the table (text selection and hover survive). Every job field reaches the
// page through textContent, a title or a clamped number, never as markup.
//
// Stalled jobs (no progress for the server's stall_after) come first, with a badge; the
// rest keep the server's order, newest first.

import {
  clampProgress,
  formatDuration,
  formatEta,
  formatLocalTime,
  parseTime,
  toNumber,
} from "./format.js";

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
  const instance = cell(tr, "col-instance"); // the fleet's; hidden by CSS otherwise
  const nameCell = cell(tr, "col-name");
  const name = document.createElement("span");
  name.className = "job-name";
  const error = document.createElement("span");
  error.className = "job-error";
  nameCell.append(name, error);

  const badge = document.createElement("span");
  badge.className = "badge";
  const stall = document.createElement("span");
  stall.className = "stall-badge";
  stall.dataset.testid = "stalled-badge";
  stall.textContent = "stalled";
  stall.hidden = true;
  cell(tr, "col-status").append(badge, stall);

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

  const etaCell = cell(tr, "col-eta");
  const eta = document.createElement("time");
  etaCell.append(eta);

  const provider = cell(tr, "col-provider");
  const vm = cell(tr, "col-vm");
  const duration = cell(tr, "col-duration");
  const startCell = cell(tr, "col-start");
  const start = document.createElement("time");
  startCell.append(start);

  return {
    tr, idCell, instance, name, error, badge, stall, bar, fill, percent, eta, provider, vm,
    duration, start,
  };
}

function setText(element, value) {
  if (element.textContent !== value) element.textContent = value;
}

function fillRow(parts, job) {
  setText(parts.idCell, text(job.id));
  setText(parts.instance, text(job.instance));
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

  const stalled = job.stalled === true;
  parts.tr.dataset.stalled = String(stalled);
  parts.tr.dataset.lastProgressAt =
    typeof job.last_progress_at === "string" ? job.last_progress_at : "";
  parts.stall.hidden = !stalled;
  const since = parseTime(job.last_progress_at);
  const sinceText = since === null ? "" : ` since ${formatLocalTime(job.last_progress_at)}`;
  setTitle(parts.stall, stalled ? `No progress${sinceText}` : "");

  fillEta(parts.eta, job);

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

function setTitle(element, value) {
  if (value === "") element.removeAttribute("title");
  else if (element.title !== value) element.title = value;
}

/** "in 4 min", with the absolute local time on hover; a dash when there is no estimate. */
function fillEta(element, job) {
  const known = job.status === "running" && job.stalled !== true &&
    job.eta_seconds !== null && job.eta_seconds !== undefined &&
    Number.isFinite(Number(job.eta_seconds)) && Number(job.eta_seconds) >= 0;
  element.dataset.eta = known ? String(toNumber(job.eta_seconds)) : "";
  if (!known) {
    setText(element, "\u2014");
    element.removeAttribute("datetime");
    setTitle(element, "");
    return;
  }
  const seconds = toNumber(job.eta_seconds);
  setText(element, formatEta(seconds));
  // Rounded to the minute, so the hover text does not change on every tick.
  const at = new Date(Math.round((Date.now() + seconds * 1000) / 60000) * 60000);
  const iso = at.toISOString();
  if (element.dateTime !== iso) element.dateTime = iso;
  setTitle(element, `Expected to finish at ${formatLocalTime(iso)}`);
}

/** Shows up to 50 jobs, stalled ones first, then newest first as the server sends them; an
 * empty list shows a note. */
export function updateJobsTable(jobs) {
  const body = document.getElementById("jobs-body");
  if (!body) return;
  const list = Array.isArray(jobs) ? jobs : [];
  const seen = new Set();
  const ordered = [];
  let fleet = false;
  for (const job of list) {
    if (ordered.length >= MAX_ROWS) break;
    if (!job || typeof job !== "object") continue;
    const id = text(job.id);
    // A fleet's job ids are unique per instance only.
    const key = job.instance === undefined ? id : `${text(job.instance)}\u0000${id}`;
    if (job.instance !== undefined) fleet = true;
    if (seen.has(key)) continue; // a duplicate id would fight over one row
    seen.add(key);
    let parts = rows.get(key);
    if (!parts) {
      parts = createRow(id);
      rows.set(key, parts);
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
  // Stable: each group keeps the server's order.
  const stalled = ordered.filter((tr) => tr.dataset.stalled === "true");
  if (stalled.length > 0) {
    const moving = ordered.filter((tr) => tr.dataset.stalled !== "true");
    ordered.splice(0, ordered.length, ...stalled, ...moving);
  }
  const current = body.children;
  const sameOrder =
    current.length === ordered.length && ordered.every((tr, i) => current[i] === tr);
  if (!sameOrder) body.replaceChildren(...ordered);

  const table = document.getElementById("jobs-table");
  if (table) table.dataset.instances = String(fleet);
  const empty = document.getElementById("jobs-empty");
  if (empty) empty.hidden = ordered.length > 0;
  const count = document.getElementById("jobs-count");
  if (count) {
    count.dataset.count = String(ordered.length);
    count.dataset.stalled = String(stalled.length);
    const label = ordered.length === 1 ? "1 job" : `${ordered.length} jobs`;
    count.textContent = stalled.length > 0 ? `${label}, ${stalled.length} stalled` : label;
  }
}
