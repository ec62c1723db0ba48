// The fleet's parts of the page: the instances table and the Prometheus/Alertmanager status.
//
// Only `hyperdash fleet` sends the `instances` and `fleet` keys; without them both parts stay
// hidden and the page is the single-instance page. Rows are keyed by instance and updated in
// place; every value reaches the page through textContent or a clamped number.

import { formatDuration, toNumber } from "./format.js";

/** Rows shown at most; the rest are counted in the panel's head (a bound on the DOM). */
export const MAX_INSTANCE_ROWS = 500;
const HEALTH = new Set(["healthy", "degraded", "unhealthy", "unknown"]);

const rows = new Map(); // instance -> row parts

function setText(element, value) {
  if (element.textContent !== value) element.textContent = value;
}

/** How long ago the last scrape was: "0.7 s ago", "12 s ago", "3m 5s ago"; a dash if unknown. */
export function formatScrapeAge(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "\u2014";
  const n = typeof seconds === "number" ? seconds : Number(seconds);
  if (!Number.isFinite(n) || n < 0) return "\u2014";
  if (n < 10) return `${n.toFixed(1)} s ago`;
  if (n < 60) return `${Math.round(n)} s ago`;
  return `${formatDuration(n)} ago`;
}

function count(value) {
  return String(Math.max(0, Math.round(toNumber(value))));
}

function createRow(name) {
  const tr = document.createElement("tr");
  tr.dataset.instance = name;
  tr.dataset.testid = "instance-row";
  const cells = {};
  for (const key of ["instance", "state", "health", "active", "queue", "failed", "age"]) {
    const td = document.createElement("td");
    td.className = `inst-${key}`;
    tr.append(td);
    cells[key] = td;
  }
  const state = document.createElement("span");
  state.className = "inst-badge";
  cells.state.append(state);
  const health = document.createElement("span");
  health.className = "inst-badge";
  cells.health.append(health);
  return { tr, cells, state, health };
}

function fillRow(parts, item) {
  const up = item.up === true;
  const health = HEALTH.has(item.health) ? item.health : "unknown";
  parts.tr.dataset.up = String(up);
  parts.tr.dataset.health = health;
  setText(parts.cells.instance, String(item.instance));
  parts.state.dataset.up = String(up);
  setText(parts.state, up ? "up" : "down");
  parts.health.dataset.health = health;
  setText(parts.health, health);
  setText(parts.cells.active, count(item.active_jobs));
  setText(parts.cells.queue, count(item.queue_length));
  setText(parts.cells.failed, count(item.failed_5m));
  setText(parts.cells.age, formatScrapeAge(item.scrape_age_seconds));
}

/** Shows the fleet's instances in the server's order (sorted by instance); hidden when the
 * message has no `instances` key. */
export function updateInstances(instances) {
  const panel = document.getElementById("instances");
  const body = document.getElementById("instances-body");
  if (!panel || !body) return;
  if (!Array.isArray(instances)) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  const seen = new Set();
  const shown = new Set();
  const ordered = [];
  let up = 0;
  let valid = 0;
  for (const item of instances) {
    if (!item || typeof item !== "object" || item.instance === undefined) continue;
    const name = String(item.instance);
    if (seen.has(name)) continue; // a duplicate would fight over one row
    seen.add(name);
    valid += 1;
    if (item.up === true) up += 1;
    if (ordered.length >= MAX_INSTANCE_ROWS) continue;
    let parts = rows.get(name);
    if (!parts) {
      parts = createRow(name);
      rows.set(name, parts);
    }
    fillRow(parts, item);
    shown.add(name);
    ordered.push(parts.tr);
  }
  for (const [name, parts] of rows) {
    if (!shown.has(name)) {
      parts.tr.remove();
      rows.delete(name);
    }
  }
  const current = body.children;
  const sameOrder =
    current.length === ordered.length && ordered.every((tr, i) => current[i] === tr);
  if (!sameOrder) body.replaceChildren(...ordered);

  const summary = document.getElementById("instances-count");
  if (summary) {
    summary.dataset.up = String(up);
    summary.dataset.total = String(valid);
    const hidden = valid - ordered.length;
    setText(summary, `${up} of ${valid} up` + (hidden > 0 ? `, ${hidden} not shown` : ""));
  }
  const empty = document.getElementById("instances-empty");
  if (empty) empty.hidden = ordered.length > 0;
}

/** The fleet's sources: a banner while Prometheus or Alertmanager cannot be reached, cleared
 * on recovery; hidden when the message has no `fleet` key. */
export function updateFleetStatus(fleet) {
  const banner = document.getElementById("fleet-status");
  if (!banner) return;
  const known = fleet !== null && typeof fleet === "object";
  const prometheus = known ? String(fleet.prometheus ?? "") : "";
  const alertmanager = known ? String(fleet.alertmanager ?? "") : "";
  banner.dataset.prometheus = prometheus;
  banner.dataset.alertmanager = alertmanager;

  // The error names what failed; it goes with the first source that is down.
  const error = known && fleet.error ? `: ${String(fleet.error)}` : "";
  const prom = document.getElementById("fleet-prometheus");
  const promDown = prometheus === "unreachable";
  if (prom) {
    prom.hidden = !promDown;
    setText(prom, promDown
      ? `Prometheus unreachable${error}. Fleet figures may be stale; retrying.`
      : "");
  }
  const am = document.getElementById("fleet-alertmanager");
  const amDown = alertmanager === "unreachable";
  if (am) {
    am.hidden = !amDown;
    const why = promDown ? "" : error;
    setText(am, amDown
      ? `Alertmanager unreachable${why}. Showing the instances' own alerts only.`
      : "");
  }
  banner.hidden = !(promDown || amDown);
}

/** The fleet's tag on an alert: the instance it concerns and where it came from. */
export function alertSourceTag(alert) {
  const tag = document.createElement("span");
  tag.className = "alert-source";
  tag.dataset.testid = "alert-source";
  const source = alert.source === undefined ? "" : String(alert.source);
  const instance = alert.instance === undefined || alert.instance === null
    ? "" : String(alert.instance);
  tag.dataset.source = source;
  tag.dataset.instance = instance;
  tag.textContent = [source === "alertmanager" ? "Alertmanager" : "", instance]
    .filter(Boolean).join(" \u00b7 ");
  if (source) tag.title = source === "alertmanager" ? "From Alertmanager" : "From the instance";
  tag.hidden = tag.textContent === "";
  return tag;
}
