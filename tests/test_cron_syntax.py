"""The cron syntax users bring (macros, Quartz's L/W/#, year, ISO week) against a brute-force
reference written here: every day is tested by plain definitions, and the fire times of
whole years are listed and compared with ``CronTrigger.next_after``."""

import calendar
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from scheduling.schedules import CronTrigger, describe_cron, normalize_cron, parse_cron, upcoming

UTC = dt.UTC
NAMES = {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
NAMES |= {n: i for i, n in enumerate(calendar.month_abbr) if n}
NAMES = {k.lower(): v for k, v in NAMES.items()}


# --- the reference: definitions, no cleverness ----------------------------------------------


def _number(text: str) -> int:
    return int(text) if text.isdigit() else NAMES[text.lower()]


def _plain(item: str, value: int, low: int, high: int = 10_000) -> bool:
    base, _, step = item.partition("/")
    if base == "*":
        first, last = low, high
    elif "-" in base:
        first, last = (_number(p) for p in base.split("-"))
    else:
        first = _number(base)
        last = high if step else first  # an open step (1/2) runs to the field's end
    return first <= value <= last and (value - first) % int(step or 1) == 0


def _safe_plain(item: str, value: int, low: int) -> bool:
    try:
        return _plain(item, value, low)
    except (KeyError, ValueError):  # L, W, # items
        return False


def _weekdays_mon_fri(day: dt.date) -> list[int]:
    last = calendar.monthrange(day.year, day.month)[1]
    return [d for d in range(1, last + 1) if dt.date(day.year, day.month, d).weekday() < 5]


def _dom_item(item: str, day: dt.date) -> bool:
    item = item.upper()
    last = calendar.monthrange(day.year, day.month)[1]
    if item == "L":
        return day.day == last
    if item.startswith("L-"):
        return day.day == last - int(item[2:])
    if item == "LW":
        return day.day == max(_weekdays_mon_fri(day))
    if item.endswith("W"):
        wanted = min(int(item[:-1]), last)
        return day.day == min(_weekdays_mon_fri(day), key=lambda d: abs(d - wanted))
    return _plain(item, day.day, 1)


def _dow_item(item: str, day: dt.date) -> bool:
    weekday = day.isoweekday() % 7
    if item.upper().endswith("L"):
        wanted = _number(item[:-1]) % 7
        later = day + dt.timedelta(days=7)
        return weekday == wanted and later.month != day.month
    if "#" in item:
        name, k = item.split("#")
        same = [
            d
            for d in range(1, day.day + 1)
            if dt.date(day.year, day.month, d).weekday() == day.weekday()
        ]
        return weekday == _number(name) % 7 and len(same) == int(k)
    # 7 is Sunday too.
    return _plain(item, weekday, 0, 6) or (weekday == 0 and _plain(item, 7, 0, 6))


def reference_day(expression: str, day: dt.date) -> bool:
    fields = [*normalize_cron(expression).split(), "*", "*"]
    dom, month, dow, year, week = fields[3], fields[4], fields[5], fields[6], fields[7]
    if not any(_plain(i, day.month, 1) for i in month.split(",")):
        return False
    if not any(_plain(i, day.year, 1970) for i in year.split(",")):
        return False
    if not any(_plain(i, day.isocalendar().week, 1) for i in week.split(",")):
        return False
    # A field that names every value (*, ?, */1, 1-31, 0-7) does not restrict the day.
    dom_free = dom == "?" or all(
        any(_safe_plain(i, v, 1) for i in dom.split(",")) for v in range(1, 32)
    )
    dow_free = dow == "?" or all(  # 7 is Sunday too (1-7 names every day)
        any(_safe_plain(i, v, 0) or (v == 0 and _safe_plain(i, 7, 0)) for i in dow.split(","))
        for v in range(7)
    )
    by_dom = dom_free or any(_dom_item(i, day) for i in dom.split(","))
    by_dow = dow_free or any(_dow_item(i, day) for i in dow.split(","))
    return (by_dom or by_dow) if not dom_free and not dow_free else (by_dom and by_dow)


def _exists(naive: dt.datetime, tz: ZoneInfo) -> bool:
    return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive


def reference_fires(expression: str, tz_name: str, start: dt.date, end: dt.date):
    """Every fire time from ``start`` to ``end`` (local days), with the DST policy."""
    tz = ZoneInfo(tz_name)
    fields = normalize_cron(expression).split()
    seconds, minutes, hours = (
        [v for v in range(high) if any(_plain(i, v, 0) for i in f.split(","))]
        for f, high in zip(fields[:3], (60, 60, 24), strict=True)
    )
    every_hour = len(hours) == 24
    fires = []
    day = start
    while day <= end:
        if reference_day(expression, day):
            for h in hours:
                for m in minutes:
                    for s in seconds:
                        naive = dt.datetime(day.year, day.month, day.day, h, m, s)
                        first = naive.replace(tzinfo=tz, fold=0)
                        second = naive.replace(tzinfo=tz, fold=1)
                        if not _exists(naive, tz):
                            if not every_hour:  # in a gap: once, at the end of the gap
                                gap_end = naive
                                while not _exists(gap_end, tz):
                                    gap_end += dt.timedelta(minutes=1)
                                fires.append(gap_end.replace(tzinfo=tz).astimezone(UTC))
                            continue
                        fires.append(first.astimezone(UTC))
                        if every_hour and first.utcoffset() != second.utcoffset():
                            fires.append(second.astimezone(UTC))
        day += dt.timedelta(days=1)
    return sorted(set(fires))


# --- the reference against the rule, every day ---------------------------------------------

DAY_FIELDS = [
    ("*", "5L"),
    ("?", "FRIL"),
    ("?", "7L"),
    ("?", "0L,3L"),
    ("L", "*"),
    ("L-1", "?"),
    ("L-3", "?"),
    ("L-30", "?"),
    ("LW", "?"),
    ("1W", "?"),
    ("15W", "?"),
    ("31W", "?"),
    ("1,L", "*"),
    ("1,15W,L-2", "?"),
    ("?", "1#1"),
    ("?", "5#5"),
    ("?", "MON#2,FRI#4"),
    ("?", "5#3,5L"),
    ("15", "5L"),  # both restrict: either matches, as in classic cron
    ("1", "5#1"),
    ("LW", "MON"),
    ("1-7", "1"),
    ("*/10", "SAT,SUN"),
    ("*", "1-5"),
    ("13", "5"),
    ("29", "*"),
]
MONTH_YEAR_WEEK = [
    ("*", "", ""),
    ("2", "", ""),
    ("jan-mar,oct", "", ""),
    ("*", " 2028", ""),
    ("*/2", " 2027-2029,2031", ""),
    ("*", " *", " 10"),
    ("*", " 2026-2030", " 1,52-53"),
    ("*", " *", " */2"),
]


@pytest.mark.parametrize(("dom", "dow"), DAY_FIELDS)
@pytest.mark.parametrize(("month", "year", "week"), MONTH_YEAR_WEEK)
def test_every_day_of_eight_years_matches_the_reference(dom, dow, month, year, week):
    if week and not year:
        year = " *"
    expression = f"0 0 12 {dom} {month} {dow}{year}{week}"
    rule = parse_cron(expression)
    day = dt.date(2024, 1, 1)
    while day < dt.date(2032, 1, 1):
        assert rule.matches(day) == reference_day(expression, day), (expression, day)
        day += dt.timedelta(days=1)


TIMES = ["0 30 2", "0 30 1", "15 */20 */7"]
TIMEZONES = ["America/New_York", "Europe/Berlin", "Asia/Shanghai"]


@pytest.mark.parametrize(("dom", "dow"), DAY_FIELDS)
@pytest.mark.parametrize("time_of_day", TIMES)
@pytest.mark.parametrize("tz_name", TIMEZONES)
def test_fire_times_of_two_years_match_the_reference(dom, dow, time_of_day, tz_name):
    _assert_matches_reference(f"{time_of_day} {dom} * {dow}", tz_name, years=2)


@pytest.mark.parametrize("expression", ["0 0 * ? * 0L", "0 30 * L-3 * ?", "*/30 0 1 LW 3,10,11 ?"])
@pytest.mark.parametrize("tz_name", TIMEZONES)
def test_hourly_fire_times_across_dst_match_the_reference(expression, tz_name):
    _assert_matches_reference(expression, tz_name, years=2)


def _assert_matches_reference(expression: str, tz_name: str, years: int) -> None:
    end = dt.date(2026 + years - 1, 12, 31)
    expected = reference_fires(expression, tz_name, dt.date(2026, 1, 1), end)
    tz = ZoneInfo(tz_name)
    after = dt.datetime(2026, 1, 1, tzinfo=tz) - dt.timedelta(microseconds=1)
    truncated = len(expected) > 250  # dense: the first 250 fire times are enough
    expected = expected[:250]
    got = upcoming(CronTrigger(expression, tz_name), after=after, count=len(expected) + 1)
    assert got[: len(expected)] == expected, expression
    if not truncated:  # and nothing more in the window
        assert len(got) == len(expected) or got[-1].astimezone(tz).date() > end, expression


@pytest.mark.parametrize(
    ("expression", "year"),
    [("0 0 12 * 2 ? 2028", 2028), ("0 0 9 L * ? 2027/2", None), ("0 0 9 ? * MON * 10", None)],
)
@pytest.mark.parametrize("tz_name", TIMEZONES)
def test_year_and_week_fire_times_match_the_reference(expression, year, tz_name):
    expected = reference_fires(expression, tz_name, dt.date(2026, 1, 1), dt.date(2033, 12, 31))
    after = dt.datetime(2026, 1, 1, tzinfo=ZoneInfo(tz_name)) - dt.timedelta(microseconds=1)
    got = upcoming(CronTrigger(expression, tz_name), after=after, count=len(expected))
    assert got == expected
    if year:
        assert CronTrigger(expression, tz_name).next_after(expected[-1]) is None


# --- examples an operator reads ------------------------------------------------------------


def _local(expression, tz_name="Asia/Shanghai", after=dt.datetime(2026, 1, 1, tzinfo=UTC), n=3):
    trigger = CronTrigger(expression, tz_name)
    return [
        t.astimezone(trigger.tz).strftime("%Y-%m-%d %a %H:%M")
        for t in upcoming(trigger, after=after, count=n)
    ]


@pytest.mark.parametrize(
    ("macro", "stored"),
    [
        ("@yearly", "0 0 0 1 1 *"),
        ("@annually", "0 0 0 1 1 *"),
        ("@monthly", "0 0 0 1 * *"),
        ("@weekly", "0 0 0 * * 0"),
        ("@daily", "0 0 0 * * *"),
        ("@midnight", "0 0 0 * * *"),
        ("@hourly", "0 0 * * * *"),
        (" @Daily ", "0 0 0 * * *"),
    ],
)
def test_macros_are_stored_as_the_six_fields_they_stand_for(macro, stored):
    assert normalize_cron(macro) == stored


def test_a_date_with_a_year_fires_once():
    assert _local("0 0 12 1 1 ? 2028", n=5) == ["2028-01-01 Sat 12:00"]


def test_last_friday_of_the_month():
    assert (
        _local("0 0 18 ? * 5L")
        == _local("0 0 18 ? * FRIL")
        == [
            "2026-01-30 Fri 18:00",
            "2026-02-27 Fri 18:00",
            "2026-03-27 Fri 18:00",
        ]
    )


def test_fifth_friday_skips_months_without_one():
    assert _local("0 0 9 ? * 5#5") == [
        "2026-01-30 Fri 09:00",
        "2026-05-29 Fri 09:00",
        "2026-07-31 Fri 09:00",
    ]


def test_l_minus_n_and_last_weekday():
    assert _local("0 0 9 L-3 * ?") == [
        "2026-01-28 Wed 09:00",
        "2026-02-25 Wed 09:00",
        "2026-03-28 Sat 09:00",
    ]
    assert _local("0 0 9 LW * ?") == [
        "2026-01-30 Fri 09:00",
        "2026-02-27 Fri 09:00",
        "2026-03-31 Tue 09:00",
    ]


def test_nearest_weekday_never_leaves_the_month():
    # 2026-02-01 is a Sunday and 2026-05-31 a Sunday.
    assert _local("0 0 9 1W 2 ?", n=1) == ["2026-02-02 Mon 09:00"]
    assert _local("0 0 9 31W 5 ?", n=1) == ["2026-05-29 Fri 09:00"]
    assert _local("0 0 9 1W 8 ?", n=1) == ["2026-08-03 Mon 09:00"]  # Saturday the 1st


def test_old_croniter_spellings_still_read():
    assert _local("0 0 12 ? * L5") == _local("0 0 12 ? * 5L")
    assert _local("0 0 12 W15 * ?") == _local("0 0 12 15W * ?")


def test_a_daily_time_on_a_last_weekday_keeps_the_dst_policy():
    # 2026-03-29 is the last Sunday of March: Berlin springs forward 02:00 -> 03:00.
    assert _local("0 30 2 ? 3 0L", "Europe/Berlin", n=1) == ["2026-03-29 Sun 03:00"]
    # 2026-10-25, the last Sunday of October: 02:30 happens twice and fires once.
    after = dt.datetime(2026, 10, 1, tzinfo=UTC)
    assert _local("0 30 2 ? 10 0L", "Europe/Berlin", after=after, n=2) == [
        "2026-10-25 Sun 02:30",
        "2027-10-31 Sun 02:30",
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 12 * * 9L", "day of week field '9L'"),
        ("0 0 12 ? * 1#6", "day of week field '1#6'"),
        ("* * * * * 7/1", "day of week field '7/1'.*starts at 0 or SUN"),
        ("* * * 2 * 1/1", "day of week field '1/1'.*1-7/2 or 1-6/2"),
        ("0 0 9 ? * MON/2", "day of week field 'MON/2'.*with Sunday as 7 or without"),
        ("0 0 9 ? * 3/4", "day of week field '3/4'"),
        ("0 0 12 ? * L", "day of week field 'L'"),
        ("0 0 12 L-31 * ?", "day of month field 'L-31'"),
        ("0 0 12 32W * ?", "day of month field '32W'"),
        ("0 0 12 5L * ?", "day of month field '5L'"),
        ("0 0 12 R * ?", "day of month field 'R'"),
        ("0 0 12 1 1 ? 2100", "year field '2100'"),
        ("0 0 12 1 1 ? 1969", "year field '1969'"),
        ("0 0 12 1 1 ? 2030-2028", "year field '2030-2028'"),
        ("0 0 12 1 1 ? ?", "year field '\\?'"),
        ("0 0 12 * * ? * 54", "week field '54'"),
        ("0 0 12 * * ? * 0", "week field '0'"),
        ("@reboot", "Unknown cron macro '@reboot'"),
        ("0 0 12 * * ? * * *", "has 9"),
    ],
)
def test_anything_else_is_refused_naming_the_field(expression, message):
    with pytest.raises(ValueError, match=message):
        normalize_cron(expression)


def test_a_year_or_week_of_star_is_left_out_of_the_stored_form():
    assert normalize_cron("0 0 12 * * ? *") == "0 0 12 * * ?"
    assert normalize_cron("0 0 12 * * ? * *") == "0 0 12 * * ?"
    assert normalize_cron("0 0 12 * * ? * 10") == "0 0 12 * * ? * 10"


@pytest.mark.parametrize(
    ("expression", "english", "chinese"),
    [
        ("@daily", "At 00:00", "在 00:00"),
        ("0 0 12 ? * 5L", "At 12:00, on the last Friday of the month", "每月最后一个星期五"),
        (
            "0 0 12 L-3 * ?",
            "At 12:00, 3 days before the last day of the month",
            "每月最后一天的前 3 天",
        ),
        ("0 0 12 LW * ?", "on the last weekday of the month", "每月最后一个工作日"),
        (
            "0 0 12 15W * ?",
            "on the weekday nearest day 15 of the month",
            "每月最接近 15 号的工作日",
        ),
        ("0 0 12 ? * 5#5", "on the fifth Friday of the month", "每月第五个星期五"),
        (
            "0 0 12 1,L * ?",
            "on day 1 of the month and on the last day of the month",
            "每月 1 号和每月最后一天",
        ),
        ("0 0 12 1 1 ? 2028", "only in January, only in 2028", "仅在 2028"),
        ("0 0 12 1 1 ? 2027/2", "every 2 years, 2027 through 2099", "2027 到 2099"),
        ("0 0 9 ? * MON * 10", "only on Monday, only in ISO week 10", "ISO 第 10 周"),
    ],
)
def test_new_syntax_in_plain_words_in_both_languages(expression, english, chinese):
    assert english in describe_cron(expression)
    assert chinese in describe_cron(expression, locale="zh_CN")


@pytest.mark.parametrize("weekdays", ["*", "?", "0-6", "0/1", "*/1", "0-7", "SUN-SAT"])
def test_a_day_of_week_naming_every_day_leaves_the_day_of_month_alone(weekdays):
    # Not "either the 2nd or any day": croniter read 0/1 that way.
    assert _local(f"0 0 9 2 * {weekdays}", "UTC", n=2) == [
        "2026-01-02 Fri 09:00",
        "2026-02-02 Mon 09:00",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("expression", "words", "runs"),
    [
        ("@daily", "At 00:00 (Asia/Shanghai)", 5),
        ("0 0 18 ? * FRIL", "At 18:00, on the last Friday of the month (Asia/Shanghai)", 5),
        ("0 0 12 1 1 ? 2099", "only in 2099 (Asia/Shanghai)", 1),
    ],
)
def test_admin_preview_of_the_new_syntax(admin_client, expression, words, runs):
    from django.urls import reverse

    answer = admin_client.get(
        reverse("admin:scheduling_job_preview"),
        {"trigger_type": "cron", "cron_expression": expression, "timezone": "Asia/Shanghai"},
    ).json()
    assert answer["description"].endswith(words)
    assert len(answer["next_runs"]) == runs
    bad = admin_client.get(
        reverse("admin:scheduling_job_preview"),
        {"trigger_type": "cron", "cron_expression": "0 0 12 ? * 9L", "timezone": "UTC"},
    )
    assert bad.status_code == 400
    assert "day of week field '9L'" in bad.json()["error"]
