// Pure formatting helpers: no DOM, no globals, so they can be tested on their own.

const SECOND = 1;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** A finite number from anything the server might send, or the fallback. */
export function toNumber(value, fallback = 0) {
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : fallback;
}

/**
 * A count in a card: 999, 1K, 45.7K, 1.2M, 3.4B. Rounding happens before the
 * unit is chosen, so 999950 reads "1M" rather than "1000K".
 */
export function formatCount(value) {
  const n = toNumber(value);
  const sign = n < 0 ? "-" : "";
  const abs = Math.abs(n);
  if (abs < 1000) {
    return sign + String(Math.round(abs));
  }
  const units = [
    [1e3, "K"],
    [1e6, "M"],
    [1e9, "B"],
    [1e12, "T"],
  ];
  for (let i = 0; i < units.length; i += 1) {
    const [size, suffix] = units[i];
    const scaled = Math.round((abs / size) * 10) / 10;
    if (scaled < 1000 || i === units.length - 1) {
      return sign + trimZero(scaled.toFixed(1)) + suffix;
    }
  }
  return sign + String(abs); // unreachable: the last unit always returns
}

function trimZero(text) {
  return text.endsWith(".0") ? text.slice(0, -2) : text;
}

/** Milliseconds with one decimal below 100 ms and none above: "8.4 ms", "125 ms". */
export function formatMillis(value) {
  const n = Math.max(0, toNumber(value));
  return (n < 100 ? trimZero(n.toFixed(1)) : String(Math.round(n))) + " ms";
}

/** Megabytes as the server reports them: "2048 MB". */
export function formatMegabytes(value) {
  return String(Math.max(0, Math.round(toNumber(value)))) + " MB";
}

/** A percentage with one decimal: "45.2%", "0%". */
export function formatPercent(value) {
  const n = Math.max(0, toNumber(value));
  return trimZero(n.toFixed(1)) + "%";
}

/**
 * A duration in seconds as its two most significant units: "2d 3h", "1h 5m",
 * "3m 12s", "9s". Missing or negative durations read as an em dash.
 */
export function formatDuration(seconds) {
  const n = typeof seconds === "number" ? seconds : Number(seconds);
  if (seconds === null || seconds === undefined || !Number.isFinite(n) || n < 0) {
    return "\u2014";
  }
  const total = Math.floor(n);
  const days = Math.floor(total / DAY);
  const hours = Math.floor((total % DAY) / HOUR);
  const minutes = Math.floor((total % HOUR) / MINUTE);
  const secs = total % MINUTE;
  if (days > 0) return `${days}d ${hours}h`;
  if (hours > 0) return `${hours}h ${minutes}m`;
  if (minutes > 0) return `${minutes}m ${secs}s`;
  return `${secs}s`;
}

/** Milliseconds since the epoch for an RFC 3339 string, or null when absent or invalid. */
export function parseTime(value) {
  if (typeof value !== "string" || value === "") return null;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : null;
}

/**
 * A start time in the viewer's local time zone: the time alone when it is today,
 * date and time otherwise. `now` is a parameter so tests need no clock.
 */
export function formatLocalTime(value, now = new Date()) {
  const ms = parseTime(value);
  if (ms === null) return "\u2014";
  const when = new Date(ms);
  const sameDay =
    when.getFullYear() === now.getFullYear() &&
    when.getMonth() === now.getMonth() &&
    when.getDate() === now.getDate();
  const time = CLOCK_FORMAT.format(when);
  if (sameDay) return time;
  return `${DATE_FORMAT.format(when)} ${time}`;
}

// One formatter each, made once: toLocaleTimeString(locales, options) builds a new
// Intl.DateTimeFormat on every call, which was a third of the page's time per message
// (50 table rows and the chart axes each tick; see bench/RESULTS.md).
const CLOCK_FORMAT = new Intl.DateTimeFormat([], {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const DATE_FORMAT = new Intl.DateTimeFormat([], { year: "numeric", month: "short", day: "numeric" });

/** A clock reading for chart axes and the header: "18:30:05" in local time. */
export function formatClock(ms) {
  return CLOCK_FORMAT.format(new Date(ms));
}

/**
 * Time to completion, relative: "in 45 s", "in 4 min", "in 2 h 5 min", "in 3 days".
 * Null, negative or unreadable reads as an em dash (the server sends null until it has
 * enough evidence, and for stalled or finished jobs).
 */
export function formatEta(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "\u2014";
  const n = typeof seconds === "number" ? seconds : Number(seconds);
  if (!Number.isFinite(n) || n < 0) return "\u2014";
  if (n < 1) return "any moment";
  if (n < MINUTE) return `in ${Math.round(n)} s`;
  if (n < HOUR) return `in ${Math.round(n / MINUTE)} min`;
  if (n < DAY) {
    const minutes = Math.round(n / MINUTE);
    const hours = Math.floor(minutes / 60);
    const rest = minutes % 60;
    return rest === 0 ? `in ${hours} h` : `in ${hours} h ${rest} min`;
  }
  const days = Math.round(n / DAY);
  return days === 1 ? "in 1 day" : `in ${days} days`;
}

/** A progress value clamped to 0..100; anything unreadable counts as 0. */
export function clampProgress(value) {
  return Math.min(100, Math.max(0, toNumber(value)));
}

/** "1 viewer", "3 viewers". */
export function formatViewers(value) {
  const n = Math.max(0, Math.round(toNumber(value)));
  return n === 1 ? "1 viewer" : `${n} viewers`;
}
