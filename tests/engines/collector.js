// Installed in the page by tests/engines: records what a user's console would show as an
// error. Firefox runs it before the page's own scripts (a BiDi preload script); WebKit's
// classic WebDriver has no preload hook, so there it runs once the page has loaded.
(() => {
  if (window.__engineLog) return;
  const MAX = 200; // bounded: a page stuck in an error loop must not grow it without end
  const log = { errors: [] };
  window.__engineLog = log;
  const push = (text) => {
    if (log.errors.length < MAX) log.errors.push(String(text));
  };
  const original = console.error.bind(console);
  console.error = (...args) => {
    push("console.error: " + args.map((a) => (a instanceof Error ? a.stack || a : a)).join(" "));
    original(...args);
  };
  window.addEventListener("error", (event) => {
    // A failed <img>/<script> load also arrives here (capture phase, target is the element).
    const target = event.target;
    if (target && target !== window && target.tagName) {
      push(`resource error: <${target.tagName.toLowerCase()}> ${target.src || target.href || ""}`);
    } else {
      push(`uncaught: ${event.message} at ${event.filename}:${event.lineno}`);
    }
  }, true);
  window.addEventListener("unhandledrejection", (event) => push(`unhandled rejection: ${event.reason}`));
  document.addEventListener("securitypolicyviolation", (event) =>
    push(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`));
})();
