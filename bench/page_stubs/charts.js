// Bench stub (python -m bench page-budget): the page without its four charts. The history
// is still recorded, as the real module does, so the rest of the page sees the same data.
import { History } from "./history.js";

export const history = new History();

export function initCharts() {
  return false;
}

export function recordHistory(metrics) {
  return history.record(metrics);
}

export function updateCharts(metrics) {
  if (metrics && typeof metrics === "object") history.record(metrics);
}
