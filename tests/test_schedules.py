"""Cron with seconds, intervals, dates and the daylight-saving policy."""

import datetime as dt

import pytest

from scheduling.schedules import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    describe_cron,
    normalize_cron,
    upcoming,
)

UTC = dt.UTC


def local_times(trigger, after, count, tz="America/New_York"):
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    return [
        t.astimezone(zone).strftime("%m-%d %H:%M:%S%z")
        for t in upcoming(trigger, after=after, count=count)
    ]


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("0 */5 * * * *", "0 */5 * * * *"),
        ("*/5 * * * *", "0 */5 * * * *"),
        ("  0 0 9 * * MON ", "0 0 9 * * MON"),
        ("0 0 12 ? JAN MON", "0 0 12 ? JAN MON"),
        ("0 0 12 L * *", "0 0 12 L * *"),
        ("0 0 9 * * 1#2", "0 0 9 * * 1#2"),
    ],
)
def test_cron_accepts_six_fields_seconds_first_and_five_fields(expression, normalized):
    assert normalize_cron(expression) == normalized


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "has 3"),
        ("", "has 0"),
        ("61 * * * * *", "second field '61'"),
        ("0 60 * * * *", "minute field '60'"),
        ("0 0 25 * * *", "hour field '25'"),
        ("0 0 0 32 * *", "day of month field '32'"),
        ("0 0 0 * 13 *", "month field '13'"),
        ("0 0 0 * * FOO", "day of week field 'FOO'"),
        ("0 0 12 5L * *", "day of month field '5L'"),
    ],
)
def test_broken_cron_names_the_field(expression, message):
    with pytest.raises(ValueError, match=message):
        normalize_cron(expression)


def test_every_second_cron_fires_each_second():
    start = dt.datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    times = upcoming(CronTrigger("*/1 * * * * *", "UTC"), after=start, count=3)
    assert times == [start.replace(microsecond=0) + dt.timedelta(seconds=s) for s in (1, 2, 3)]


def test_monday_is_one_as_in_standard_cron():
    # 2026-11-28 is a Saturday.
    start = dt.datetime(2026, 11, 28, tzinfo=UTC)
    (first,) = upcoming(CronTrigger("0 0 9 * * 1", "Asia/Shanghai"), after=start, count=1)
    local = first.astimezone(CronTrigger("0 0 9 * * 1", "Asia/Shanghai").tz)
    assert local.strftime("%A %H:%M") == "Monday 09:00"


def test_cron_is_read_in_the_jobs_timezone():
    start = dt.datetime(2026, 11, 28, tzinfo=UTC)
    shanghai = CronTrigger("0 0 2 * * *", "Asia/Shanghai").next_after(start)
    assert shanghai == dt.datetime(2026, 11, 28, 18, 0, tzinfo=UTC)  # 02:00 +08:00
    utc = CronTrigger("0 0 2 * * *", "UTC").next_after(start)
    assert utc == dt.datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def test_daily_time_in_spring_forward_gap_runs_once_right_after_the_gap():
    start = dt.datetime(2026, 3, 7, 12, tzinfo=UTC)
    times = local_times(CronTrigger("0 30 2 * * *", "America/New_York"), start, 3)
    assert times == ["03-08 03:00:00-0400", "03-09 02:30:00-0400", "03-10 02:30:00-0400"]


def test_daily_time_that_occurs_twice_on_fall_back_runs_once():
    start = dt.datetime(2026, 10, 31, 12, tzinfo=UTC)
    times = local_times(CronTrigger("0 30 1 * * *", "America/New_York"), start, 3)
    assert times == ["11-01 01:30:00-0400", "11-02 01:30:00-0500", "11-03 01:30:00-0500"]


def test_hourly_job_runs_in_both_repeated_hours_on_fall_back():
    start = dt.datetime(2026, 11, 1, 4, 50, tzinfo=UTC)  # 00:50 EDT
    times = local_times(CronTrigger("0 30 * * * *", "America/New_York"), start, 3)
    assert times == ["11-01 01:30:00-0400", "11-01 01:30:00-0500", "11-01 02:30:00-0500"]


def test_cron_that_never_fires_has_no_next_time():
    assert (
        CronTrigger("0 0 0 30 2 *", "UTC").next_after(dt.datetime(2026, 1, 1, tzinfo=UTC)) is None
    )


def test_interval_counts_from_its_anchor():
    anchor = dt.datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    trigger = IntervalTrigger(seconds=90, anchor=anchor)
    assert trigger.next_after(anchor) == anchor + dt.timedelta(seconds=90)
    assert trigger.next_after(anchor + dt.timedelta(seconds=100)) == anchor + dt.timedelta(
        seconds=180
    )
    assert trigger.next_after(anchor + dt.timedelta(seconds=180)) == anchor + dt.timedelta(
        seconds=270
    )


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="at least 1 second"):
        IntervalTrigger(seconds=0, anchor=dt.datetime(2026, 1, 1, tzinfo=UTC))


def test_date_fires_once():
    run_at = dt.datetime(2026, 12, 31, 15, 59, 59, tzinfo=UTC)
    trigger = DateTrigger(run_at)
    assert upcoming(trigger, after=run_at - dt.timedelta(days=1), count=5) == [run_at]
    assert trigger.next_after(run_at) is None


def test_cron_in_plain_words():
    assert describe_cron("0 */5 * * * *") == "Every 5 minutes"
    assert describe_cron("*/1 * * * * *") == "Every second"
    assert "Monday" in describe_cron("0 0 9 * * 1")


def test_hour_step_of_one_counts_as_hourly_on_fall_back():
    start = dt.datetime(2026, 11, 1, 4, 50, tzinfo=UTC)  # 00:50 EDT
    for expression in ("0 30 */1 * * *", "0 30 0-23 * * *"):
        times = local_times(CronTrigger(expression, "America/New_York"), start, 2)
        assert times == ["11-01 01:30:00-0400", "11-01 01:30:00-0500"], expression


def test_unknown_timezone_is_refused_when_the_trigger_is_built():
    with pytest.raises(ValueError, match="Unknown timezone 'Mars/Olympus'"):
        CronTrigger("0 * * * * *", "Mars/Olympus")


def test_a_range_of_one_value_is_that_value():
    # croniter 7 expands 1-1 to every value: Mondays only, not every day.
    assert normalize_cron("0 0 9 * * 1-1") == "0 0 9 * * 1"
    assert normalize_cron("0 0 9 * FEB-FEB MON-mon") == "0 0 9 * FEB MON"
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
    times = upcoming(CronTrigger("0 0 9 * * 1-1", "UTC"), after=start, count=2)
    assert [t.strftime("%a %d") for t in times] == ["Mon 05", "Mon 12"]
    times = upcoming(CronTrigger("0 5-5 * * * *", "UTC"), after=start, count=2)
    assert [t.strftime("%H:%M") for t in times] == ["00:05", "01:05"]
