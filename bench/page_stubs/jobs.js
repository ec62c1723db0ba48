// Bench stub (python -m bench page-budget): the page without its jobs table.
export const MAX_ROWS = 50;

export function updateJobsTable() {}
