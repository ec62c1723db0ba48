// The eight overview cards. Each value element carries the raw number in data-value
// (for tests and scripts) and the formatted text for people.

import {
  formatCount,
  formatMegabytes,
  formatMillis,
  formatPercent,
  toNumber,
} from "./format.js";

const plain = (n) => String(Math.round(n));

/** card id suffix -> [metrics key, formatter] */
export const CARDS = {
  "jobs-active": ["jobs_active", plain],
  "jobs-completed": ["jobs_completed", plain],
  "jobs-failed": ["jobs_failed", plain],
  "queue-length": ["queue_length", plain],
  "http-requests": ["http_requests", formatCount],
  "avg-response": ["avg_response_time", formatMillis],
  memory: ["memory_usage", formatMegabytes],
  cpu: ["cpu_usage", formatPercent],
};

/** The smaller line under a card: "[metrics key, formatter]". */
const NOTES = {
  "queue-length": ["jobs_pending", (n) => `${plain(n)} pending`],
  "http-requests": ["http_errors", (n) => `${formatCount(n)} errors`],
  cpu: ["goroutines", (n) => `${plain(n)} threads`],
};

function setText(element, text) {
  if (element && element.textContent !== text) element.textContent = text;
}

export function updateCards(metrics) {
  for (const [name, [key, format]] of Object.entries(CARDS)) {
    const element = document.getElementById(`value-${name}`);
    if (!element) continue;
    const value = toNumber(metrics[key]);
    setText(element, format(value));
    element.dataset.value = String(value);
  }
  for (const [name, [key, format]] of Object.entries(NOTES)) {
    setText(document.getElementById(`note-${name}`), format(toNumber(metrics[key])));
  }
  const failed = document.getElementById("card-jobs-failed");
  if (failed) failed.classList.toggle("card-alarm", toNumber(metrics.jobs_failed) > 0);
}
