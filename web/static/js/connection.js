// One WebSocket at a time, reconnecting with exponential backoff and jitter.
//
// The original scheduled a new reconnect on every failed attempt without cancelling the
// previous one, so each outage multiplied sockets (and chart points). Here a single timer
// and a single socket field are the whole state: every path that opens a socket first
// clears the timer, and events from a socket that is no longer current are ignored.

export const MIN_DELAY_MS = 500;
export const MAX_DELAY_MS = 30000;
/** Failed attempts after which the indicator says "offline" (retries continue). */
export const OFFLINE_AFTER_ATTEMPTS = 6;
/** A live socket with no message for this many tick intervals is presumed dead. */
export const STALE_AFTER_TICKS = 5;
export const MIN_STALE_MS = 5000;

/**
 * Delay before reconnect attempt number `attempt` (0-based): the ceiling doubles from
 * 0.5 s up to 30 s and the delay is drawn from its upper half ("equal jitter"), so a
 * fleet of viewers that lost the same server does not come back in lockstep.
 */
export function backoffDelay(attempt, random = Math.random) {
  const n = Math.max(0, Math.floor(Number(attempt) || 0));
  const ceiling = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** Math.min(n, 30));
  const delay = ceiling / 2 + random() * (ceiling / 2);
  return Math.round(Math.min(MAX_DELAY_MS, Math.max(MIN_DELAY_MS, delay)));
}

/**
 * The WebSocket URL for a page at `href`: same host, `wss:` under https, the `/ws` path
 * beside the page (so a dashboard mounted under a path prefix works), and the page's
 * `token` query parameter passed on.
 */
export function socketUrl(href) {
  const page = new URL(href);
  const url = new URL("ws", page);
  url.protocol = page.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  const token = page.searchParams.get("token");
  if (token !== null && token !== "") {
    url.searchParams.set("token", token);
  }
  return url.toString();
}

// Bound on the replayed messages held until the replay is complete (the server keeps 50).
const MAX_REPLAY = 1000;

/**
 * Keeps one socket to `url` open and hands each parsed message to `onMessage`.
 * `onState(state, detail)` hears "connecting", "live", "reconnecting" and "offline".
 * The history the server replays on connect (each message's `replay` says how many more
 * follow) is handed over once complete; if its newest `seq` is below the last one seen,
 * the server restarted (its seq began again) and `onNewRun()` is called first.
 * Timers and the socket class are injectable so the logic can be driven in tests.
 */
export class Connection {
  constructor({
    url,
    onMessage,
    onState = () => {},
    onNewRun = () => {},
    WebSocketImpl = globalThis.WebSocket,
    timers = globalThis,
    random = Math.random,
    now = () => Date.now(),
  }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.onNewRun = onNewRun;
    this.replayed = [];
    this.lastSeq = null;
    this.WebSocketImpl = WebSocketImpl;
    this.timers = timers;
    this.random = random;
    this.now = now;

    this.socket = null;
    this.retryTimer = null;
    this.watchdogTimer = null;
    this.attempt = 0;
    this.state = "idle";
    this.stopped = true;
    this.socketsOpened = 0;
    this.messagesReceived = 0;
    this.openedAt = null;
    this.lastMessageAt = 0;
    this.lastStamp = null;
    this.tickMs = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.setState("connecting");
    this.open();
  }

  stop() {
    this.stopped = true;
    this.clearRetry();
    this.clearWatchdog();
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      detach(socket);
      socket.close(1000, "page closed");
    }
    this.setState("idle");
  }

  /** Skip the remaining backoff (the browser came back online, the tab became visible). */
  retryNow() {
    if (this.stopped || this.socket) return;
    this.open();
  }

  /** Numbers for tests and the console: sockets ever opened, whether one is current. */
  stats() {
    return {
      state: this.state,
      attempt: this.attempt,
      socketsOpened: this.socketsOpened,
      messagesReceived: this.messagesReceived,
      openedAt: this.openedAt,
      hasSocket: this.socket !== null,
      retryPending: this.retryTimer !== null,
    };
  }

  open() {
    this.clearRetry();
    if (this.socket || this.stopped) return;
    let socket;
    try {
      socket = new this.WebSocketImpl(this.url);
    } catch (error) {
      // A malformed URL throws synchronously; treat it like a failed attempt.
      console.error("hyperdash: cannot open WebSocket", error);
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    this.socketsOpened += 1;
    this.replayed = []; // a replay cut short by a lost socket is replayed again whole
    socket.onopen = () => {
      if (socket !== this.socket) return;
      this.attempt = 0;
      this.openedAt = this.now();
      this.lastMessageAt = this.openedAt;
      this.setState("live");
    };
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      this.lastMessageAt = this.now();
      this.handleMessage(event.data);
    };
    // An error is always followed by close; the close handler does the work.
    socket.onerror = () => {};
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      detach(socket);
      this.clearWatchdog();
      if (!this.stopped) this.scheduleRetry(event.code);
    };
  }

  handleMessage(data) {
    let metrics;
    try {
      metrics = JSON.parse(data);
    } catch {
      return; // not ours to render; the next tick will do
    }
    if (metrics === null || typeof metrics !== "object" || Array.isArray(metrics)) return;
    const remaining = metrics.replay;
    if (Number.isInteger(remaining) && remaining >= 0) {
      this.replayed.push(metrics);
      if (remaining > 0 && this.replayed.length < MAX_REPLAY) return;
    }
    this.endReplay();
    if (!Number.isInteger(remaining)) this.deliver(metrics);
  }

  // The replay is complete (or a live message came): hand it over, after saying whether
  // it continues the run already seen.
  endReplay() {
    const batch = this.replayed;
    if (batch.length === 0) return;
    this.replayed = [];
    const newest = batch[batch.length - 1].seq;
    if (Number.isInteger(newest) && this.lastSeq !== null && newest < this.lastSeq) {
      this.lastSeq = null;
      this.onNewRun();
    }
    for (const metrics of batch) this.deliver(metrics);
  }

  deliver(metrics) {
    this.messagesReceived += 1;
    if (Number.isInteger(metrics.seq)) this.lastSeq = metrics.seq;
    this.learnTick(metrics.timestamp);
    this.onMessage(metrics);
  }

  // The tick interval is learned from consecutive server timestamps (history replay
  // included), then used to notice a socket that stays open but has gone silent.
  learnTick(timestamp) {
    const stamp = typeof timestamp === "string" ? Date.parse(timestamp) : NaN;
    if (!Number.isFinite(stamp)) return;
    if (this.lastStamp !== null && stamp > this.lastStamp) {
      this.tickMs = stamp - this.lastStamp;
    }
    this.lastStamp = stamp;
    if (this.tickMs !== null && this.watchdogTimer === null) this.armWatchdog();
  }

  staleAfterMs() {
    return Math.max(MIN_STALE_MS, STALE_AFTER_TICKS * (this.tickMs || 0));
  }

  armWatchdog(delay = this.staleAfterMs()) {
    this.clearWatchdog();
    this.watchdogTimer = this.timers.setTimeout(() => {
      this.watchdogTimer = null;
      if (!this.socket || this.stopped) return;
      const silentFor = this.now() - this.lastMessageAt;
      const limit = this.staleAfterMs();
      if (silentFor < limit) {
        this.armWatchdog(limit - silentFor);
        return;
      }
      const socket = this.socket;
      this.socket = null;
      detach(socket);
      socket.close(4000, "no data");
      this.scheduleRetry();
    }, delay);
  }

  clearWatchdog() {
    if (this.watchdogTimer !== null) {
      this.timers.clearTimeout(this.watchdogTimer);
      this.watchdogTimer = null;
    }
  }

  scheduleRetry(code) {
    this.clearRetry();
    const delay = backoffDelay(this.attempt, this.random);
    this.attempt += 1;
    const offline =
      this.attempt > OFFLINE_AFTER_ATTEMPTS ||
      (globalThis.navigator !== undefined && globalThis.navigator.onLine === false);
    this.setState(offline ? "offline" : "reconnecting", { delay, code });
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, delay);
  }

  clearRetry() {
    if (this.retryTimer !== null) {
      this.timers.clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
  }

  setState(state, detail = {}) {
    this.state = state;
    this.onState(state, { attempt: this.attempt, ...detail });
  }
}

function detach(socket) {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onerror = null;
  socket.onclose = null;
}
