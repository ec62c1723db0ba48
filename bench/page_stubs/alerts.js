// Bench stub (python -m bench page-budget): the page without its alerts list.
export function initAlerts() {}
export function updateAlerts() {}
