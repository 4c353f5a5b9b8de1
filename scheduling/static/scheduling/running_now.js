/* Running now: the table of runs in progress, fetched again every 2 seconds (no reload). */
"use strict";
window.addEventListener("load", function () {
  const box = document.getElementById("running-now");
  if (!box) return;

  function refresh() {
    fetch(box.dataset.rowsUrl, { credentials: "same-origin" })
      .then((r) => {
        // Logged out meanwhile: the answer is the login page; reload to show it whole.
        if (r.redirected) window.location.reload();
        return r.ok && !r.redirected ? r.text() : null;
      })
      .then((html) => {
        // A form being used (a button pressed) is not replaced under the operator's hand.
        if (html !== null && !box.contains(document.activeElement)) box.innerHTML = html;
      })
      .catch(() => null)
      .then(() => window.setTimeout(refresh, 2000));
  }
  window.setTimeout(refresh, 2000);
});
