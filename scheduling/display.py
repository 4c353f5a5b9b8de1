"""How the admin shows times, durations and outcomes: written once, used by every page.

- A time is shown to the second in the job's timezone with its UTC offset (``+08:00``:
  an abbreviation such as ``CST`` is ambiguous), and the same moment in UTC on hover.
- A time an operator scans (next run, last run, elapsed) reads as a relative time ("in 2
  min", "3 s ago"), the exact time on hover. The page keeps it true without a reload:
  ``scheduling/static/scheduling/live_times.js`` rewrites it every second from the moment
  the element carries, with the same words (the JavaScript catalog's, for zh-hans) and the
  same units as :func:`unit` (not precise).
- A duration is in human units: ``850 ms``, ``2.4 s``, ``3 min 5 s``, ``1 h 2 min``.
- An outcome is a coloured badge, in the colours of the dashboard's charts.
"""

import datetime as dt

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from scheduling import schedules
from scheduling.charts import COLORS
from scheduling.models import ExecutionStatus

EMPTY = "—"


def zone(tz_name: str | None) -> dt.tzinfo:
    """The job's zone; the operator's (the server's) for none or an unknown name."""
    try:
        return schedules.get_timezone(tz_name) if tz_name else timezone.get_current_timezone()
    except ValueError:
        return timezone.get_current_timezone()


def run_zone(execution) -> str | None:
    """The timezone of a run's job (``None``: the job was removed; the operator's zone)."""
    return execution.job.timezone if execution.job_id and execution.job else None


def offset(moment: dt.datetime) -> str:
    """``+08:00``, ``-05:00``, ``+00:00``: the moment's offset from UTC."""
    minutes = int(moment.utcoffset().total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def exact(moment: dt.datetime | None, tz_name: str | None = None) -> str:
    """``2026-12-01 16:12:05 +08:00``: to the second, in the job's timezone."""
    if moment is None:
        return EMPTY
    local = moment.astimezone(zone(tz_name))
    return f"{local:%Y-%m-%d %H:%M:%S} {offset(local)}"


def utc(moment: dt.datetime) -> str:
    """``2026-12-01 08:12:05 UTC``."""
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def unit(seconds: float, *, precise: bool) -> str:
    """A span in the largest fitting units: ``3 s``, ``2 min``, ``1 h 5 min``, ``2 d 3 h``.

    ``precise``: below a minute, tenths under 10 s and milliseconds under 1 s (durations);
    otherwise whole seconds (relative times)."""
    s, ms = pgettext("unit", "s"), pgettext("unit", "ms")
    minute, hour, day = pgettext("unit", "min"), pgettext("unit", "h"), pgettext("unit", "d")
    seconds = abs(seconds)
    if precise and seconds < 1:
        millis = seconds * 1000
        return f"{millis:.1f} {ms}" if millis < 10 else f"{millis:.0f} {ms}"
    if seconds < 60:
        if precise and seconds < 10:
            return f"{seconds:.1f} {s}"
        return f"{seconds:.0f} {s}"
    whole = round(seconds)
    if whole >= 86400:
        big, big_name, small, small_name = 86400, day, 3600, hour
    elif whole >= 3600:
        big, big_name, small, small_name = 3600, hour, 60, minute
    else:
        big, big_name, small, small_name = 60, minute, 1, s
    first, rest = divmod(whole, big)
    rest //= small
    return f"{first} {big_name} {rest} {small_name}" if rest else f"{first} {big_name}"


def duration(seconds: float | None) -> str:
    """A run's duration in human units; ``—`` for none."""
    return EMPTY if seconds is None else unit(seconds, precise=True)


def relative(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """``in 2 min``, ``3 s ago``, ``now``."""
    delta = (moment - (now or timezone.now())).total_seconds()
    if abs(delta) < 1:
        return _("now")
    words = unit(delta, precise=False)
    return _("in %(span)s") % {"span": words} if delta > 0 else _("%(span)s ago") % {"span": words}


def hover(moment: dt.datetime, tz_name: str | None = None) -> str:
    """What hovering a time shows: the exact time in the job's zone, and in UTC."""
    return f"{exact(moment, tz_name)} · {utc(moment)}"


def moment_html(
    moment: dt.datetime | None,
    tz_name: str | None = None,
    *,
    relative_to_now: bool = False,
    now: dt.datetime | None = None,
) -> SafeString | str:
    """A ``<time>`` element: the exact time (or, ``relative_to_now``, the relative one,
    kept live by the page's script), with the exact time and UTC on hover."""
    if moment is None:
        return EMPTY
    now = now or timezone.now()
    if not relative_to_now:
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            moment.astimezone(dt.UTC).isoformat(),
            hover(moment, tz_name),
            exact(moment, tz_name),
        )
    return live_html(moment, relative(moment, now), "relative", hover(moment, tz_name), now)


def elapsed_html(since: dt.datetime, now: dt.datetime | None = None) -> SafeString:
    """The time elapsed since ``since`` (a run's start), kept live by the page's script."""
    now = now or timezone.now()
    text = unit((now - since).total_seconds(), precise=False)
    return live_html(since, text, "elapsed", hover(since), now)


def live_html(
    moment: dt.datetime, text: str, kind: str, title: str, now: dt.datetime | None
) -> SafeString:
    """A ``<time>`` the page's script rewrites every second (``data-live``: ``relative`` or
    ``elapsed``); ``data-now``, the server's clock when it was written, lets the script
    count on the server's clock rather than on the browser's."""
    return format_html(
        '<time datetime="{}" title="{}" data-live="{}" data-now="{}">{}</time>',
        moment.astimezone(dt.UTC).isoformat(),
        title,
        kind,
        (now or timezone.now()).astimezone(dt.UTC).isoformat(),
        text,
    )


def badge(status: str | None, label: str | None = None) -> SafeString | str:
    """An outcome as a coloured badge (the chart colours); ``—`` for none."""
    if not status:
        return EMPTY
    try:
        label = label or ExecutionStatus(status).label
    except ValueError:
        label = label or status
    return format_html(
        '<span class="badge badge-{}" style="background-color: {}">{}</span>',
        status,
        COLORS.get(status, "#417690"),
        label,
    )


def clipped(text: str, *, css: str = "clip") -> SafeString | str:
    """Text that may be cut to its column's width, whole on hover."""
    if not text:
        return EMPTY
    return format_html('<span class="{}" title="{}">{}</span>', css, text, text)
