"""Exclusion calendars (Quartz's model): which fire times of a job do not run, and why.

A calendar is a named set of exclusion rules shared by any number of jobs: single dates,
date ranges, weekly windows (whole days, or a time window on those days) and yearly dates.
Its dates and times are read **in the timezone of the job** it applies to: "2026-12-25"
excludes that day from midnight to midnight on the job's wall clock, whatever the
server's timezone, so one holiday calendar serves jobs in several zones.

:class:`Excluding` wraps a job's trigger and jumps over an excluded window in one step
(to the window's end), instead of walking each fire time inside it: a job firing every
second excluded all weekend costs two jumps, not 172,800 steps. Pure logic, no database.
"""

import dataclasses
import datetime as dt
from typing import Any

from scheduling import schedules

#: The name a one-off "skip the next run" exclusion is recorded under.
SKIP_NEXT = "skip-next"
#: Weekday names, Monday first (``datetime.weekday()`` order).
WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
#: An exclusion that covers every fire time ends the walk after this many jumps.
JUMP_LIMIT = 10_000
_MICROSECOND = dt.timedelta(microseconds=1)


def parse_weekdays(text: str) -> tuple[int, ...]:
    """``"SAT,SUN"`` or ``"MON-FRI"`` as weekday numbers (Monday 0); ``ValueError``
    naming the bad item."""
    days: set[int] = set()
    for item in (part.strip().upper() for part in text.split(",")):
        if not item:
            continue
        first, _, last = item.partition("-")
        try:
            low = WEEKDAYS.index(first[:3])
            high = WEEKDAYS.index(last[:3]) if last else low
        except ValueError:
            raise ValueError(
                f"{item!r} is not a weekday: use MON, TUE, WED, THU, FRI, SAT, SUN "
                "(lists and ranges: SAT,SUN or MON-FRI)."
            ) from None
        if high < low:
            raise ValueError(f"{item!r}: a weekday range runs forward (MON-FRI).")
        days.update(range(low, high + 1))
    if not days:
        raise ValueError("Give at least one weekday, e.g. SAT,SUN.")
    return tuple(sorted(days))


def weekday_names(days: tuple[int, ...]) -> str:
    """Weekday numbers back as names, ``"SAT,SUN"``."""
    return ",".join(WEEKDAYS[day] for day in days)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One exclusion of a calendar, on the wall clock of the job's timezone.

    ``kind`` is ``date`` (``start``), ``range`` (``start`` to ``end``, both included),
    ``weekly`` (``weekdays``, the whole day, or from ``start_time`` to ``end_time``) or
    ``yearly`` (``month`` and ``day`` of every year).
    """

    calendar: str
    kind: str
    start: dt.date | None = None
    end: dt.date | None = None
    weekdays: tuple[int, ...] = ()
    start_time: dt.time | None = None
    end_time: dt.time | None = None
    month: int | None = None
    day: int | None = None
    label: str = ""

    def window_end(self, local: dt.datetime) -> dt.datetime | None:
        """The (naive, wall-clock) end of the excluded window that holds ``local``, or
        ``None`` when this rule does not exclude it."""
        day = local.date()
        next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
        if self.kind == "date":
            return next_midnight if day == self.start else None
        if self.kind == "range":
            if self.start <= day <= self.end:
                return dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time())
            return None
        if self.kind == "yearly":
            return next_midnight if (day.month, day.day) == (self.month, self.day) else None
        if self.kind == "weekly":
            if day.weekday() not in self.weekdays:
                return None
            clock = local.time().replace(tzinfo=None)
            if self.start_time is not None and clock < self.start_time:
                return None
            if self.end_time is None:
                return next_midnight
            return dt.datetime.combine(day, self.end_time) if clock < self.end_time else None
        raise ValueError(f"Unknown exclusion kind {self.kind!r}.")

    def describe(self) -> str:
        """The rule in a few words, as ``calendar show`` prints it."""
        if self.kind == "date":
            text = self.start.isoformat()
        elif self.kind == "range":
            text = f"{self.start.isoformat()}..{self.end.isoformat()}"
        elif self.kind == "yearly":
            text = f"every year {self.month:02d}-{self.day:02d}"
        else:
            text = "weekly " + weekday_names(self.weekdays)
            if self.start_time is not None or self.end_time is not None:
                begin = (self.start_time or dt.time()).strftime("%H:%M")
                end = self.end_time.strftime("%H:%M") if self.end_time else "24:00"
                text += f" {begin}-{end}"
        return f"{text} ({self.label})" if self.label else text


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """Why one fire time does not run: the calendar (or :data:`SKIP_NEXT`), its rule's
    label, and the end of the excluded window (UTC), the first moment it lets fire."""

    calendar: str
    label: str
    until: dt.datetime

    def words(self) -> str:
        if self.calendar == SKIP_NEXT:
            return "Excluded: the operator asked to skip this run (skip next run)."
        label = f" ({self.label})" if self.label else ""
        return f"Excluded by calendar {self.calendar!r}{label}."


def _aware(naive: dt.datetime, tz: Any) -> dt.datetime:
    """A wall-clock moment of ``tz`` in UTC (a time inside a spring-forward gap is read
    with the offset before the gap, so it lands just after the gap)."""
    return naive.replace(tzinfo=tz).astimezone(dt.UTC)


@dataclasses.dataclass(frozen=True)
class Excluding:
    """``trigger`` without the fire times that ``rules`` exclude (in ``timezone``) and
    without ``skip`` (a one-off exclusion of exactly that fire time)."""

    trigger: Any
    rules: tuple[Rule, ...]
    timezone: str
    skip: dt.datetime | None = None

    def exclusion(self, fire: dt.datetime) -> Exclusion | None:
        """Why ``fire`` is excluded (the first rule that excludes it), or ``None``."""
        if self.skip is not None and fire == self.skip:
            return Exclusion(SKIP_NEXT, "", fire + _MICROSECOND)
        if not self.rules:
            return None
        tz = schedules.get_timezone(self.timezone)
        local = fire.astimezone(tz).replace(tzinfo=None)
        for rule in self.rules:
            end = rule.window_end(local)
            if end is not None:
                until = _aware(end, tz)
                # A window ending inside a repeated (fall-back) hour: never before the fire.
                return Exclusion(rule.calendar, rule.label, max(until, fire + _MICROSECOND))
        return None

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        fire = self.trigger.next_after(moment)
        for _ in range(JUMP_LIMIT):
            if fire is None:
                return None
            excluded = self.exclusion(fire)
            if excluded is None:
                return fire
            fire = self.trigger.next_after(excluded.until - _MICROSECOND)
        return None

    def excluded_spans(
        self, first: dt.datetime, before: dt.datetime
    ) -> list[tuple[Exclusion, dt.datetime, dt.datetime, int]]:
        """The excluded fire times from ``first`` up to (not including) ``before``, one
        entry per excluded window: ``(why, first fire time, last fire time, count)``.
        Fire times are counted by the trigger's own arithmetic where it has one
        (:func:`scheduling.runs.rules.missed_span`), not walked."""
        from scheduling.runs.rules import Missed, missed_span

        spans = []
        fire = self.trigger.next_after(first - _MICROSECOND)
        for _ in range(JUMP_LIMIT):
            if fire is None or fire >= before:
                break
            excluded = self.exclusion(fire)
            if excluded is None:
                fire = self.trigger.next_after(fire)
                continue
            end = min(excluded.until, before)
            last, count = missed_span(self.trigger, Missed(first=fire, before=end))
            spans.append((excluded, fire, last, count))
            fire = self.trigger.next_after(end - _MICROSECOND)
        return spans

    def __str__(self) -> str:
        names = sorted({rule.calendar for rule in self.rules})
        return f"{self.trigger} excluding {','.join(names) or SKIP_NEXT}"


def rules_from_ics(data: bytes, *, calendar: str, horizon_years: int = 5) -> list[Rule]:
    """The exclusion rules of an iCalendar file's events (a holiday calendar): an all-day
    event is its date (or its range, the end date excluded as iCalendar says), a yearly
    recurring event without an end a yearly date, any other recurring event its dates in
    the next ``horizon_years`` years (through ``recurring-ical-events``). An event with a
    time of day excludes its whole day. ``ValueError`` for a file that is not iCalendar."""
    import icalendar
    import recurring_ical_events

    try:
        parsed = icalendar.Calendar.from_ical(data)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"Not an iCalendar file: {exc}") from None
    rules: list[Rule] = []
    today = dt.date.today()
    horizon = today.replace(year=today.year + horizon_years)
    recurring = []
    for event in parsed.walk("VEVENT"):
        label = str(event.get("SUMMARY", ""))[:200]
        start = _as_date(event.get("DTSTART"))
        if start is None:
            continue
        rrule = event.get("RRULE")
        if rrule is not None:
            freq = rrule.get("FREQ", [""])[0]
            if freq == "YEARLY" and not {"UNTIL", "COUNT", "BYDAY", "BYMONTHDAY"} & set(rrule):
                rules.append(
                    Rule(calendar, "yearly", month=start.month, day=start.day, label=label)
                )
            else:
                recurring.append(event)
            continue
        end = _as_date(event.get("DTEND"))
        last = end - dt.timedelta(days=1) if end is not None and end > start else start
        if last == start:
            rules.append(Rule(calendar, "date", start=start, label=label))
        else:
            rules.append(Rule(calendar, "range", start=start, end=last, label=label))
    if recurring:
        holder = icalendar.Calendar()
        for event in recurring:
            holder.add_component(event)
        for occurrence in recurring_ical_events.of(holder).between(today, horizon):
            day = _as_date(occurrence.get("DTSTART"))
            if day is not None:
                rules.append(
                    Rule(calendar, "date", start=day, label=str(occurrence.get("SUMMARY", "")))
                )
    return rules


def _as_date(prop: Any) -> dt.date | None:
    """The date of an iCalendar date or date-time property (``None`` if absent)."""
    if prop is None:
        return None
    value = getattr(prop, "dt", prop)
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else None
