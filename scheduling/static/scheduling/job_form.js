/* Job form: show only the fields of the chosen trigger, preview the schedule live, and
   grey out max instances when the overlap policy ignores it. */
"use strict";
window.addEventListener("load", function () {
  const select = document.getElementById("id_trigger_type");
  if (!select) return;
  const path = window.location.pathname;
  const previewUrl = path.replace(/(add|\d+\/change)\/?$/, "preview/");
  const objectId = (path.match(/(\d+)\/change\/?$/) || [])[1] || "";
  const box = document.createElement("div");
  box.id = "schedule-live-preview";
  box.className = "help";
  const anchor = document.querySelector(".field-timezone") || select.closest(".form-row");
  anchor.after(box);

  function value(name) {
    const el = document.getElementById("id_" + name);
    if (!el) {
      const parts = ["0", "1"].map((i) => document.getElementById("id_" + name + "_" + i));
      return parts.every((p) => p && p.value) ? parts.map((p) => p.value).join(" ") : "";
    }
    return el.value;
  }

  function toggle() {
    document.querySelectorAll("fieldset.trigger-section").forEach(function (fs) {
      fs.style.display = fs.classList.contains("trigger-" + select.value) ? "" : "none";
    });
  }

  let timer = null;
  let inFlight = null;
  function preview() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      if (inFlight) inFlight.abort(); // an older answer must not overwrite a newer one
      inFlight = new AbortController();
      const params = new URLSearchParams({
        object_id: objectId,
        trigger_type: select.value,
        cron_expression: value("cron_expression"),
        interval_every: value("interval_every"),
        interval_period: value("interval_period"),
        run_at: value("run_at"),
        timezone: value("timezone"),
        start_at: value("start_at"),
        end_at: value("end_at"),
        max_runs: value("max_runs"),
      });
      fetch(previewUrl + "?" + params.toString(), {
        credentials: "same-origin",
        signal: inFlight.signal,
      })
        .then((r) => r.json())
        .then(function (data) {
          box.replaceChildren();
          if (data.error) {
            box.textContent = data.error;
            box.style.color = "var(--error-fg, #ba2121)";
            return;
          }
          box.style.color = "";
          const p = document.createElement("p");
          p.textContent = data.description;
          const ol = document.createElement("ol");
          data.next_runs.forEach(function (run) {
            const li = document.createElement("li");
            li.textContent = run;
            ol.appendChild(li);
          });
          box.append(p, ol);
          if (data.window) {
            const w = document.createElement("p");
            w.textContent = data.window;
            box.append(w);
          }
        })
        .catch(function () {});
    }, 250);
  }

  select.addEventListener("change", function () { toggle(); preview(); });
  document.addEventListener("click", function (event) {
    if (event.target.closest(".datetimeshortcuts, .calendarbox, .clockbox")) preview();
  });
  document.querySelectorAll("input, select").forEach(function (el) {
    if (/^id_(cron_expression|interval_|run_at|timezone|start_at|end_at|max_runs)/.test(el.id)) {
      el.addEventListener("input", preview);
      el.addEventListener("change", preview);
      // The admin's calendar and clock pickers set the value without an input event.
      el.addEventListener("focusout", preview);
    }
  });
  toggle();
  preview();

  // Overlap policy allow all ignores max instances: the field is shown greyed out and
  // read-only (still sent, so the job keeps its value for another policy later).
  const overlap = document.getElementById("id_overlap");
  const maxInstances = document.getElementById("id_max_instances");
  function overlapToggle() {
    if (!overlap || !maxInstances) return;
    const ignored = overlap.value === "allow_all";
    maxInstances.readOnly = ignored;
    maxInstances.style.opacity = ignored ? "0.5" : "";
    maxInstances.title = ignored ? overlap.dataset.ignoredNote || "" : "";
  }
  if (overlap) overlap.addEventListener("change", overlapToggle);
  overlapToggle();
});
