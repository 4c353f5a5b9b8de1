/* Live times: every second, each <time data-live> is rewritten from the moment it carries
   (its datetime attribute), so "in 2 min" and "3 s ago" stay true without a reload.
   data-live="relative": "in 2 min", "3 s ago", "now"; data-live="elapsed": "1 min 15 s".
   The words are the JavaScript catalog's (zh-hans) and the units those of
   scheduling/display.py (unit(), not precise; relative()), which writes the first text.
   data-now is the server's clock when the element was written: the count follows the
   server's clock, whatever the browser's says. Rows swapped in later (running now) are
   found on the next tick. */
"use strict";
(function () {
  // The catalog's global functions (admin/js/jquery.init.js replaces window.django, not
  // them); read when called, whichever script loaded first.
  const gettext = (text) => (window.gettext ? window.gettext(text) : text);
  const pgettext = (context, text) => (window.pgettext ? window.pgettext(context, text) : text);
  const interpolate = (format, values) => (window.interpolate
    ? window.interpolate(format, values, true)
    : format.replace(/%\((\w+)\)s/g, (match, key) => values[key]));

  /* A span in the largest fitting units: "3 s", "2 min", "1 h 5 min", "2 d 3 h". */
  function unit(seconds) {
    seconds = Math.abs(seconds);
    const s = pgettext("unit", "s");
    if (seconds < 60) return `${Math.round(seconds)} ${s}`;
    const whole = Math.round(seconds);
    const [big, bigName, small, smallName] =
      whole >= 86400 ? [86400, pgettext("unit", "d"), 3600, pgettext("unit", "h")]
        : whole >= 3600 ? [3600, pgettext("unit", "h"), 60, pgettext("unit", "min")]
          : [60, pgettext("unit", "min"), 1, s];
    const first = Math.floor(whole / big);
    const rest = Math.floor((whole % big) / small);
    return rest ? `${first} ${bigName} ${rest} ${smallName}` : `${first} ${bigName}`;
  }

  /* "in 2 min", "3 s ago", "now": delta in seconds, positive in the future. */
  function relative(delta) {
    if (Math.abs(delta) < 1) return gettext("now");
    const format = delta > 0 ? gettext("in %(span)s") : gettext("%(span)s ago");
    return interpolate(format, { span: unit(delta) });
  }

  function tick() {
    for (const element of document.querySelectorAll("time[data-live]")) {
      if (element.skew === undefined) {
        const serverNow = Date.parse(element.dataset.now);
        element.skew = Number.isNaN(serverNow) ? 0 : serverNow - Date.now();
      }
      const moment = Date.parse(element.getAttribute("datetime"));
      if (Number.isNaN(moment)) continue;
      const delta = (moment - (Date.now() + element.skew)) / 1000;
      const text = element.dataset.live === "elapsed" ? unit(delta) : relative(delta);
      if (element.textContent !== text) element.textContent = text;
    }
  }

  window.schedulingLiveTimes = { unit: unit, relative: relative };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", tick);
  else tick();
  window.setInterval(tick, 1000);
})();
