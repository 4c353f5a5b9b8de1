"""Exclusion calendars: the rules, the jump over excluded windows, the services, beat's
record of excluded fire times (one row per window), the preview and the commands."""

import datetime as dt
import io
import json
import time

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from scheduling import calendar_services, calendars, explain, schedules, selectors
from scheduling.models import Calendar, CalendarRule, Job, JobExecution
from tests.factories import make_job
from tests.test_scheduler import leader, sent  # noqa: F401 (the fixture)

SH = schedules.get_timezone("Asia/Shanghai")
UTC = dt.UTC


def local(*args, tz=SH) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz).astimezone(UTC)


WEEKEND = (calendars.Rule("weekend", "weekly", weekdays=(5, 6)),)


def every_second() -> schedules.IntervalTrigger:
    return schedules.IntervalTrigger(seconds=1, anchor=local(2026, 1, 1))


def test_a_weekend_is_jumped_over_not_walked():
    trigger = calendars.Excluding(every_second(), WEEKEND, "Asia/Shanghai")
    friday_last = local(2026, 12, 4, 23, 59, 59)  # 2026-12-04 is a Friday
    started = time.perf_counter()
    assert trigger.next_after(friday_last) == local(2026, 12, 7)  # Monday 00:00:00
    spans = trigger.excluded_spans(local(2026, 12, 5), local(2026, 12, 7))
    assert time.perf_counter() - started < 0.05
    assert [(why.calendar, first, last, count) for why, first, last, count in spans] == [
        ("weekend", local(2026, 12, 5), local(2026, 12, 5, 23, 59, 59), 86_400),
        ("weekend", local(2026, 12, 6), local(2026, 12, 6, 23, 59, 59), 86_400),
    ]


def test_dates_are_read_in_the_jobs_timezone():
    rule = (calendars.Rule("xmas", "date", start=dt.date(2026, 12, 25)),)
    hourly = schedules.CronTrigger("0 0 * * * *", "America/New_York")
    trigger = calendars.Excluding(hourly, rule, "America/New_York")
    ny = schedules.get_timezone("America/New_York")
    # Christmas in New York is excluded from its midnight to its midnight.
    assert trigger.next_after(local(2026, 12, 24, 23, 30, tz=ny)) == local(2026, 12, 26, tz=ny)
    assert trigger.next_after(local(2026, 12, 24, 22, 30, tz=ny)) == local(2026, 12, 24, 23, tz=ny)


def test_a_window_follows_the_wall_clock_across_dst_changes():
    """Sunday 00:00-06:00 in New York on the days the clocks change: the window is six
    wall-clock hours, so five hours of elapsed time in spring and seven in autumn."""
    ny = schedules.get_timezone("America/New_York")
    night = (
        calendars.Rule(
            "night", "weekly", weekdays=(6,), start_time=dt.time(0), end_time=dt.time(6)
        ),
    )
    every_minute = schedules.CronTrigger("0 * * * * *", "America/New_York")
    trigger = calendars.Excluding(every_minute, night, "America/New_York")
    for day in (dt.date(2026, 3, 8), dt.date(2026, 11, 1)):  # spring forward, fall back
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=ny)
        fire = trigger.next_after(midnight - dt.timedelta(seconds=30))
        assert fire.astimezone(ny).replace(tzinfo=None) == dt.datetime.combine(day, dt.time(6))
        count = trigger.excluded_spans(midnight, fire)[0][3]
        hours = (fire - midnight).total_seconds() / 3600
        assert (hours, count) == ((5.0, 300) if day.month == 3 else (7.0, 420))


def test_weekly_window_excludes_only_its_hours():
    window = (
        calendars.Rule(
            "night", "weekly", weekdays=(0,), start_time=dt.time(0), end_time=dt.time(6)
        ),
    )
    hourly = schedules.CronTrigger("0 0 * * * *", "Asia/Shanghai")
    trigger = calendars.Excluding(hourly, window, "Asia/Shanghai")
    # 2026-12-07 is a Monday: 00:00 … 05:00 are excluded, 06:00 runs; Tuesday is untouched.
    assert trigger.next_after(local(2026, 12, 6, 23, 30)) == local(2026, 12, 7, 6)
    assert trigger.next_after(local(2026, 12, 7, 23, 30)) == local(2026, 12, 8, 0)


def test_yearly_and_range_rules():
    rules = (
        calendars.Rule("h", "yearly", month=1, day=1, label="New Year"),
        calendars.Rule("h", "range", start=dt.date(2027, 2, 1), end=dt.date(2027, 2, 3)),
    )
    daily = schedules.CronTrigger("0 0 9 * * *", "Asia/Shanghai")
    trigger = calendars.Excluding(daily, rules, "Asia/Shanghai")
    assert trigger.next_after(local(2027, 12, 31, 10)) == local(2028, 1, 2, 9)
    assert trigger.next_after(local(2027, 1, 31, 10)) == local(2027, 2, 4, 9)
    assert trigger.exclusion(local(2027, 1, 1, 9)).words() == "Excluded by calendar 'h' (New Year)."


def test_a_calendar_excluding_every_day_leaves_no_fire_time():
    always = (calendars.Rule("all", "weekly", weekdays=tuple(range(7))),)
    trigger = calendars.Excluding(every_second(), always, "Asia/Shanghai")
    assert trigger.next_after(local(2026, 12, 1)) is None


def test_bad_weekdays_are_refused_with_the_item_named():
    with pytest.raises(ValueError, match="'FUNDAY' is not a weekday"):
        calendars.parse_weekdays("MON,FUNDAY")
    assert calendars.parse_weekdays("mon-wed,sun") == (0, 1, 2, 6)


ICS = b"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//holidays//EN
BEGIN:VEVENT
UID:1
DTSTART;VALUE=DATE:20270101
DTEND;VALUE=DATE:20270102
SUMMARY:New Year's Day
END:VEVENT
BEGIN:VEVENT
UID:2
DTSTART;VALUE=DATE:20270211
DTEND;VALUE=DATE:20270218
SUMMARY:Spring Festival
END:VEVENT
BEGIN:VEVENT
UID:3
DTSTART;VALUE=DATE:20200501
RRULE:FREQ=YEARLY
SUMMARY:Labour Day
END:VEVENT
END:VCALENDAR
"""


def test_ics_holidays_become_dates_ranges_and_yearly_dates():
    rules = calendars.rules_from_ics(ICS, calendar="cn")
    assert [(r.kind, r.start, r.end, r.month, r.day, r.label) for r in rules] == [
        ("date", dt.date(2027, 1, 1), None, None, None, "New Year's Day"),
        ("range", dt.date(2027, 2, 11), dt.date(2027, 2, 17), None, None, "Spring Festival"),
        ("yearly", None, None, 5, 1, "Labour Day"),
    ]
    with pytest.raises(ValueError, match="Not an iCalendar file"):
        calendars.rules_from_ics(b"hello", calendar="cn")


# -- database -------------------------------------------------------------------------

pytestmark_db = pytest.mark.django_db


@pytestmark_db
def test_job_preview_leaves_excluded_times_out_and_names_the_calendar():
    calendar_services.calendar_add(
        name="weekend", rules=calendar_services.rules_parse(weekly=["SAT,SUN"])
    )
    job = make_job(cron_expression="0 0 9 * * *", timezone="Asia/Shanghai")
    calendar_services.job_set_calendars(job=job, names=["weekend"])
    job = Job.objects.get(pk=job.pk)
    upcoming = selectors.job_upcoming_runs(job=job, count=10)
    assert upcoming and all(t.astimezone(SH).weekday() < 5 for t in upcoming)
    excluded = calendar_services.job_excluded_upcoming(job=job, count=10)
    assert excluded and {entry["calendar"] for entry in excluded} == {"weekend"}
    out = io.StringIO()
    call_command("jobs", "show", job.name, "--json", stdout=out)
    shown = json.loads(out.getvalue())
    assert shown["calendars"] == ["weekend"]
    assert shown["excluded"][0]["calendar"] == "weekend"


@pytestmark_db
def test_unknown_calendar_is_refused_and_nothing_changes():
    job = make_job()
    with pytest.raises(ValidationError, match="No calendar named nope"):
        calendar_services.job_set_calendars(job=job, names=["nope"])
    assert not job.calendars.exists()


@pytestmark_db
def test_bad_rule_is_refused_and_nothing_is_saved():
    with pytest.raises(ValidationError, match="not a date"):
        calendar_services.calendar_add(
            name="h", rules=calendar_services.rules_parse(dates=["2026-12-25", "25/12/2026"])
        )
    assert not Calendar.objects.exists()
    with pytest.raises(ValidationError):
        calendar_services.rules_parse(ranges=["2026-12-31..2026-12-01"])


@pytestmark_db
def test_beat_records_excluded_days_as_one_skipped_row_per_day(sent):  # noqa: F811
    """A job firing every second, excluded two whole days: beat sends the last second
    before them, then the first after, and records the two days as two skipped rows (one
    per excluded window), 172,800 fire times, each naming the calendar; nothing walks
    them (the pass takes well under a second)."""
    tz = schedules.get_timezone("Asia/Shanghai")
    today = timezone.now().astimezone(tz).date()
    first_day, last_day = today - dt.timedelta(days=2), today - dt.timedelta(days=1)
    calendar_services.calendar_add(
        name="days-off",
        rules=calendar_services.rules_parse(ranges=[f"{first_day}..{last_day}"]),
    )
    job = make_job(
        trigger_type="interval",
        interval_every=1,
        interval_period="seconds",
        misfire_grace_time=4 * 86400,
    )
    calendar_services.job_set_calendars(job=job, names=["days-off"])
    before = local(first_day.year, first_day.month, first_day.day) - dt.timedelta(seconds=1)
    after = local(today.year, today.month, today.day)
    Job.objects.filter(pk=job.pk).update(
        next_run_at=before, dispatch_at=before, schedule_anchor=local(2026, 1, 1)
    )
    scheduler = leader()
    started = time.perf_counter()
    scheduler.dispatch_due(timezone.now())
    job.refresh_from_db()
    assert job.next_run_at == after
    assert job.excluded_from == before + dt.timedelta(seconds=1)
    scheduler.dispatch_due(timezone.now())
    assert time.perf_counter() - started < 1.0
    rows = JobExecution.objects.filter(job=job, status="skipped").order_by("scheduled_at")
    assert [(r.scheduled_at, r.missed_count, r.excluded_by) for r in rows] == [
        (before + dt.timedelta(seconds=1), 2 * 86_400, "days-off"),
    ]
    assert [fire for name, fire, _ in sent if name == job.name][:2] == [before, after]
    report = explain.job_explain(job=job, since=before, now=after)
    fates = {fate["scheduled_at"]: fate for fate in report["recent"]}
    excluded = fates[(before + dt.timedelta(seconds=1)).isoformat()]
    assert excluded["fate"] == "excluded" and "days-off" in excluded["detail"]


@pytestmark_db
def test_skip_next_excludes_one_run_and_removes_itself(sent):  # noqa: F811
    job = make_job(cron_expression="0 0 * * * *", misfire_grace_time=7200)
    first = job.next_run_at
    out = io.StringIO()
    call_command("jobs", "skip-next", job.name, stdout=out)
    assert "Skipping the run" in out.getvalue()
    job.refresh_from_db()
    assert job.skip_at == first and job.next_run_at == first + dt.timedelta(hours=1)
    with pytest.raises(CommandError, match="already skips its run at"):
        call_command("jobs", "skip-next", job.name)
    # The same state an hour earlier, so that beat has passed it now.
    skipped = first - dt.timedelta(hours=2)
    Job.objects.filter(pk=job.pk).update(
        skip_at=skipped,
        excluded_from=skipped,
        next_run_at=skipped + dt.timedelta(hours=1),
        dispatch_at=skipped + dt.timedelta(hours=1),
    )
    scheduler = leader()
    scheduler.dispatch_due(timezone.now())
    job.refresh_from_db()
    assert job.skip_at is None  # passed: removed
    row = JobExecution.objects.get(job=job, status="skipped")
    assert (row.scheduled_at, row.excluded_by) == (skipped, calendars.SKIP_NEXT)
    assert [fire for name, fire, _ in sent if name == job.name] == [skipped + dt.timedelta(hours=1)]


@pytestmark_db
def test_calendar_commands_add_list_show_remove(tmp_path):
    ics = tmp_path / "cn.ics"
    ics.write_bytes(ICS)
    out = io.StringIO()
    call_command(
        "jobs",
        "calendar",
        "add",
        "holidays",
        "--date",
        "2026-12-25",
        "--date",
        "2026-12-26",
        "--range",
        "2027-01-01..2027-01-03",
        "--weekly",
        "MON 00:00-06:00",
        "--yearly",
        "10-01",
        "--ics",
        str(ics),
        stdout=out,
    )
    calendar = Calendar.objects.get(name="holidays")
    assert calendar.rules.count() == 8
    out = io.StringIO()
    call_command("jobs", "calendar", "show", "holidays", "--json", stdout=out)
    shown = json.loads(out.getvalue())
    assert "weekly MON 00:00-06:00" in shown["rules"]
    job = make_job()
    call_command("jobs", "modify", job.name, "--calendar", "holidays", stdout=io.StringIO())
    assert list(job.calendars.values_list("name", flat=True)) == ["holidays"]
    out = io.StringIO()
    call_command("jobs", "calendar", "list", "--json", stdout=out)
    assert json.loads(out.getvalue())[0]["jobs"] == [job.name]
    with pytest.raises(CommandError, match="not a date"):
        call_command("jobs", "calendar", "add", "x", "--date", "tomorrow")
    with pytest.raises(CommandError, match="No calendar named"):
        call_command("jobs", "calendar", "show", "nope")
    call_command("jobs", "calendar", "remove", "holidays", stdout=io.StringIO())
    assert not CalendarRule.objects.exists() and not job.calendars.exists()


@pytestmark_db
def test_calendars_round_trip_through_export_and_import(tmp_path):
    calendar_services.calendar_add(
        name="weekend",
        description="Sat and Sun",
        rules=calendar_services.rules_parse(
            weekly=["SAT,SUN", "MON 00:00-06:00"], dates=["2026-12-25"], yearly=["10-01"]
        ),
    )
    job = make_job()
    calendar_services.job_set_calendars(job=job, names=["weekend"])
    first = io.StringIO()
    call_command("jobs", "export", stdout=first)
    data = json.loads(first.getvalue())
    assert data["calendars"][0]["name"] == "weekend"
    assert data["jobs"][0]["options"]["calendars"] == ["weekend"]
    path = tmp_path / "jobs.json"
    path.write_text(first.getvalue())
    out = io.StringIO()
    call_command("jobs", "import", str(path), "--json", stdout=out)
    assert json.loads(out.getvalue())["unchanged"] == [job.name]  # twice: no change
    Job.objects.all().delete()
    Calendar.objects.all().delete()
    call_command("jobs", "import", str(path), stdout=io.StringIO())
    assert Job.objects.get(name=job.name).has_calendars
    again = io.StringIO()
    call_command("jobs", "export", stdout=again)
    assert json.loads(again.getvalue()) == data


@pytestmark_db
def test_import_naming_an_unknown_calendar_is_refused_and_writes_nothing(tmp_path):
    job = make_job()
    out = io.StringIO()
    call_command("jobs", "export", stdout=out)
    data = json.loads(out.getvalue())
    data["jobs"][0]["options"]["calendars"] = ["nope"]
    data["calendars"] = [{"name": "other", "rules": [{"kind": "date", "start_date": "x"}]}]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CommandError, match="rules\\[0\\]: start_date"):
        call_command("jobs", "import", str(path))
    data["calendars"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(CommandError, match="no calendar named 'nope'"):
        call_command("jobs", "import", str(path))
    assert not Calendar.objects.exists() and not job.calendars.exists()


@pytestmark_db
def test_the_dead_mans_switch_does_not_count_excluded_fire_times_as_silence():
    from scheduling import alerts

    job = make_job(cron_expression="0 */1 * * * *", alert_emails="ops@example.com", alert_grace=30)
    ten_minutes_ago = timezone.now() - dt.timedelta(minutes=10)
    Job.objects.filter(pk=job.pk).update(created_at=ten_minutes_ago)
    assert alerts.deadman_check() == [job.name]  # silent for 10 minutes: overdue
    # Inside an excluded window (beat noted where it began): nothing is due.
    Job.objects.filter(pk=job.pk).update(excluded_from=ten_minutes_ago)
    assert alerts.deadman_check() == []
    # The window recorded, ending a minute ago: silence counts from its end.
    Job.objects.filter(pk=job.pk).update(excluded_from=None)
    JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="schedule",
        status="skipped",
        scheduled_at=ten_minutes_ago,
        missed_until=timezone.now() - dt.timedelta(minutes=1),
        missed_count=9,
        excluded_by="maintenance",
        started_at=timezone.now(),
    )
    assert alerts.deadman_check() == []


@pytestmark_db
def test_admin_calendar_page_saves_exclusions_and_reschedules_its_jobs(admin_client):
    from django.urls import reverse

    calendar = calendar_services.calendar_add(name="office", rules=[])
    job = make_job(cron_expression="0 0 9 * * *", timezone="Asia/Shanghai")
    calendar_services.job_set_calendars(job=job, names=["office"])
    before = Job.objects.get(pk=job.pk).next_run_at
    url = reverse("admin:scheduling_calendar_change", args=[calendar.pk])
    assert admin_client.get(url).status_code == 200
    day = before.astimezone(SH).date()
    response = admin_client.post(
        url,
        {
            "name": "office",
            "description": "",
            "rules-TOTAL_FORMS": "1",
            "rules-INITIAL_FORMS": "0",
            "rules-0-kind": "date",
            "rules-0-start_date": day.isoformat(),
            "rules-0-label": "closed",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    after = Job.objects.get(pk=job.pk).next_run_at
    assert after == before + dt.timedelta(days=1)  # that day's run is excluded now
    # A bad exclusion is refused on the form, naming the field; nothing is saved.
    response = admin_client.post(
        url,
        {
            "name": "office",
            "description": "",
            "rules-TOTAL_FORMS": "2",
            "rules-INITIAL_FORMS": "1",
            "rules-0-id": str(CalendarRule.objects.get().pk),
            "rules-0-calendar": str(calendar.pk),
            "rules-0-kind": "date",
            "rules-0-start_date": day.isoformat(),
            "rules-1-kind": "range",
            "rules-1-start_date": "2027-01-05",
            "rules-1-end_date": "2027-01-01",
        },
    )
    assert response.status_code == 200
    assert "The last date is before the first." in response.content.decode()
    assert CalendarRule.objects.count() == 1
    job_page = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk]))
    assert "excluded by office (closed)" in job_page.content.decode()
