/* Runs in progress: their progress and status, updated every second without a reload. */
"use strict";
window.addEventListener("load", function () {
  const boxes = Array.from(document.querySelectorAll("[data-run-progress-url]"));

  function show(box, data) {
    const bar = box.querySelector("progress");
    if (data.progress === null) {
      bar.removeAttribute("value");
    } else {
      bar.value = data.progress;
    }
    box.querySelector(".run-progress-text").textContent = data.text;
    box.querySelector(".run-status").textContent = data.status_display;
    if (!data.in_progress) {
      box.querySelectorAll("button").forEach((b) => b.remove());
      box.removeAttribute("data-run-progress-url");
    }
  }

  function poll() {
    const live = boxes.filter((box) => box.hasAttribute("data-run-progress-url"));
    if (!live.length) return;
    Promise.all(
      live.map((box) =>
        fetch(box.dataset.runProgressUrl, { credentials: "same-origin" })
          .then((r) => (r.ok ? r.json() : null))
          .then((data) => data && show(box, data))
          .catch(() => null)
      )
    ).then(() => window.setTimeout(poll, 1000));
  }
  poll();
});
