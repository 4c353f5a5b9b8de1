"""Triggers: cron with seconds, fixed intervals and one-off dates, on top of croniter.

All times returned are aware datetimes in UTC. Each trigger answers one question,
``next_after(moment)``: the first fire time strictly after ``moment`` (``None`` when it
will never fire again).

Cron syntax (see :func:`normalize_cron`): ``second minute hour day-of-month month
day-of-week [year [week]]``, classic 5-field cron, or a macro (``@daily``). The days a cron
expression fires on are decided here, by :class:`CronRule` (Quartz's ``L``, ``L-n``,
``LW``, ``nW``, ``nL``, ``n#k``, the year field and APScheduler's ISO week, which croniter
either lacks or combines inconsistently); croniter finds the times of day within the
matching days of one month at a time and applies the daylight-saving rules below.

Daylight-saving policy for cron (croniter alone fires ambiguous times twice):
- a wall-clock time that does not exist on a spring-forward day fires once, at the end of
  the gap (02:30 in a 02:00→03:00 gap fires at 03:00);
- a wall-clock time that occurs twice on a fall-back day fires once, at its first
  occurrence, when the expression names specific hours (a daily or weekly job runs once);
  when the hour field is ``*`` the job is hourly or faster and fires in both occurrences,
  because both are real, elapsed hours.

The same policy reads a wall-clock date-time typed without an offset (a one-off job's
``run_at``, a validity window's ``start_at`` and ``end_at``): :func:`wall_clock_moment`.

A job's validity window (:class:`Window`) bounds any trigger: no fire time before its
start, none after its end.
"""

import calendar
import datetime as dt
import functools
import re
import zoneinfo
from dataclasses import dataclass
from typing import Protocol

from croniter import croniter
from croniter.croniter import CroniterBadDateError

UTC = dt.UTC

CRON_FIELD_NAMES = (
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
    "year",
    "week",
)
SECOND, MINUTE, HOUR, DAY, MONTH, WEEKDAY, YEAR, WEEK = range(8)
# Macros are stored as the 6 fields they stand for, so every stored expression has the
# same shape (as 5-field cron is stored with its second).
CRON_MACROS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
YEARS = (1970, 2099)  # Quartz's (and croniter's) range for the year field
WEEKS = (1, 53)  # ISO week numbers, as APScheduler's ``week``
# A day rule without a year repeats every 400 years (146,097 days, a whole number of weeks).
_HORIZON_YEARS = 400

_WEEKDAY_NAMES = {
    name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
_PLAIN_ITEM = re.compile(r"^(\*|\d+|[a-z]{3})(?:-(\d+|[a-z]{3}))?(?:/(\d+))?$")
_NUMBER_ITEM = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")
_ONE_VALUE_RANGE = re.compile(r"^(\w+)-\1(?:/\d+)?$", re.IGNORECASE)
_LAST_BEFORE = re.compile(r"^l-(\d+)$")
_NEAREST_WEEKDAY = re.compile(r"^(?:(\d+)w|w(\d+))$")  # w15: croniter's spelling of 15w
_LAST_WEEKDAY_OF = re.compile(r"^(?:(\d|[a-z]{3})l|l(\d))$")  # l5: croniter's spelling of 5l
_NTH_WEEKDAY = re.compile(r"^(\d|[a-z]{3})#(\d)$")


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


def wall_clock_moment(moment: dt.datetime, tz_name: str) -> dt.datetime:
    """``moment`` as an aware datetime in UTC: an aware one as it is, a naive one read as a
    wall-clock time in ``tz_name`` by the cron rules' daylight-saving policy.

    A time that does not exist (in a spring-forward gap) is the end of the gap, when the
    clock jumps past it (02:30 in a 02:00 → 03:00 gap is 03:00); a time that occurs twice
    (fall back) is its first occurrence. Raises ``ValueError`` naming the problem for an
    unknown zone or a moment outside the calendar.
    """
    tz = get_timezone(tz_name) if moment.tzinfo is None else None
    try:
        if tz is None:
            return moment.astimezone(UTC)
        first = moment.replace(tzinfo=tz, fold=0)
        if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == moment:
            return first.astimezone(UTC)
        return _gap_end(moment, tz)
    except OverflowError:
        raise ValueError(f"{moment.isoformat()} is outside the calendar.") from None


def parse_moment(text: str, tz_name: str) -> dt.datetime:
    """An ISO 8601 date-time (``2026-12-31 23:59:59``, ``2026-12-31T23:59:59+08:00``) as an
    aware datetime in UTC; one without an offset is a wall-clock time in ``tz_name``
    (:func:`wall_clock_moment`). Raises ``ValueError`` naming the problem."""
    try:
        moment = dt.datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date-time like 2026-12-31 23:59:59 (ISO 8601, optionally "
            f"with an offset such as +08:00)."
        ) from None
    return wall_clock_moment(moment, tz_name)


def _gap_end(naive: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The instant the clock jumps over the gap that hides ``naive`` (a whole second: zone
    transitions are), found between its readings at the offsets before and after."""
    before = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)  # still the old offset
    after = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)  # already the new one
    new_offset = after.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp()) + 1
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, tz).utcoffset() == new_offset:
            high = middle
        else:
            low = middle
    return dt.datetime.fromtimestamp(high, UTC)


class _FieldError(ValueError):
    """One field is not valid; ``hint`` says what it takes."""

    def __init__(self, hint: str = "") -> None:
        self.hint = hint
        super().__init__(hint)


@dataclass(frozen=True)
class CronRule:
    """A parsed cron expression: the times of day for croniter, the days decided here.

    ``None`` for a day field means it does not restrict the day. Day-of-month items are
    ``("days", set)``, ``("last", n)`` (n days before the last day), ``("last_weekday",)``
    and ``("nearest_weekday", d)``; day-of-week items are ``("weekdays", set)`` (0 is
    Sunday), ``("last_of", weekday)`` and ``("nth", weekday, k)``. As in classic cron, a
    day matches when either day field matches if both restrict the day, otherwise when
    both do; month, year and week must always match.
    """

    expression: str
    time_of_day: str  # "second minute hour" for croniter
    hours: frozenset[int]
    months: frozenset[int]
    days_of_month: tuple[tuple, ...] | None
    days_of_week: tuple[tuple, ...] | None
    years: frozenset[int] | None
    weeks: frozenset[int] | None

    def matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        if self.years is not None and day.year not in self.years:
            return False
        if self.weeks is not None and day.isocalendar().week not in self.weeks:
            return False
        by_month_day = self.days_of_month is None or any(
            _month_day_matches(item, day) for item in self.days_of_month
        )
        by_weekday = self.days_of_week is None or any(
            _weekday_matches(item, day) for item in self.days_of_week
        )
        if self.days_of_month is not None and self.days_of_week is not None:
            return by_month_day or by_weekday
        return by_month_day and by_weekday

    @property
    def croniter_alone(self) -> bool:
        """True when croniter reads the expression with the same meaning, unaided."""
        return (
            self.years is None
            and self.weeks is None
            and all(item[0] == "days" for item in self.days_of_month or ())
            and all(item[0] == "weekdays" for item in self.days_of_week or ())
        )

    @property
    def croniter_expression(self) -> str:
        """The expression for croniter, with a day field that restricts nothing as ``*``.

        croniter would read ``0/1`` or ``0-6`` in one day field as restricting, and then
        match either day field instead of the other alone.
        """
        fields = self.expression.split()
        if self.days_of_month is None:
            fields[DAY] = "*"
        if self.days_of_week is None:
            fields[WEEKDAY] = "*"
        return " ".join(fields[:6])

    @property
    def last_year(self) -> int | None:
        return max(self.years) if self.years is not None else None


def _last_day(day: dt.date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _weekday(day: dt.date) -> int:
    return day.isoweekday() % 7  # 0 is Sunday, as in cron


def _nearest_weekday(year: int, month: int, wanted: int) -> int:
    """The Monday-to-Friday day nearest ``wanted``, never leaving the month.

    A day past the month's end (31W in April) counts from the last day, as croniter does.
    """
    last = calendar.monthrange(year, month)[1]
    target = min(wanted, last)
    weekday = calendar.weekday(year, month, target)  # 0 is Monday here
    if weekday == 5:  # Saturday: the Friday before, or the Monday after the 1st
        return target - 1 if target > 1 else target + 2
    if weekday == 6:  # Sunday: the Monday after, or the Friday before the last day
        return target + 1 if target < last else target - 2
    return target


def _month_day_matches(item: tuple, day: dt.date) -> bool:
    kind = item[0]
    if kind == "days":
        return day.day in item[1]
    last = _last_day(day)
    if kind == "last":
        return day.day == last - item[1]
    if kind == "last_weekday":
        return day.day == _nearest_weekday(day.year, day.month, last)
    return day.day == _nearest_weekday(day.year, day.month, item[1])


def _weekday_matches(item: tuple, day: dt.date) -> bool:
    kind = item[0]
    if kind == "weekdays":
        return _weekday(day) in item[1]
    if _weekday(day) != item[1]:
        return False
    if kind == "last_of":
        return day.day + 7 > _last_day(day)
    return (day.day - 1) // 7 + 1 == item[2]


def _croniter_values(field_index: int, item: str) -> list:
    """croniter's expansion of one plain item of a field (``["*"]`` for all values)."""
    probe = ["0", "*", "*", "*", "*", "*"]
    probe[field_index] = item
    text = " ".join(probe)
    if not croniter.is_valid(text, second_at_beginning=True):
        raise _FieldError()
    # croniter expands to [minute, hour, day, month, weekday, second].
    position = {SECOND: 5, MINUTE: 0, HOUR: 1, DAY: 2, MONTH: 3, WEEKDAY: 4}[field_index]
    return croniter(text, second_at_beginning=True).expanded[position]


def _plain_values(field_index: int, item: str, low: int, high: int) -> frozenset[int]:
    """The values of one plain item: a number, a name, ``*``, a range, each with a step."""
    match = _PLAIN_ITEM.match(item)
    if not match or (
        field_index not in (MONTH, WEEKDAY) and any(g and g.isalpha() for g in match.groups())
    ):
        raise _FieldError()  # also refuses croniter's random "R" and hashed "H" values
    values = _croniter_values(field_index, item)
    if values == ["*"]:
        return frozenset(range(low, high + 1))
    return frozenset(int(v) for v in values)


def _time_field(field_index: int, value: str) -> frozenset[int]:
    low, high = {SECOND: (0, 59), MINUTE: (0, 59), HOUR: (0, 23), MONTH: (1, 12)}[field_index]
    found: set[int] = set()
    for item in value.lower().split(","):
        found |= _plain_values(field_index, item, low, high)
    return frozenset(found)


def _number_field(value: str, low: int, high: int) -> frozenset[int] | None:
    """Year and week: numbers, ``*``, ranges and steps (``2026-2030``, ``2027/2``)."""
    found: set[int] = set()
    for item in value.split(","):
        match = _NUMBER_ITEM.match(item)
        if not match:
            raise _FieldError(f"it takes numbers from {low} to {high}, ranges and steps")
        first, last, step = match.groups()
        if first == "*":
            if last:
                raise _FieldError()
            start, stop = low, high
        else:
            start = int(first)
            stop = int(last) if last else (high if step else start)
        if not (low <= start <= stop <= high) or (step is not None and int(step) < 1):
            raise _FieldError(f"it takes numbers from {low} to {high}, ranges and steps")
        found.update(range(start, stop + 1, int(step or 1)))
    return None if found == set(range(low, high + 1)) else frozenset(found)


def _day_of_month_field(value: str) -> tuple[tuple, ...] | None:
    if value == "?":
        return None
    items: list[tuple] = []
    for item in value.lower().split(","):
        if item == "l":
            items.append(("last", 0))
        elif item == "lw":
            items.append(("last_weekday",))
        elif match := _LAST_BEFORE.match(item):
            if int(match[1]) > 30:
                raise _FieldError("L-n counts from 0 to 30 days before the last day")
            items.append(("last", int(match[1])))
        elif match := _NEAREST_WEEKDAY.match(item):
            day = int(match[1] or match[2])
            if not 1 <= day <= 31:
                raise _FieldError("nW takes a day from 1 to 31")
            items.append(("nearest_weekday", day))
        else:
            days = _plain_values(DAY, item, 1, 31)
            if len(days) == 31:
                return None
            items.append(("days", days))
    return tuple(items)


def _weekday_number(text: str) -> int:
    if text.isdigit():
        if int(text) > 7:
            raise _FieldError("a weekday is 0-7 (Sunday is 0 or 7) or a name such as FRI")
        return int(text) % 7
    if text not in _WEEKDAY_NAMES:
        raise _FieldError("a weekday is 0-7 (Sunday is 0 or 7) or a name such as FRI")
    return _WEEKDAY_NAMES[text]


_OPEN_STEP = re.compile(r"^([0-9]+|[a-z]{3})/([0-9]+)$")


def _reaches_sunday_seven(match: re.Match) -> bool:
    """Whether ``start/step`` (no end) steps onto 7 from a weekday after Sunday."""
    start, step = _weekday_number(match[1]), int(match[2])
    return 1 <= start <= 6 and step > 0 and (7 - start) % step == 0


def _day_of_week_field(value: str) -> tuple[tuple, ...] | None:
    if value == "?":
        return None
    items: list[tuple] = []
    for item in value.lower().split(","):
        if match := _LAST_WEEKDAY_OF.match(item):
            items.append(("last_of", _weekday_number(match[1] or match[2])))
        elif match := _NTH_WEEKDAY.match(item):
            if not 1 <= int(match[2]) <= 5:
                raise _FieldError("#k counts the weekday's occurrence in the month, 1 to 5")
            items.append(("nth", _weekday_number(match[1]), int(match[2])))
        else:
            if item.startswith("7/"):
                # Sunday alone (7 to 7) to classic cron, every day (0 to 6) to croniter.
                raise _FieldError("a step from Sunday starts at 0 or SUN, not 7")
            if (match := _OPEN_STEP.match(item)) and _reaches_sunday_seven(match):
                # 1/2 is 1,3,5,7 to classic cron (its week runs to 7, Sunday) and 1,3,5 to
                # croniter (to 6): say which.
                raise _FieldError(
                    "a step from a weekday reads two ways at the week's end (with Sunday as "
                    "7 or without): give the range, e.g. 1-7/2 or 1-6/2"
                )
            weekdays = _plain_values(WEEKDAY, item, 0, 6)
            if len(weekdays) == 7:
                return None
            items.append(("weekdays", weekdays))
    return tuple(items)


def _split_fields(expression: str) -> list[str]:
    text = (expression or "").strip()
    if text.startswith("@"):
        if text.lower() not in CRON_MACROS:
            raise ValueError(
                f"Unknown cron macro {text!r}; use one of {', '.join(CRON_MACROS)}, "
                f"or give the fields."
            )
        return CRON_MACROS[text.lower()].split()
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) not in (6, 7, 8):
        raise ValueError(
            f"A cron expression has 6 fields (second minute hour day-of-month month "
            f"day-of-week), 5 (without seconds), a 7th for the year and an 8th for the ISO "
            f"week, or is a macro such as @daily; {expression!r} has {len(fields)}."
        )
    # croniter 7 reads a range of one value (1-1, FEB-FEB) as every value: store the value.
    fields = [
        ",".join(_ONE_VALUE_RANGE.sub(r"\1", item) for item in field.split(",")) for field in fields
    ]
    # A year or week of '*' restricts nothing: the stored form leaves it out.
    while len(fields) > 6 and fields[-1] == "*":
        fields.pop()
    return fields


@functools.lru_cache(maxsize=4096)
def parse_cron(expression: str) -> CronRule:
    """Parse a cron expression; raise ``ValueError`` naming the field that is wrong."""
    fields = _split_fields(expression)
    parsed: list = []
    for index, value in enumerate(fields):
        try:
            if "?" in value and (value != "?" or index not in (DAY, WEEKDAY)):
                raise _FieldError("'?' stands alone, in the day-of-month or day-of-week field")
            if index in (SECOND, MINUTE, HOUR, MONTH):
                parsed.append(_time_field(index, value))
            elif index == DAY:
                parsed.append(_day_of_month_field(value))
            elif index == WEEKDAY:
                parsed.append(_day_of_week_field(value))
            else:
                parsed.append(_number_field(value, *(YEARS if index == YEAR else WEEKS)))
        except _FieldError as exc:
            hint = f": {exc.hint}" if exc.hint else ""
            raise ValueError(
                f"The {CRON_FIELD_NAMES[index]} field {value!r} of {expression!r} "
                f"is not valid{hint}."
            ) from None
    parsed += [None] * (8 - len(parsed))
    return CronRule(
        expression=" ".join(fields),
        time_of_day=" ".join(fields[:3]),
        hours=parsed[HOUR],
        months=parsed[MONTH],
        days_of_month=parsed[DAY],
        days_of_week=parsed[WEEKDAY],
        years=parsed[YEAR],
        weeks=parsed[WEEK],
    )


def normalize_cron(expression: str) -> str:
    """Return ``expression`` in its stored form; raise ``ValueError`` naming the problem.

    Accepts the guide's 6-field form (``0 */5 * * * *``), classic 5-field cron (fires at
    second 0), an optional 7th field for the year (``0 0 12 1 1 ? 2028``, 1970-2099) and
    an 8th for the ISO week (1-53, APScheduler's ``week``), and the macros ``@yearly``,
    ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``,
    stored as the 6 fields they stand for. Monday is 1 and Sunday 0 or 7, as in standard
    cron. Day of month also takes ``L``, ``L-n``, ``LW`` and ``nW``; day of week ``nL``
    (``5L``, ``FRIL``: the last Friday) and ``n#k`` (``1#2``: the second Monday).
    """
    return parse_cron(expression).expression


@functools.lru_cache(maxsize=65536)
def _days_in_month(rule: CronRule, year: int, month: int) -> tuple[int, ...]:
    if month not in rule.months or (rule.years is not None and year not in rule.years):
        return ()
    last = calendar.monthrange(year, month)[1]
    return tuple(d for d in range(1, last + 1) if rule.matches(dt.date(year, month, d)))


def describe_cron(expression: str, *, locale: str = "en_US") -> str:
    """Return the cron expression in plain words, e.g. "Every 5 minutes".

    cron-descriptor describes the times, months and years; the day fields are described
    here when they use ``L``, ``W`` or ``#`` (cron-descriptor garbles them in lists and
    leaves some out in Chinese), and so is the ISO week, which it does not know.
    """
    from cron_descriptor import ExpressionDescriptor, Options

    rule = parse_cron(expression)
    fields = rule.expression.split() + ["*"] * (8 - len(rule.expression.split()))
    zh = locale.startswith("zh")
    words = _ZH_WORDS if zh else _EN_WORDS
    own_days = [
        index
        for index, items in ((DAY, rule.days_of_month), (WEEKDAY, rule.days_of_week))
        if items and any(item[0] not in ("days", "weekdays") for item in items)
    ]
    projected = [("*" if index in own_days else value) for index, value in enumerate(fields[:7])]
    # cron-descriptor ends an open year step at 9999; the year field ends at 2099.
    projected[YEAR] = re.sub(r"(?<![-\d])(\d+)/", rf"\1-{YEARS[1]}/", projected[YEAR])
    options = Options()
    options.locale_code = locale
    options.use_24hour_time_format = True
    options.day_of_week_start_index_zero = True
    try:
        descriptor = ExpressionDescriptor(" ".join(projected), options)
        parts = [descriptor.get_time_of_day_description()]
        for index in (DAY, WEEKDAY):
            if index in own_days:
                parts.append(_describe_day_field(rule, index, words))
            elif index == DAY:
                parts.append(descriptor.get_day_of_month_description())
            else:
                parts.append(descriptor.get_day_of_week_description())
        parts += [descriptor.get_month_description(), descriptor.get_year_description()]
        if fields[WEEK] != "*":
            parts.append(words["week"].format(fields[WEEK]))
        text = descriptor.transform_verbosity("".join(parts), options.verbose)
        text = descriptor.transform_case(text, options.casing_type)
    except Exception:  # cron-descriptor fails on a form it does not know: say it as typed
        return rule.expression
    if zh:
        # cron-descriptor's Chinese catalogue leaves day and month names in English.
        for english, chinese in _ZH_NAMES.items():
            text = text.replace(english, chinese)
    return text


_WEEKDAYS_EN = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_ORDINALS_EN = ("first", "second", "third", "fourth", "fifth")
_EN_WORDS = {
    "on": ", {0}",
    "and": " and ",
    "last": "on the last day of the month",
    "before_last": "{0} days before the last day of the month",
    "one_before_last": "1 day before the last day of the month",
    "last_weekday": "on the last weekday of the month",
    "nearest_weekday": "on the weekday nearest day {0} of the month",
    "days": "on day {0} of the month",
    "last_of": "on the last {0} of the month",
    "nth": "on the {0} {1} of the month",
    "weekdays": "on {0}",
    "week": ", only in ISO week {0}",
    "weekday_names": _WEEKDAYS_EN,
    "ordinals": _ORDINALS_EN,
}
_ZH_WORDS = {
    "on": ", {0}",
    "and": "和",
    "last": "每月最后一天",
    "before_last": "每月最后一天的前 {0} 天",
    "one_before_last": "每月最后一天的前 1 天",
    "last_weekday": "每月最后一个工作日",
    "nearest_weekday": "每月最接近 {0} 号的工作日",
    "days": "每月 {0} 号",
    "last_of": "每月最后一个{0}",
    "nth": "每月第{0}个{1}",
    "weekdays": "{0}",
    "week": ", 仅在 ISO 第 {0} 周",
    "weekday_names": ("星期日", "星期一", "星期二", "星期三", "星期四", "星期五", "星期六"),
    "ordinals": ("一", "二", "三", "四", "五"),
}


def _describe_day_field(rule: CronRule, index: int, words: dict) -> str:
    """One day field with ``L``, ``W`` or ``#`` in words: ", on the last Friday of the month"."""
    names = words["weekday_names"]
    field = rule.expression.split()[index]
    parts = []
    for item, text in zip(
        rule.days_of_month if index == DAY else rule.days_of_week,
        field.split(","),
        strict=True,
    ):
        kind = item[0]
        if kind == "last" and item[1] == 0:
            parts.append(words["last"])
        elif kind == "last":
            key = "one_before_last" if item[1] == 1 else "before_last"
            parts.append(words[key].format(item[1]))
        elif kind == "last_weekday":
            parts.append(words["last_weekday"])
        elif kind == "nearest_weekday":
            parts.append(words["nearest_weekday"].format(item[1]))
        elif kind == "days":
            parts.append(words["days"].format(text))
        elif kind == "last_of":
            parts.append(words["last_of"].format(names[item[1]]))
        elif kind == "nth":
            parts.append(words["nth"].format(words["ordinals"][item[2] - 1], names[item[1]]))
        else:
            parts.append(", ".join(names[d] for d in sorted(item[1])))
    return words["on"].format(words["and"].join(parts))


_ZH_NAMES = {
    **dict(zip(_WEEKDAYS_EN, _ZH_WORDS["weekday_names"], strict=True)),
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


def _as_ranges(days: tuple[int, ...]) -> str:
    """``1,2,3,7`` as ``1-3,7``: croniter parses a long list slowly."""
    runs: list[list[int]] = []
    for day in days:
        if runs and day == runs[-1][1] + 1:
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


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
    def rule(self) -> CronRule:
        return parse_cron(self.expression)

    @property
    def fires_in_repeated_hour(self) -> bool:
        """True when the expression fires in every hour of the day (``*``, ``*/1``, ``0-23``)."""
        return len(self.rule.hours) == 24

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        """The first fire time after ``moment``.

        An expression croniter reads alone (no ``L``, ``W`` or ``#`` in the day fields, no
        year or week) goes to croniter as it is. Any other goes month by month: the days
        the rule matches in the month are listed and croniter is asked for the first time
        of day on one of them (``S M H 3,17 5 *``), so its daylight-saving handling applies
        unchanged; a month without such a day, or whose times are all past, moves on.
        """
        rule, tz = self.rule, self.tz
        start = moment.astimezone(tz)
        if rule.croniter_alone:
            iterator = croniter(rule.croniter_expression, start, second_at_beginning=True)
            return self._first_fire(iterator, moment, tz)
        last_year = rule.last_year or start.year + _HORIZON_YEARS
        year, month = start.year, start.month
        while year <= min(last_year, 9998):
            days = _days_in_month(rule, year, month)
            if (year, month) == (start.year, start.month):
                days = tuple(day for day in days if day >= start.day)
            if days:
                # Begin the day before the month: croniter then cannot match the same
                # month of a later year first, and no fire time of this month is skipped.
                eve = dt.datetime(year, month, 1, tzinfo=tz) - dt.timedelta(days=1)
                every_day = len(days) == calendar.monthrange(year, month)[1]
                day_field = "*" if every_day else _as_ranges(days)
                expression = f"{rule.time_of_day} {day_field} {month} *"
                iterator = croniter(expression, max(start, eve), second_at_beginning=True)
                found = self._first_fire(iterator, moment, tz, within=(year, month))
                if found is not None:
                    return found
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return None

    def _first_fire(
        self,
        iterator: croniter,
        moment: dt.datetime,
        tz: zoneinfo.ZoneInfo,
        within: tuple[int, int] | None = None,
    ) -> dt.datetime | None:
        """The iterator's first time after ``moment`` that the DST policy lets fire."""
        try:
            for _ in range(100_000):
                candidate = iterator.get_next(dt.datetime)
                if within is not None and (candidate.year, candidate.month) != within:
                    return None
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


@dataclass(frozen=True)
class Window:
    """``trigger`` within a validity window: its first fire time is the first at or after
    ``start`` (APScheduler's ``start_date``), and none is after ``end`` (its ``end_date``).
    Either bound may be ``None`` (open)."""

    trigger: Trigger
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        if self.start is not None and moment < self.start:
            moment = self.start - dt.timedelta(microseconds=1)  # at or after the start
        fire = self.trigger.next_after(moment)
        if fire is None or (self.end is not None and fire > self.end):
            return None
        return fire

    def __str__(self) -> str:
        bounds = [
            f"{word} {bound.astimezone(UTC).isoformat()}"
            for word, bound in (("from", self.start), ("until", self.end))
            if bound is not None
        ]
        return " ".join([str(self.trigger), *bounds])


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
