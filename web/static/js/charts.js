// The four charts. Chart.js arrives as a classic script (window.Chart); if it failed to
// load, the rest of the page still works and each chart box says why it is empty.

import { formatClock, toNumber } from "./format.js";
import { History } from "./history.js";

export const history = new History();

const charts = {};
let initialised = false;
let available = false;
const providerOrder = [];
const MAX_PROVIDERS = 24;

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

function palette() {
  return {
    primary: cssVar("--primary-color", "#3b82f6"),
    success: cssVar("--success-color", "#10b981"),
    warning: cssVar("--warning-color", "#f59e0b"),
    danger: cssVar("--danger-color", "#ef4444"),
    text: cssVar("--text-muted", "#d1d5db"),
    grid: cssVar("--grid-color", "rgba(255, 255, 255, 0.08)"),
    card: cssVar("--card-bg", "#374151"),
    extra: [
      cssVar("--primary-color", "#3b82f6"),
      cssVar("--success-color", "#10b981"),
      cssVar("--warning-color", "#f59e0b"),
      cssVar("--accent-purple", "#8b5cf6"),
      cssVar("--accent-cyan", "#06b6d4"),
      cssVar("--accent-pink", "#ec4899"),
      cssVar("--danger-color", "#ef4444"),
      cssVar("--accent-lime", "#84cc16"),
    ],
  };
}

function timeAxis(colors) {
  return {
    type: "linear",
    grid: { color: colors.grid },
    ticks: {
      color: colors.text,
      maxRotation: 0,
      autoSkip: true,
      autoSkipPadding: 16,
      // Only round times as labels: the first and last point's odd times would collide
      // with their neighbours on a narrow screen.
      includeBounds: false,
      maxTicksLimit: 6,
      callback: (value) => formatClock(value),
    },
  };
}

function timeTooltip() {
  return {
    callbacks: {
      title: (items) => (items.length ? formatClock(items[0].parsed.x) : ""),
    },
  };
}

function lineDataset(label, color, extra = {}) {
  return {
    label,
    data: [],
    borderColor: color,
    backgroundColor: color,
    borderWidth: 2,
    pointRadius: 0,
    pointHitRadius: 6,
    tension: 0.25,
    ...extra,
  };
}

function markUnavailable() {
  for (const box of document.querySelectorAll(".chart-box")) {
    box.dataset.state = "unavailable";
    const note = document.createElement("p");
    note.className = "chart-unavailable";
    note.textContent = "Chart unavailable: the charting library did not load.";
    box.replaceChildren(note);
  }
}

/** Creates the charts once; safe to call again. Returns whether charts are available. */
export function initCharts() {
  if (initialised) return available;
  initialised = true;
  const Chart = globalThis.Chart;
  if (typeof Chart !== "function") {
    markUnavailable();
    return false;
  }
  const colors = palette();
  Chart.defaults.color = colors.text;
  Chart.defaults.borderColor = colors.grid;
  Chart.defaults.font.family = cssVar("--font-family", "system-ui, sans-serif");
  Chart.defaults.animation = false;
  Chart.defaults.responsive = true;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  charts.status = new Chart(document.getElementById("chart-job-status"), {
    type: "doughnut",
    data: {
      labels: ["Active", "Completed", "Failed", "Pending"],
      datasets: [
        {
          label: "Jobs",
          data: [0, 0, 0, 0],
          backgroundColor: [colors.primary, colors.success, colors.danger, colors.warning],
          borderColor: colors.card,
          borderWidth: 2,
        },
      ],
    },
    options: { cutout: "60%", plugins: { legend: { position: "bottom" } } },
  });

  charts.timeline = new Chart(document.getElementById("chart-jobs-over-time"), {
    type: "line",
    data: {
      datasets: [
        lineDataset("Active", colors.primary),
        lineDataset("Completed", colors.success),
        lineDataset("Failed", colors.danger),
      ],
    },
    options: {
      interaction: { mode: "index", intersect: false },
      scales: {
        x: timeAxis(colors),
        y: { beginAtZero: true, grid: { color: colors.grid }, ticks: { precision: 0 } },
      },
      plugins: { legend: { position: "bottom" }, tooltip: timeTooltip() },
    },
  });

  charts.providers = new Chart(document.getElementById("chart-providers"), {
    type: "bar",
    data: { labels: [], datasets: [{ label: "Jobs", data: [], backgroundColor: [] }] },
    options: {
      scales: {
        x: { grid: { display: false } },
        y: { beginAtZero: true, grid: { color: colors.grid }, ticks: { precision: 0 } },
      },
      plugins: { legend: { display: false } },
    },
  });

  charts.resources = new Chart(document.getElementById("chart-resources"), {
    type: "line",
    data: {
      datasets: [
        lineDataset("Memory (MB)", cssVar("--accent-purple", "#8b5cf6"), { yAxisID: "memory" }),
        lineDataset("CPU (%)", colors.warning, { yAxisID: "cpu" }),
      ],
    },
    options: {
      interaction: { mode: "index", intersect: false },
      scales: {
        x: timeAxis(colors),
        memory: {
          type: "linear",
          position: "left",
          beginAtZero: true,
          grid: { color: colors.grid },
          title: { display: true, text: "MB" },
        },
        cpu: {
          type: "linear",
          position: "right",
          beginAtZero: true,
          suggestedMax: 100,
          grid: { drawOnChartArea: false },
          title: { display: true, text: "CPU %" },
        },
      },
      plugins: { legend: { position: "bottom" }, tooltip: timeTooltip() },
    },
  });

  charts.colors = colors;
  available = true;
  return true;
}

/** Adds one message to the time series without redrawing (used for history replay). */
export function recordHistory(metrics) {
  return history.record(metrics);
}

function setTimeRange(chart) {
  const points = history.points;
  const x = chart.options.scales.x;
  if (points.length === 0) {
    x.min = undefined;
    x.max = undefined;
  } else {
    x.min = points[0].t;
    x.max = points[points.length - 1].t;
  }
}

function providerSeries(stats) {
  const counts = stats && typeof stats === "object" && !Array.isArray(stats) ? stats : {};
  for (const name of Object.keys(counts)) {
    if (!providerOrder.includes(name)) providerOrder.push(name);
  }
  // Keep the order providers first appeared in, so bars do not jump around.
  let names = providerOrder.filter((name) => Object.hasOwn(counts, name));
  if (names.length > MAX_PROVIDERS) {
    const keep = new Set(
      [...names].sort((a, b) => toNumber(counts[b]) - toNumber(counts[a])).slice(0, MAX_PROVIDERS),
    );
    names = names.filter((name) => keep.has(name));
  }
  if (providerOrder.length > 4 * MAX_PROVIDERS) {
    providerOrder.splice(0, providerOrder.length, ...names);
  }
  return { names, values: names.map((name) => toNumber(counts[name])) };
}

/** Records `metrics` in the history and redraws all four charts, without animation. */
export function updateCharts(metrics) {
  if (!metrics || typeof metrics !== "object") return;
  history.record(metrics);
  if (!initCharts()) return;

  const status = charts.status.data.datasets[0];
  status.data = [
    toNumber(metrics.jobs_active),
    toNumber(metrics.jobs_completed),
    toNumber(metrics.jobs_failed),
    toNumber(metrics.jobs_pending),
  ];
  charts.status.update("none");

  const points = history.points;
  const [active, completed, failed] = charts.timeline.data.datasets;
  active.data = points.map((p) => ({ x: p.t, y: p.active }));
  completed.data = points.map((p) => ({ x: p.t, y: p.completed }));
  failed.data = points.map((p) => ({ x: p.t, y: p.failed }));
  setTimeRange(charts.timeline);
  charts.timeline.update("none");

  const { names, values } = providerSeries(metrics.provider_stats);
  charts.providers.data.labels = names;
  const bars = charts.providers.data.datasets[0];
  bars.data = values;
  bars.backgroundColor = names.map((_, i) => charts.colors.extra[i % charts.colors.extra.length]);
  charts.providers.update("none");

  const [memory, cpu] = charts.resources.data.datasets;
  memory.data = points.map((p) => ({ x: p.t, y: p.memory }));
  cpu.data = points.map((p) => ({ x: p.t, y: p.cpu }));
  setTimeRange(charts.resources);
  charts.resources.update("none");
}
