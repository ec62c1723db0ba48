// Entry point: wires the connection to the page and keeps the original's entry points
// (updateDashboard, updateCharts, updateJobsTable, updateAlerts) on window for users.

import { initAlerts, updateAlerts } from "./alerts.js";
import { updateCards } from "./cards.js";
import { history, initCharts, recordHistory, updateCharts } from "./charts.js";
import { Connection, socketUrl } from "./connection.js";
import { updateFleetStatus, updateInstances } from "./instances.js";
import { updateJobsTable } from "./jobs.js";
import {
  showConnection,
  startClock,
  updateHealth,
  updateLastUpdate,
  updateViewers,
} from "./status.js";

export { updateAlerts, updateCharts, updateJobsTable };

function guarded(name, fn) {
  try {
    fn();
  } catch (error) {
    // One broken part must not blank the others; the console still shows it.
    console.error(`hyperdash: ${name} failed`, error);
  }
}

/** Renders one metrics message on every part of the page. */
export function updateDashboard(metrics) {
  if (!metrics || typeof metrics !== "object") return;
  guarded("cards", () => updateCards(metrics));
  guarded("status", () => {
    updateHealth(metrics.system_health);
    updateViewers(metrics.active_connections);
    updateLastUpdate(metrics.timestamp);
  });
  guarded("charts", () => updateCharts(metrics));
  guarded("jobs", () => updateJobsTable(metrics.recent_jobs));
  guarded("alerts", () => updateAlerts(metrics.alerts));
  guarded("fleet", () => {
    updateFleetStatus(metrics.fleet);
    updateInstances(metrics.instances);
  });
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

// Messages are rendered once per animation frame: a history replay of 50 messages on
// connect adds 50 chart points but draws the page once, with the newest message. A message
// superseded before its frame only adds its chart point, so one message is held, however
// long the tab stays hidden (no frames, hence no drawing, while it is).
let latest = null;
let frame = 0;
let received = 0;

function flush() {
  frame = 0;
  if (latest === null) return;
  const metrics = latest;
  latest = null;
  updateDashboard(metrics);
  // What is on the page now, for tests to wait on instead of sleeping: how many messages,
  // and the server time of the newest (ms).
  document.body.dataset.messages = String(received);
  document.body.dataset.timestamp = String(Date.parse(metrics.timestamp) || 0);
}

function receive(metrics) {
  received += 1;
  if (latest !== null) recordHistory(latest);
  latest = metrics;
  if (frame === 0) frame = requestAnimationFrame(flush);
}

const connection = new Connection({
  url: socketUrl(window.location.href),
  onMessage: receive,
  onState: showConnection,
  onNewRun: () => {
    // The held message belongs to the old run: its point goes in before seq starts again.
    if (latest !== null) recordHistory(latest);
    latest = null;
    history.newRun();
  },
});

// With `?token=` in the page URL, links to the token-protected endpoints carry it too.
function keepToken() {
  const token = new URL(window.location.href).searchParams.get("token");
  if (!token) return;
  for (const link of document.querySelectorAll("a[data-keep-token]")) {
    const url = new URL(link.getAttribute("href"), window.location.href);
    url.searchParams.set("token", token);
    link.href = url.toString();
  }
}

function start() {
  keepToken();
  startClock();
  initAlerts();
  initCharts();
  updateJobsTable([]);
  updateAlerts([]);
  window.addEventListener("online", () => connection.retryNow());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") connection.retryNow();
  });
  window.addEventListener("pagehide", () => connection.stop());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) connection.start(); // restored from the back/forward cache
  });
  connection.start();
}

Object.assign(window, { updateDashboard, updateCharts, updateJobsTable, updateAlerts });
window.hyperdash = { connection, history };

start();
