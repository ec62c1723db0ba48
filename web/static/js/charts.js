// The four charts. Chart.js arrives as a classic script (window.Chart); if it failed to
// load, the rest of the page still works and each chart box says why it is empty.
//
// Per message, a chart costs what Chart.js's update() costs (options, layout, scales,
// elements, then the draw), so the work is kept to what a viewer can see change: the
// doughnut and the provider bars update only when their numbers changed; the two time
// series keep one array of {x, y} points per line for the page's lifetime and change it
// in place (one point in, one out per tick), so Chart.js neither parses (`parsing:
// false`) nor rebuilds 50 point elements per line on every message. A chart out of view
// keeps its data current and is drawn when it scrolls back in.

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

function lineDataset(label, color, key, extra = {}) {
  return {
    label,
    field: key, // the History point field this line shows
    data: [],
    borderColor: color,
    backgroundColor: color,
    borderWidth: 2,
    pointRadius: 0,
    pointHitRadius: 6,
    // Straight segments: a curve's control points are computed for every point on every
    // update, and a bezier costs more to rasterise than a line (Chart.js's own advice).
    tension: 0,
    ...extra,
  };
}

// The lines' data is already what Chart.js keeps internally ({x, y}, sorted by x, the same
// x in every line of a chart), so it may use it as it is.
// With no gaps in the data (every point is a number), spanGaps skips splitting each line
// into segments on every update.
const SERIES_OPTIONS = { parsing: false, normalized: true, spanGaps: true };

// Chart.js calls every registered plugin on every update, shown or not; these four charts
// have no title, subtitle, fill or decimation and set their own colours, so those are off
// per chart (a line chart's update went from about 2.9 to 1.6 ms in an in-page loop).
// Their legends are HTML (buildLegend), so Chart.js's own is off too: it rebuilt, measured
// and drew its items and re-fitted the chart around them on every update.
const UNUSED_PLUGINS = {
  title: false,
  subtitle: false,
  filler: false,
  decimation: false,
  colors: false,
  legend: false,
};

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
    options: { cutout: "60%", plugins: { ...UNUSED_PLUGINS } },
  });

  charts.timeline = new Chart(document.getElementById("chart-jobs-over-time"), {
    type: "line",
    data: {
      datasets: [
        lineDataset("Active", colors.primary, "active"),
        lineDataset("Completed", colors.success, "completed"),
        lineDataset("Failed", colors.danger, "failed"),
      ],
    },
    options: {
      ...SERIES_OPTIONS,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: timeAxis(colors),
        y: { beginAtZero: true, grid: { color: colors.grid }, ticks: { precision: 0 } },
      },
      plugins: { ...UNUSED_PLUGINS, tooltip: timeTooltip() },
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
      plugins: { ...UNUSED_PLUGINS },
    },
  });

  charts.resources = new Chart(document.getElementById("chart-resources"), {
    type: "line",
    data: {
      datasets: [
        lineDataset("Memory (MB)", cssVar("--accent-purple", "#8b5cf6"), "memory", {
          yAxisID: "memory",
        }),
        lineDataset("CPU (%)", colors.warning, "cpu", { yAxisID: "cpu" }),
      ],
    },
    options: {
      ...SERIES_OPTIONS,
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
      plugins: { ...UNUSED_PLUGINS, tooltip: timeTooltip() },
    },
  });

  charts.colors = colors;
  buildLegend(charts.status, "legend-job-status", true);
  buildLegend(charts.timeline, "legend-jobs-over-time", false);
  buildLegend(charts.resources, "legend-resources", false);
  watchVisibility([charts.status, charts.timeline, charts.providers, charts.resources]);
  available = true;
  return true;
}

/**
 * Fills the list `listId` with one button per line of `chart` (per slice when `bySlice`, as
 * for the doughnut), built once: a click hides or shows that line or slice and redraws the
 * chart, as Chart.js's own legend does; aria-pressed says whether it is shown.
 */
function buildLegend(chart, listId, bySlice) {
  const list = document.getElementById(listId);
  if (!list) return;
  const entries = bySlice
    ? chart.data.labels.map((label, i) => ({ label, color: chart.data.datasets[0].backgroundColor[i] }))
    : chart.data.datasets.map((dataset) => ({ label: dataset.label, color: dataset.borderColor }));
  const items = entries.map(({ label, color }, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-pressed", "true");
    const swatch = document.createElement("span");
    swatch.className = "chart-legend-swatch";
    swatch.style.background = color;
    button.append(swatch, document.createTextNode(label)); // text, never markup
    button.addEventListener("click", () => {
      let shown;
      if (bySlice) {
        chart.toggleDataVisibility(index);
        shown = chart.getDataVisibility(index);
      } else {
        shown = !chart.isDatasetVisible(index);
        chart.setDatasetVisibility(index, shown);
      }
      button.setAttribute("aria-pressed", String(shown));
      redraw(chart);
    });
    const item = document.createElement("li");
    item.append(button);
    return item;
  });
  list.replaceChildren(...items);
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

// A chart scrolled out of view (a phone shows one or two at a time) keeps its data up to
// date but is not redrawn until it comes back: its update() is the page's largest cost.
const offscreen = new Set();
const stale = new Set();
// Chart.js records each change to a data array it watches until its next update(); the
// lines of a chart out of view get copies it does not watch (adopted on that update), so
// nothing piles up however long the chart stays out of view.
const unwatched = new Set();

function watchVisibility(list) {
  if (typeof IntersectionObserver !== "function") return;
  const byCanvas = new Map(list.map((chart) => [chart.canvas, chart]));
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const chart = byCanvas.get(entry.target);
      if (!chart) continue;
      if (!entry.isIntersecting) {
        offscreen.add(chart);
        continue;
      }
      offscreen.delete(chart);
      if (stale.delete(chart)) update(chart);
    }
  });
  for (const canvas of byCanvas.keys()) observer.observe(canvas);
}

function update(chart) {
  chart.update("none");
  for (const dataset of chart.data.datasets) unwatched.delete(dataset);
}

function redraw(chart) {
  if (offscreen.has(chart)) stale.add(chart);
  else update(chart);
}

/**
 * Makes `data` (a line's {x, y} points) show `points` (History points, sorted by time) for
 * the field `key`, changing only what differs: Chart.js hears each splice and adds or drops
 * just those elements. A tick is one point out at the start and one in at the end.
 * Returns whether anything changed.
 */
export function syncSeries(data, points, key) {
  let changedAny = false;
  let i = 0;
  for (const point of points) {
    let stale = 0;
    while (i + stale < data.length && data[i + stale].x < point.t) stale += 1;
    if (stale > 0) {
      data.splice(i, stale);
      changedAny = true;
    }
    const y = point[key];
    if (i < data.length && data[i].x === point.t) {
      if (data[i].y !== y) {
        data[i].y = y; // read again by update(): the data is Chart.js's own with parsing off
        changedAny = true;
      }
    } else {
      data.splice(i, 0, { x: point.t, y });
      changedAny = true;
    }
    i += 1;
  }
  if (i < data.length) {
    data.splice(i, data.length - i);
    changedAny = true;
  }
  return changedAny;
}

function syncChart(chart) {
  let changedAny = false;
  for (const dataset of chart.data.datasets) {
    if (offscreen.has(chart) && !unwatched.has(dataset)) {
      dataset.data = dataset.data.slice();
      unwatched.add(dataset);
    }
    if (syncSeries(dataset.data, history.points, dataset.field)) changedAny = true;
  }
  if (!changedAny) return;
  setTimeRange(chart);
  redraw(chart);
}

function sameNumbers(a, b) {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

/** Records `metrics` in the history and redraws the charts whose numbers changed. */
export function updateCharts(metrics) {
  if (!metrics || typeof metrics !== "object") return;
  history.record(metrics);
  if (!initCharts()) return;

  const status = charts.status.data.datasets[0];
  const counts = [
    toNumber(metrics.jobs_active),
    toNumber(metrics.jobs_completed),
    toNumber(metrics.jobs_failed),
    toNumber(metrics.jobs_pending),
  ];
  if (!sameNumbers(status.data, counts)) {
    status.data = counts;
    redraw(charts.status);
  }

  syncChart(charts.timeline);

  const { names, values } = providerSeries(metrics.provider_stats);
  const bars = charts.providers.data.datasets[0];
  const labels = charts.providers.data.labels;
  if (!sameNumbers(bars.data, values) || !sameNumbers(labels, names)) {
    charts.providers.data.labels = names;
    bars.data = values;
    bars.backgroundColor = names.map(
      (_, i) => charts.colors.extra[i % charts.colors.extra.length],
    );
    redraw(charts.providers);
  }

  syncChart(charts.resources);
}
