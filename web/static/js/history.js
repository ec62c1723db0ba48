// The rolling history behind the two time-series charts, deduplicated by tick sequence.
//
// On reconnect the server replays up to 50 retained messages; most of them may already be
// on the charts. Each message carries its tick's `seq`, rising by one per tick of a server
// run: one at or below the newest kept is already here. A restarted server begins again
// at 0, which the connection reports (newRun) before its replay. Points stay ordered by
// time, so a replay fills the gap of an outage without duplicating anything.

import { parseTime, toNumber } from "./format.js";

export const MAX_HISTORY = 50;

export class History {
  constructor(limit = MAX_HISTORY) {
    this.limit = limit;
    this.points = [];
    this.lastSeq = null;
  }

  /** The server restarted: its seq begins again, so every seq from now on is new. */
  newRun() {
    this.lastSeq = null;
  }

  /** Adds the point for one metrics message; false when it is a duplicate or unusable. */
  record(metrics) {
    const t = parseTime(metrics && metrics.timestamp);
    if (t === null) return false;
    const seq = Number.isInteger(metrics.seq) ? metrics.seq : null;
    if (seq !== null && this.lastSeq !== null && seq <= this.lastSeq) return false;
    const point = {
      t,
      active: toNumber(metrics.jobs_active),
      completed: toNumber(metrics.jobs_completed),
      failed: toNumber(metrics.jobs_failed),
      memory: toNumber(metrics.memory_usage),
      cpu: toNumber(metrics.cpu_usage),
    };
    const points = this.points;
    // Nearly always the newest: check the end first, then search backwards.
    let i = points.length;
    while (i > 0 && points[i - 1].t > t) i -= 1;
    // Without a seq (not from this server) the timestamp is the only identity there is.
    if (seq === null && i > 0 && points[i - 1].t === t) return false;
    if (i === 0 && points.length >= this.limit) return false; // older than everything kept
    if (seq !== null) this.lastSeq = seq;
    points.splice(i, 0, point);
    if (points.length > this.limit) points.splice(0, points.length - this.limit);
    return true;
  }

  get length() {
    return this.points.length;
  }

  clear() {
    this.points = [];
    this.lastSeq = null;
  }
}
