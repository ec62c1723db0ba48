// Alerts at the top of the page: the newest three not yet dismissed in this browser.
//
// The original re-created every alert on every tick, so a dismissed alert came back a
// second later. Dismissals here are remembered in localStorage (bounded), keyed by the
// alert's id and time so an id reused by a restarted server is not hidden by mistake.

import { formatLocalTime } from "./format.js";
import { alertSourceTag } from "./instances.js";

export const MAX_SHOWN = 3;
export const STORAGE_KEY = "hyperdash.dismissedAlerts";
export const MAX_REMEMBERED = 200;
const SEVERITIES = { critical: "Critical", warning: "Warning", info: "Info" };

/** A bounded set of dismissed alert keys, persisted when storage is available. */
export class Dismissals {
  constructor(storage, key = STORAGE_KEY, limit = MAX_REMEMBERED) {
    this.storage = storage;
    this.key = key;
    this.limit = limit;
    this.keys = [];
    try {
      const saved = JSON.parse(storage ? storage.getItem(key) || "[]" : "[]");
      if (Array.isArray(saved)) this.keys = saved.filter((k) => typeof k === "string");
    } catch {
      this.keys = []; // unreadable storage: start afresh, in memory
    }
    this.set = new Set(this.keys);
  }

  has(key) {
    return this.set.has(key);
  }

  add(key) {
    if (this.set.has(key)) return;
    this.keys.push(key);
    this.set.add(key);
    while (this.keys.length > this.limit) this.set.delete(this.keys.shift());
    try {
      if (this.storage) this.storage.setItem(this.key, JSON.stringify(this.keys));
    } catch {
      // Quota or privacy mode: the dismissal still holds for this page's lifetime.
    }
  }
}

export function alertKey(alert) {
  const key = `${String(alert.id)}@${String(alert.time ?? "")}`;
  // A fleet's instances number their alerts independently.
  return alert.instance === undefined ? key : `${key}@${String(alert.instance ?? "")}`;
}

function safeStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null; // access itself throws when storage is blocked
  }
}

const dismissals = new Dismissals(safeStorage());
const shown = new Map(); // alert key -> element
let lastAlerts = [];

function createAlert(alert, key) {
  const given = alert.severity ?? alert.type;
  const severity = Object.hasOwn(SEVERITIES, given) ? given : "info";
  const box = document.createElement("div");
  box.className = `alert alert-${severity}`;
  box.dataset.alertId = String(alert.id);
  box.dataset.alertKey = key;
  box.dataset.severity = severity;
  box.dataset.testid = "alert";
  box.setAttribute("role", severity === "critical" ? "alert" : "status");

  const label = document.createElement("span");
  label.className = "alert-severity";
  label.textContent = SEVERITIES[severity];

  const message = document.createElement("span");
  message.className = "alert-message";
  message.textContent = String(alert.message ?? "");

  const when = document.createElement("time");
  when.className = "alert-time";
  when.textContent = formatLocalTime(alert.time);

  const close = document.createElement("button");
  close.type = "button";
  close.className = "alert-dismiss";
  close.dataset.testid = "alert-dismiss";
  close.setAttribute("aria-label", "Dismiss alert");
  close.title = "Dismiss";
  close.textContent = "\u00d7";

  box.append(label, message, alertSourceTag(alert), when, close);
  return box;
}

/** Shows the newest three alerts not dismissed here (the server sends newest first). */
export function updateAlerts(alerts) {
  const container = document.getElementById("alerts");
  if (!container) return;
  lastAlerts = Array.isArray(alerts) ? alerts : [];
  const visible = [];
  let hiddenCount = 0;
  for (const alert of lastAlerts) {
    if (!alert || typeof alert !== "object") continue;
    const key = alertKey(alert);
    if (dismissals.has(key)) continue;
    if (visible.length < MAX_SHOWN) visible.push([key, alert]);
    else hiddenCount += 1;
  }
  const keep = new Set(visible.map(([key]) => key));
  for (const [key, element] of shown) {
    if (!keep.has(key)) {
      element.remove();
      shown.delete(key);
    }
  }
  const ordered = visible.map(([key, alert]) => {
    let element = shown.get(key);
    if (!element) {
      element = createAlert(alert, key);
      shown.set(key, element);
    }
    return element;
  });
  const list = document.getElementById("alerts-list") || container;
  const current = list.children;
  const sameOrder =
    current.length === ordered.length && ordered.every((el, i) => current[i] === el);
  if (!sameOrder) list.replaceChildren(...ordered);

  const more = document.getElementById("alerts-more");
  if (more) {
    more.hidden = hiddenCount === 0;
    more.textContent = hiddenCount === 1 ? "1 more alert" : `${hiddenCount} more alerts`;
  }
  container.hidden = ordered.length === 0;
}

/** Wires the dismiss buttons (one delegated listener). */
export function initAlerts() {
  const container = document.getElementById("alerts");
  if (!container) return;
  container.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest(".alert-dismiss") : null;
    if (!button) return;
    const box = button.closest(".alert");
    if (!box || !box.dataset.alertKey) return;
    dismissals.add(box.dataset.alertKey);
    updateAlerts(lastAlerts);
  });
}
