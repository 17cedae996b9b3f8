// smallfleet console: small progressive enhancement. Every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const first = () => document.querySelector("article.review");
  const guess = document.querySelector("article.review button[data-guess]");
  if (guess) guess.focus();

  // Review queue: 1-9 answer the first item with that label, Enter sends the focused (pre-selected) one.
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
    const item = first();
    if (!item || !/^[1-9]$/.test(event.key)) return;
    const button = item.querySelector(`button[data-key="${event.key}"]`);
    if (button) {
      event.preventDefault();
      button.click();
    }
  });

  // Record forms: say which field is wrong before anything is sent (the server checks again).
  document.querySelectorAll("form[data-record]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!form.checkValidity()) {
        event.preventDefault();
        form.reportValidity();
      }
    });
  });
});
