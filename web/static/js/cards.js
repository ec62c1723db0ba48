// The overview cards. The page's markup is the card list: every element with a
// data-field attribute shows that key of the Metrics message, formatted by the
// formatter its data-format names, followed by its data-suffix. An element that
// carries data-value (the cards' big numbers) also gets the raw number there, for
// tests and scripts. A card with data-alarm-field is marked while that key is > 0.

import {
  formatCount,
  formatMegabytes,
  formatMillis,
  formatPercent,
  toNumber,
} from "./format.js";

/** data-format name -> formatter. */
export const FORMATS = {
  plain: (n) => String(Math.round(n)),
  count: formatCount,
  millis: formatMillis,
  megabytes: formatMegabytes,
  percent: formatPercent,
};

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

export function updateCards(metrics) {
  // Looked up on every message (a dozen elements): a card added to the page later shows too.
  for (const element of document.querySelectorAll(".cards [data-field]")) {
    const { field, format, suffix } = element.dataset;
    const value = toNumber(metrics[field]);
    const formatter = Object.hasOwn(FORMATS, format) ? FORMATS[format] : FORMATS.plain;
    setText(element, formatter(value) + (suffix ?? ""));
    // Only a changed attribute is written: an unchanged write still invalidates style.
    const raw = String(value);
    if (element.dataset.value !== undefined && element.dataset.value !== raw) {
      element.dataset.value = raw;
    }
  }
  for (const card of document.querySelectorAll(".cards [data-alarm-field]")) {
    card.classList.toggle("card-alarm", toNumber(metrics[card.dataset.alarmField]) > 0);
  }
}
