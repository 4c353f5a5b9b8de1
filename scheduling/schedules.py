"""Triggers: cron with seconds, fixed intervals and one-off dates, on top of croniter.

All times returned are aware datetimes in UTC. Each trigger answers one question,
``next_after(moment)``: the first fire time strictly after ``moment`` (``None`` when it
will never fire again).

Daylight-saving policy for cron (croniter alone fires ambiguous times twice):
- a wall-clock time that does not exist on a spring-forward day fires once, at the end of
  the gap (02:30 in a 02:00→03:00 gap fires at 03:00);
- a wall-clock time that occurs twice on a fall-back day fires once, at its first
  occurrence, when the expression names specific hours (a daily or weekly job runs once);
  when the hour field is ``*`` the job is hourly or faster and fires in both occurrences,
  because both are real, elapsed hours.
"""

import datetime as dt
import functools
import zoneinfo
from dataclasses import dataclass
from typing import Protocol

from croniter import croniter
from croniter.croniter import CroniterBadDateError

UTC = dt.UTC

CRON_FIELD_NAMES = ("second", "minute", "hour", "day of month", "month", "day of week")
_PROBE = ("0", "*", "*", "*", "*", "*")


class Trigger(Protocol):
    """Anything that answers ``next_after(moment)``: a cron, an interval or a date."""

    def next_after(self, moment: dt.datetime) -> dt.datetime | None: ...


@functools.cache
def available_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def get_timezone(name: str) -> zoneinfo.ZoneInfo:
    """Return the IANA zone ``name``; raise ``ValueError`` naming it when unknown."""
    if not isinstance(name, str) or name not in available_timezones():
        raise ValueError(f"Unknown timezone {name!r}; use an IANA name such as 'Asia/Shanghai'.")
    return zoneinfo.ZoneInfo(name)


def normalize_cron(expression: str) -> str:
    """Return ``expression`` as 6 fields, seconds first; raise ``ValueError`` naming the problem.

    Accepts the guide's 6-field form (``0 */5 * * * *``) and classic 5-field cron, which
    fires at second 0. Monday is 1 and Sunday 0 or 7, as in standard cron.
    """
    fields = (expression or "").split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise ValueError(
            f"A cron expression has 6 fields (second minute hour day-of-month month "
            f"day-of-week) or 5 (without seconds); {expression!r} has {len(fields)}."
        )
    normalized = " ".join(fields)
    if croniter.is_valid(normalized, second_at_beginning=True):
        return normalized
    for index, value in enumerate(fields):
        probe = list(_PROBE)
        probe[index] = value
        if not croniter.is_valid(" ".join(probe), second_at_beginning=True):
            raise ValueError(
                f"The {CRON_FIELD_NAMES[index]} field {value!r} of {expression!r} is not valid."
            )
    raise ValueError(f"The fields of {expression!r} do not fit together.")


def describe_cron(expression: str, *, locale: str = "en_US") -> str:
    """Return the cron expression in plain words, e.g. "Every 5 minutes"."""
    from cron_descriptor import Options, get_description

    options = Options()
    options.locale_code = locale
    options.use_24hour_time_format = True
    options.day_of_week_start_index_zero = True
    text = get_description(normalize_cron(expression), options)
    if locale.startswith("zh"):
        # cron-descriptor's Chinese catalogue leaves day and month names in English.
        for english, chinese in _ZH_NAMES.items():
            text = text.replace(english, chinese)
    return text


_ZH_NAMES = {
    **dict(
        zip(
            ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
            ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"),
            strict=True,
        )
    ),
    **{
        name: f"{number}月"
        for number, name in enumerate(
            (
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December",
            ),
            start=1,
        )
    },
}


def _occurs_twice(moment: dt.datetime, tz: zoneinfo.ZoneInfo) -> bool:
    """True when the wall-clock time of ``moment`` happens twice in ``tz`` (fall-back)."""
    naive = moment.replace(tzinfo=None)
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    return first.utcoffset() != second.utcoffset() and all(
        candidate.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive
        for candidate in (first, second)
    )


def _is_second_occurrence(moment: dt.datetime, tz: zoneinfo.ZoneInfo) -> bool:
    if not _occurs_twice(moment, tz):
        return False
    second = moment.replace(tzinfo=None).replace(tzinfo=tz, fold=1)
    return moment.utcoffset() == second.utcoffset()


@dataclass(frozen=True)
class CronTrigger:
    """A cron expression (seconds first) evaluated in a timezone."""

    expression: str
    timezone: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "expression", normalize_cron(self.expression))
        get_timezone(self.timezone)  # fail here, not later inside beat's loop

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return get_timezone(self.timezone)

    @property
    def fires_in_repeated_hour(self) -> bool:
        """True when the expression fires in every hour of the day (``*``, ``*/1``, ``0-23``)."""
        # croniter expands to [minute, hour, day, month, weekday, second].
        hours = croniter(self.expression, second_at_beginning=True).expanded[1]
        return hours == ["*"] or len(set(hours)) == 24

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        tz = self.tz
        start = moment.astimezone(tz)
        iterator = croniter(self.expression, start, second_at_beginning=True)
        try:
            for _ in range(10_000):
                candidate = iterator.get_next(dt.datetime)
                if candidate <= moment:
                    continue
                if not self.fires_in_repeated_hour and _is_second_occurrence(candidate, tz):
                    continue
                return candidate.astimezone(UTC)
        except CroniterBadDateError:
            return None
        return None

    def __str__(self) -> str:
        return f"cron[{self.expression}] {self.timezone}"


MAX_INTERVAL_SECONDS = 100 * 366 * 86400

INTERVAL_UNITS: dict[str, int] = {
    "seconds": 1,
    "minutes": 60,
    "hours": 3600,
    "days": 86400,
    "weeks": 7 * 86400,
}


@dataclass(frozen=True)
class IntervalTrigger:
    """Every ``seconds`` seconds of elapsed time, counted from ``anchor``.

    Intervals are elapsed time: a daily interval stays 24 hours across a DST change.
    The first fire time is ``anchor + interval``, as in APScheduler.
    """

    seconds: int
    anchor: dt.datetime

    def __post_init__(self) -> None:
        if self.seconds < 1:
            raise ValueError("An interval must be at least 1 second.")
        if self.seconds > MAX_INTERVAL_SECONDS:
            raise ValueError("An interval must be at most 100 years.")

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        period = dt.timedelta(seconds=self.seconds)
        try:
            if moment < self.anchor + period:
                return (self.anchor + period).astimezone(UTC)
            steps = (moment - self.anchor) // period + 1
            return (self.anchor + steps * period).astimezone(UTC)
        except OverflowError:
            return None  # beyond year 9999: never

    def __str__(self) -> str:
        return f"interval[{self.seconds}s]"


@dataclass(frozen=True)
class DateTrigger:
    """Once, at ``run_at``."""

    run_at: dt.datetime

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        return self.run_at.astimezone(UTC) if self.run_at > moment else None

    def __str__(self) -> str:
        return f"date[{self.run_at.isoformat()}]"


def upcoming(trigger: Trigger, *, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` fire times of ``trigger`` after ``after`` (fewer if it ends)."""
    times: list[dt.datetime] = []
    moment = after
    while len(times) < count:
        nxt = trigger.next_after(moment)
        if nxt is None:
            break
        times.append(nxt)
        moment = nxt
    return times
