// Bench stub (python -m bench page-budget): the page without its header status (health,
// viewers, connection state, clock) and footer time.
export function updateHealth() {}
export function updateViewers() {}
export function updateLastUpdate() {}
export function showConnection() {}
export function startClock() {}
