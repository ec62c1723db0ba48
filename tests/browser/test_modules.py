"""The page's modules, imported as the page imports them, in the real browser.

Formatting, backoff, the history's deduplication and the connection's state machine are
driven directly here (with fake sockets and timers), without waiting on a server.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser

IMPORTS = """
  const format = await import("/static/js/format.js");
  const historyModule = await import("/static/js/history.js");
  const connection = await import("/static/js/connection.js");
"""


@pytest.fixture(scope="module")
def module_page(browser, tmp_path_factory):
    """One page of a running dashboard for the whole module: the modules under test are
    pure, so the tests need its origin, not its data."""
    from hyperdash_otel import Config, Dashboard

    dash = Dashboard(Config(port=0, update_interval=1.0, collect_system_metrics=False))
    dash.start_in_thread()
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"http://127.0.0.1:{dash.port}/")
    try:
        yield page
    finally:
        context.close()
        dash.close()
    assert errors == []


def call(page: Any, name: str, *args: Any) -> Any:
    """`module.function(*args)` in the page, e.g. call(page, "format.formatCount", 1500)."""
    return page.evaluate(
        "async ([name, args]) => {" + IMPORTS + """
           const modules = { format, history: historyModule, connection };
           const [mod, fn] = name.split(".");
           return modules[mod][fn](...args);
         }""",
        [name, list(args)],
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (999, "999"), (1000, "1K"), (45678, "45.7K"), (999_949, "999.9K"),
     (999_950, "1M"), (1_234_567, "1.2M"), (2_500_000_000, "2.5B"), (-1500, "-1.5K"),
     ("junk", "0")],
)
def test_format_count(module_page, value, shown):
    assert call(module_page, "format.formatCount", value) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (9, "9s"), (9.9, "9s"), (60, "1m 0s"), (192, "3m 12s"), (3900, "1h 5m"),
     (86_400 + 7200, "1d 2h"), (None, "\u2014"), (-5, "\u2014"), ("x", "\u2014")],
)
def test_format_duration(module_page, seconds, shown):
    assert call(module_page, "format.formatDuration", seconds) == shown


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [("formatMillis", 125.5, "126 ms"), ("formatMillis", 8.25, "8.3 ms"),
     ("formatMillis", 0, "0 ms"), ("formatMegabytes", 2048.4, "2048 MB"),
     ("formatPercent", 45.25, "45.3%"), ("formatPercent", 100, "100%"),
     ("formatViewers", 1, "1 viewer"), ("formatViewers", 3, "3 viewers"),
     ("clampProgress", 140, 100), ("clampProgress", -3, 0), ("clampProgress", None, 0)],
)
def test_small_formatters(module_page, name, value, shown):
    assert call(module_page, f"format.{name}", value) == shown


def test_backoff_grows_from_half_a_second_to_thirty_with_jitter(module_page):
    delays = module_page.evaluate(
        "async () => {" + IMPORTS + """
           const { backoffDelay } = connection;
           const low = [], high = [];
           for (let attempt = 0; attempt < 12; attempt += 1) {
             low.push(backoffDelay(attempt, () => 0));
             high.push(backoffDelay(attempt, () => 0.999999));
           }
           return { low, high };
         }"""
    )
    assert delays["low"] == [500, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000,
                             15000, 15000]
    assert delays["high"] == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
                              30000, 30000, 30000]


@pytest.mark.parametrize(
    ("page_url", "socket_url"),
    [("http://h:8080/", "ws://h:8080/ws"),
     ("https://h/", "wss://h/ws"),
     ("http://h/?token=abc%20d#x", "ws://h/ws?token=abc+d"),
     ("https://h/dash/?other=1", "wss://h/dash/ws")],
)
def test_socket_url(module_page, page_url, socket_url):
    assert call(module_page, "connection.socketUrl", page_url) == socket_url


def test_history_dedupes_by_seq_orders_and_keeps_fifty(module_page):
    result = module_page.evaluate(
        "async () => {" + IMPORTS + """
           const h = new historyModule.History(50);
           const at = (s, seq = s) => ({
             timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString(),
             jobs_active: s, seq });
           const added = [];
           for (let s = 0; s < 40; s += 1) added.push(h.record(at(s)));
           // A replay: the same 40 again (their seqs are kept already), then 20 new ones.
           for (let s = 0; s < 40; s += 1) added.push(h.record(at(s)));
           for (let s = 40; s < 60; s += 1) added.push(h.record(at(s)));
           added.push(h.record({ timestamp: "not a time", seq: 99 }));
           const before = added.filter(Boolean).length;
           // A restarted server: seq begins again; its ticks are new, placed by time.
           const stale = h.record(at(60, 0));
           h.newRun();
           const restarted = [h.record(at(60, 0)), h.record(at(61, 1)), h.record(at(61, 1))];
           // Without a seq, the timestamp is the identity.
           const bare = (s) => ({ timestamp: at(s).timestamp, jobs_active: s });
           const unnumbered = [h.record(bare(62)), h.record(bare(62))];
           return { kept: h.points.map((p) => p.active), before, stale, restarted,
                    unnumbered };
         }"""
    )
    assert result["before"] == 60
    assert result["stale"] is False
    assert result["restarted"] == [True, True, False]
    assert result["unnumbered"] == [True, False]
    assert result["kept"] == list(range(13, 63))


def test_connection_hands_over_a_replay_once_complete_and_notices_a_restart(module_page):
    result = module_page.evaluate(
        "async () => {" + IMPORTS + """
           const sockets = [];
           class FakeSocket {
             constructor(url) { this.url = url; sockets.push(this); }
             close() {}
           }
           const timers = { setTimeout: () => 0, clearTimeout: () => {} };
           const log = [];
           const c = new connection.Connection({
             url: "ws://h/ws", WebSocketImpl: FakeSocket, timers,
             onMessage: (m) => log.push(m.seq), onNewRun: () => log.push("new run") });
           c.start();
           const send = (m) => sockets[sockets.length - 1].onmessage(
             { data: JSON.stringify(m) });
           sockets[0].onopen();
           send({ seq: 8, replay: 2 }); send({ seq: 9, replay: 1 });
           const held = log.length;
           send({ seq: 10, replay: 0 }); send({ seq: 11 });
           // The same server again, then a restarted one (seq began again)
           c.socket = null; c.open(); sockets[1].onopen();
           send({ seq: 10, replay: 1 }); send({ seq: 11, replay: 0 });
           c.socket = null; c.open(); sockets[2].onopen();
           send({ seq: 0, replay: 1 }); send({ seq: 1, replay: 0 }); send({ seq: 2 });
           return { held, log };
         }"""
    )
    assert result["held"] == 0
    assert result["log"] == [8, 9, 10, 11, 10, 11, "new run", 0, 1, 2]


def test_connection_keeps_one_socket_and_one_timer(module_page):
    """A server that refuses every attempt, then comes back: at no point are there two
    sockets or two pending timers (the original leaked a timer per failed attempt)."""
    result = module_page.evaluate(
        "async () => {" + IMPORTS + """
           const sockets = [];
           class FakeSocket {
             constructor(url) { this.url = url; this.closed = false; sockets.push(this); }
             close() { this.closed = true; }
           }
           const timers = new Map();
           let nextId = 1, maxTimers = 0;
           const fakeTimers = {
             setTimeout(fn, ms) { const id = nextId++; timers.set(id, { fn, ms });
                                  maxTimers = Math.max(maxTimers, timers.size); return id; },
             clearTimeout(id) { timers.delete(id); },
           };
           const runTimers = () => {
             for (const [id, t] of [...timers]) { timers.delete(id); t.fn(); }
           };
           const open = () => sockets.filter((s) => !s.closed);
           const states = [], delays = [], messages = [];
           const c = new connection.Connection({
             url: "ws://h/ws", WebSocketImpl: FakeSocket, timers: fakeTimers,
             random: () => 0.5, onMessage: (m) => messages.push(m),
             onState: (s, d) => { states.push(s); if (d.delay) delays.push(d.delay); },
           });
           c.start();
           let maxOpen = open().length;
           for (let i = 0; i < 8; i += 1) {       // eight refused attempts
             const s = sockets[sockets.length - 1];
             s.closed = true; s.onclose({ code: 1006 });
             maxOpen = Math.max(maxOpen, open().length);
             if (timers.size !== 1) return { error: `timers ${timers.size} after failure ${i}` };
             runTimers();
             maxOpen = Math.max(maxOpen, open().length);
           }
           const last = sockets[sockets.length - 1];
           last.onopen();
           last.onmessage({ data: JSON.stringify({ timestamp: "2026-01-01T00:00:00Z" }) });
           last.onmessage({ data: "not json" });
           // A late event from an old socket must change nothing.
           sockets[0].onclose && sockets[0].onclose({ code: 1006 });
           c.stop();
           return { sockets: sockets.length, maxOpen, maxTimers, states, delays,
                    messages: messages.length, timersLeft: timers.size,
                    stats: c.stats() };
         }"""
    )
    assert "error" not in result, result
    assert result["sockets"] == 9
    assert result["maxOpen"] == 1
    assert result["maxTimers"] == 1
    assert result["timersLeft"] == 0
    assert result["messages"] == 1
    assert result["delays"] == [500, 750, 1500, 3000, 6000, 12000, 22500, 22500]
    assert result["states"][:3] == ["connecting", "reconnecting", "reconnecting"]
    assert result["states"][6:10] == ["reconnecting", "offline", "offline", "live"]
    assert result["states"][-1] == "idle"
    assert result["stats"]["hasSocket"] is False and result["stats"]["retryPending"] is False


def test_silent_socket_is_replaced(module_page):
    """A socket that stays open but stops delivering ticks is closed and replaced."""
    result = module_page.evaluate(
        "async () => {" + IMPORTS + """
           const sockets = [];
           class FakeSocket {
             constructor() { this.closed = false; sockets.push(this); }
             close(code) { this.closed = true; this.code = code; }
           }
           const timers = new Map();
           let nextId = 1, now = 0;
           const fakeTimers = {
             setTimeout(fn, ms) {
               const id = nextId++;
               timers.set(id, { fn, at: now + ms });
               return id;
             },
             clearTimeout(id) { timers.delete(id); },
           };
           const advance = (ms) => {
             now += ms;
             for (const [id, t] of [...timers]) if (t.at <= now) { timers.delete(id); t.fn(); }
           };
           const c = new connection.Connection({
             url: "ws://h/ws", WebSocketImpl: FakeSocket, timers: fakeTimers,
             random: () => 0, now: () => now, onMessage: () => {},
           });
           c.start();
           const s = sockets[0];
           s.onopen();
           const tick = (i) => s.onmessage({ data: JSON.stringify(
             { timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString() }) });
           tick(0); advance(1000); tick(1); advance(1000); tick(2);
           advance(4000);                        // 4 s of silence: still trusted
           const before = sockets.length;
           advance(2000);                        // 6 s > max(5 s, 5 ticks of 1 s)
           const closedStale = s.closed && s.code === 4000;
           advance(500);                         // the retry
           return { before, closedStale, after: sockets.length, state: c.state };
         }"""
    )
    assert result == {"before": 1, "closedStale": True, "after": 2, "state": "reconnecting"}


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "any moment"), (0.4, "any moment"), (45, "in 45 s"), (240, "in 4 min"),
     (3599, "in 60 min"), (3600, "in 1 h"), (7500, "in 2 h 5 min"), (86_400, "in 1 day"),
     (3 * 86_400, "in 3 days"), (None, "\u2014"), (-1, "\u2014"), ("x", "\u2014"),
     ("", "\u2014")],
)
def test_format_eta(module_page, seconds, shown):
    assert call(module_page, "format.formatEta", seconds) == shown


def test_sync_series_changes_only_what_differs(module_page):
    got = module_page.evaluate("""async () => {
      const { syncSeries } = await import("/static/js/charts.js");
      const pt = (t, v) => ({ t, v });
      const data = [];
      const steps = [];
      const step = (points) => {
        const before = data.slice();
        const changed = syncSeries(data, points, "v");
        steps.push({ changed, data: data.map((p) => [p.x, p.y]),
                     kept: data.filter((p) => before.includes(p)).length });
      };
      step([pt(1, 10), pt(2, 20), pt(3, 30)]);          // filled
      step([pt(1, 10), pt(2, 20), pt(3, 30)]);          // nothing new
      step([pt(2, 20), pt(3, 30), pt(4, 40)]);          // one out, one in
      step([pt(2, 20), pt(3, 31), pt(4, 40)]);          // a value changed
      step([pt(2, 20), pt(2.5, 25), pt(3, 31), pt(4, 40)]);  // a gap filled by a replay
      step([]);                                          // cleared
      return steps;
    }""")
    assert [s["changed"] for s in got] == [True, False, True, True, True, True]
    assert got[0]["data"] == [[1, 10], [2, 20], [3, 30]]
    assert got[2] == {"changed": True, "data": [[2, 20], [3, 30], [4, 40]], "kept": 2}
    assert got[3] == {"changed": True, "data": [[2, 20], [3, 31], [4, 40]], "kept": 3}
    assert got[4] == {"changed": True, "data": [[2, 20], [2.5, 25], [3, 31], [4, 40]],
                      "kept": 3}
    assert got[5]["data"] == []
