// The header: health badge, connection indicator, viewer count and clock.

import { formatClock, formatViewers, parseTime, toNumber } from "./format.js";

const HEALTH = {
  healthy: "Healthy",
  degraded: "Degraded",
  unhealthy: "Unhealthy",
};

const CONNECTION = {
  idle: "Not connected",
  connecting: "Connecting\u2026",
  live: "Live",
  reconnecting: "Reconnecting\u2026",
  offline: "Offline",
};

export function updateHealth(health) {
  const badge = document.getElementById("health-badge");
  if (!badge) return;
  const known = Object.hasOwn(HEALTH, health) ? health : "unknown";
  badge.dataset.health = known;
  badge.textContent = known === "unknown" ? "Unknown" : HEALTH[known];
}

export function updateViewers(count) {
  const element = document.getElementById("viewer-count");
  if (!element) return;
  const n = Math.max(0, Math.round(toNumber(count)));
  element.dataset.count = String(n);
  element.textContent = formatViewers(n);
}

export function updateLastUpdate(timestamp) {
  const element = document.getElementById("last-update");
  const ms = parseTime(timestamp);
  if (!element || ms === null) return;
  element.dateTime = new Date(ms).toISOString();
  element.textContent = formatClock(ms);
}

/** Reflects the connection state in text and in data-state / data-attempt for tests. */
export function showConnection(state, detail = {}) {
  const element = document.getElementById("connection-status");
  if (!element) return;
  element.dataset.state = state;
  element.dataset.attempt = String(detail.attempt ?? 0);
  const label = element.querySelector(".connection-label") || element;
  let text = CONNECTION[state] || state;
  if ((state === "reconnecting" || state === "offline") && detail.delay) {
    text += ` (retry in ${Math.ceil(detail.delay / 1000)} s)`;
  }
  label.textContent = text;
}

let clockTimer = null;

/** Starts the header clock; calling it again does not start a second timer. */
export function startClock() {
  const element = document.getElementById("clock");
  if (!element || clockTimer !== null) return;
  const tick = () => {
    const now = Date.now();
    element.dateTime = new Date(now).toISOString();
    element.textContent = formatClock(now);
  };
  tick();
  clockTimer = setInterval(tick, 1000);
}
