// Bench stub (python -m bench page-budget): the page without its fleet parts.
export function updateInstances() {}
export function updateFleetStatus() {}
export function alertSourceTag() {
  return "";
}
