// The recent-jobs table. Rows are keyed by job id and updated in place, so a tick does
// not rebuild the table (text selection and hover survive). Every job field reaches the
// page through textContent, a title or a clamped number, never as markup.
//
// A tick usually changes a few cells of a few rows. Each row remembers what it shows
// (`parts.shown`) and a cell is written only when its text or attribute would change, with
// no read of the DOM: an unchanged write still costs a style invalidation, and a read
// after a write forces a layout. Rows that change places are moved one by one, the fewest
// moves that give the new order, so the other rows are neither re-inserted nor rewritten.
// (Chromium still lays out and repaints the whole table when any cell changes; see
// bench/RESULTS.md, section 6.)
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
    shown: {}, // field -> what the row shows for it now (see `changed`)
  };
}

/** Whether `key` of a row now shows something else than `value`; records `value`. */
function changed(parts, key, value) {
  if (Object.hasOwn(parts.shown, key) && parts.shown[key] === value) return false;
  parts.shown[key] = value;
  return true;
}

function setTitle(element, value) {
  if (value === "") element.removeAttribute("title");
  else element.title = value;
}

function fillRow(parts, job, clock) {
  const { tr } = parts;
  if (changed(parts, "id", text(job.id))) parts.idCell.textContent = parts.shown.id;
  if (changed(parts, "instance", text(job.instance))) {
    parts.instance.textContent = parts.shown.instance;
  }
  if (changed(parts, "name", text(job.name))) parts.name.textContent = parts.shown.name;
  const error = text(job.error_msg);
  if (changed(parts, "error", error)) {
    parts.error.textContent = error;
    parts.error.hidden = error === "";
  }

  const status = text(job.status);
  if (changed(parts, "status", status)) {
    const known = STATUSES.has(status) ? status : "unknown";
    parts.badge.className = `badge badge-${known}`;
    parts.badge.dataset.status = known;
    parts.badge.textContent = status || "unknown";
    tr.dataset.status = known;
    parts.fill.dataset.status = known;
  }

  const progress = clampProgress(job.progress);
  if (changed(parts, "progress", progress)) {
    const rounded = Math.round(progress);
    parts.fill.style.width = `${progress}%`;
    parts.bar.setAttribute("aria-valuenow", String(rounded));
    parts.bar.dataset.value = String(progress);
    parts.percent.textContent = `${rounded}%`;
  }

  const stalled = job.stalled === true;
  const lastProgressAt = typeof job.last_progress_at === "string" ? job.last_progress_at : "";
  if (changed(parts, "stalled", stalled)) {
    tr.dataset.stalled = String(stalled);
    parts.stall.hidden = !stalled;
  }
  if (changed(parts, "stallTitle", `${stalled}|${lastProgressAt}|${clock.day}`)) {
    tr.dataset.lastProgressAt = lastProgressAt;
    const since = parseTime(lastProgressAt) === null
      ? "" : ` since ${formatLocalTime(lastProgressAt, clock.now)}`;
    setTitle(parts.stall, stalled ? `No progress${since}` : "");
  }

  fillEta(parts, job, clock);

  if (changed(parts, "provider", text(job.provider))) {
    parts.provider.textContent = parts.shown.provider;
  }
  if (changed(parts, "vm", text(job.vm_name))) parts.vm.textContent = parts.shown.vm;
  const started = parseTime(job.start_time);
  // A job that has not started has no duration yet (the server may still send 0).
  const notStarted = started === null && !(Number(job.duration) > 0);
  const duration = notStarted ? "\u2014" : formatDuration(job.duration);
  if (changed(parts, "duration", duration)) parts.duration.textContent = duration;

  // The start reads as a time alone today and with its date otherwise: it depends on the day.
  if (changed(parts, "start", `${started}|${clock.day}`)) {
    parts.start.textContent = formatLocalTime(job.start_time, clock.now);
    if (started === null) {
      parts.start.removeAttribute("datetime");
      parts.start.removeAttribute("title");
    } else {
      const iso = new Date(started).toISOString();
      parts.start.dateTime = iso;
      parts.start.title = iso;
    }
  }
}

/** "in 4 min", with the absolute local time on hover; a dash when there is no estimate. */
function fillEta(parts, job, clock) {
  const element = parts.eta;
  const known = job.status === "running" && job.stalled !== true &&
    job.eta_seconds !== null && job.eta_seconds !== undefined &&
    Number.isFinite(Number(job.eta_seconds)) && Number(job.eta_seconds) >= 0;
  if (!known) {
    if (changed(parts, "eta", null)) {
      element.dataset.eta = "";
      parts.shown.etaText = "\u2014";
      element.textContent = parts.shown.etaText;
      delete parts.shown.etaAt; // an estimate that comes back gets its hover text again
      element.removeAttribute("datetime");
      setTitle(element, "");
    }
    return;
  }
  const seconds = toNumber(job.eta_seconds);
  if (changed(parts, "eta", seconds)) {
    element.dataset.eta = String(seconds);
    const shown = formatEta(seconds);
    if (changed(parts, "etaText", shown)) element.textContent = shown;
  }
  // Rounded to the minute, so the hover text does not change on every tick.
  const minute = Math.round((clock.now.getTime() + seconds * 1000) / 60000) * 60000;
  if (changed(parts, "etaAt", minute)) {
    const iso = new Date(minute).toISOString();
    element.dateTime = iso;
    setTitle(element, `Expected to finish at ${formatLocalTime(iso, clock.now)}`);
  }
}

/**
 * Puts `body`'s rows in the order `ordered` (every row of which is already in `body` or
 * new) with the fewest moves: the longest run of rows already in the right relative order
 * stays put, and each other row is inserted before its successor, from the end backwards.
 * When one job moves to the top, one row moves; re-inserting all 50 would relayout and
 * repaint the whole table.
 */
function reorder(body, ordered) {
  const current = body.children;
  if (current.length === ordered.length && ordered.every((tr, i) => current[i] === tr)) return;
  const place = new Map();
  for (let i = 0; i < current.length; i += 1) place.set(current[i], i);
  const staying = stayingRows(ordered, place);
  let anchor = null;
  for (let i = ordered.length - 1; i >= 0; i -= 1) {
    const tr = ordered[i];
    if (!staying.has(tr)) body.insertBefore(tr, anchor);
    anchor = tr;
  }
}

/** The rows of `ordered` that form the longest run increasing in `place` (patience sort). */
function stayingRows(ordered, place) {
  const tails = []; // tails[k]: index in `ordered` ending the best run of length k + 1
  const previous = new Array(ordered.length).fill(-1);
  for (let i = 0; i < ordered.length; i += 1) {
    const at = place.get(ordered[i]);
    if (at === undefined) continue; // a new row always moves in
    let lo = 0;
    let hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (place.get(ordered[tails[mid]]) < at) lo = mid + 1;
      else hi = mid;
    }
    previous[i] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = i;
  }
  const staying = new Set();
  for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = previous[i]) {
    staying.add(ordered[i]);
  }
  return staying;
}

let shownCount = null;

/** Shows up to 50 jobs, stalled ones first, then newest first as the server sends them; an
 * empty list shows a note. */
export function updateJobsTable(jobs) {
  const body = document.getElementById("jobs-body");
  if (!body) return;
  const list = Array.isArray(jobs) ? jobs : [];
  const now = new Date();
  // Made once per message for every row: which day it is decides how start times read.
  const clock = { now, day: `${now.getFullYear()}-${now.getMonth()}-${now.getDate()}` };
  const seen = new Set();
  const stalled = [];
  const moving = [];
  let fleet = false;
  for (const job of list) {
    if (seen.size >= MAX_ROWS) break;
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
    fillRow(parts, job, clock);
    // Stable: each group keeps the server's order.
    (parts.shown.stalled ? stalled : moving).push(parts.tr);
  }
  for (const [id, parts] of rows) {
    if (!seen.has(id)) {
      parts.tr.remove();
      rows.delete(id);
    }
  }
  const ordered = stalled.length > 0 ? stalled.concat(moving) : moving;
  reorder(body, ordered);

  const table = document.getElementById("jobs-table");
  if (table && table.dataset.instances !== String(fleet)) table.dataset.instances = String(fleet);
  const count = `${ordered.length}|${stalled.length}`;
  if (count !== shownCount) {
    shownCount = count;
    const empty = document.getElementById("jobs-empty");
    if (empty) empty.hidden = ordered.length > 0;
    const counter = document.getElementById("jobs-count");
    if (counter) {
      counter.dataset.count = String(ordered.length);
      counter.dataset.stalled = String(stalled.length);
      const label = ordered.length === 1 ? "1 job" : `${ordered.length} jobs`;
      counter.textContent = stalled.length > 0 ? `${label}, ${stalled.length} stalled` : label;
    }
  }
}
