// Bench stub (python -m bench page-budget): the page without its eight cards.
export function updateCards() {}
