// Drives Debian's firefox-esr over WebDriver BiDi for tests/engines/test_engines.py.
//
// One browser for the whole run; the Python side sends one JSON command per line on stdin
// and reads one JSON reply per line on stdout:
//   {"id": 1, "op": "open", "url": "...", "width": 1280, "height": 800}
//   {"id": 2, "op": "eval", "expr": "document.title"}     -> {"id": 2, "value": ...}
//   {"id": 3, "op": "viewport", "width": 375, "height": 812}
//   {"id": 4, "op": "log"}     -> console errors, page errors and requests since "open"
//   {"id": 5, "op": "quit"}
// Failures come back as {"id": n, "error": "..."}; the driver itself never waits on the
// page: polling with deadlines is the Python side's job.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const executablePath = process.env.HYPERDASH_FIREFOX || "/usr/bin/firefox-esr";
const collector = readFileSync(new URL("../collector.js", import.meta.url), "utf8");
const MAX_LOG = 500; // entries kept per page, so a noisy page cannot exhaust memory

function reply(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

const browser = await puppeteer.launch({
  browser: "firefox",
  protocol: "webDriverBiDi",
  executablePath,
  headless: true,
  // Nothing but the page under test may use the network: no updates, no telemetry.
  extraPrefsFirefox: {
    "network.captive-portal-service.enabled": false,
    "network.connectivity-service.enabled": false,
    "browser.safebrowsing.update.enabled": false,
  },
});

let page = null;
let log = null;

function record(list, text) {
  if (list.length < MAX_LOG) list.push(text);
}

async function open({ url, width = 1280, height = 800 }) {
  if (page) await page.close();
  log = { consoleErrors: [], pageErrors: [], requests: [] };
  const current = log;
  page = await browser.newPage();
  await page.setViewport({ width, height });
  await page.evaluateOnNewDocument(collector);
  page.on("console", (msg) => {
    if (msg.type() === "error") record(current.consoleErrors, msg.text());
  });
  page.on("pageerror", (error) => record(current.pageErrors, String(error)));
  page.on("request", (request) => record(current.requests, request.url()));
  await page.goto(url, { waitUntil: "load", timeout: 15000 });
  return null;
}

const ops = {
  open,
  eval: async ({ expr }) => page.evaluate(`(${expr})`),
  viewport: async ({ width, height }) => page.setViewport({ width, height }).then(() => null),
  log: async () => log,
  quit: async () => null,
};

reply({ ready: true, version: await browser.version() });

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    reply({ id: null, error: `bad command: ${error}` });
    continue;
  }
  const op = ops[command.op];
  try {
    if (!op) throw new Error(`unknown op ${command.op}`);
    const value = await op(command);
    reply({ id: command.id, value: value === undefined ? null : value });
  } catch (error) {
    reply({ id: command.id, error: String(error && error.stack ? error.stack : error) });
  }
  if (command.op === "quit") break;
}
// Closing can hang when Firefox is slow to answer; the Python side also kills on timeout.
const closed = browser.close().then(() => 0, () => 1);
const timeout = new Promise((resolve) => setTimeout(() => resolve(2), 10000).unref());
process.exit(await Promise.race([closed, timeout]));
