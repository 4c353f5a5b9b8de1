"""``jobs adopt-beat``: django-celery-beat's periodic tasks become jobs with the same fire
times; what cannot be adopted is listed with the reason."""

import datetime as dt
import io
import json
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
    SolarSchedule,
)

from scheduling import adoption, selectors, services
from scheduling.models import Job

pytestmark = pytest.mark.django_db

COUNT = 12


def adopt(*args) -> str:
    out = io.StringIO()
    call_command("jobs", "adopt-beat", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def crontab(tz="UTC", **fields) -> CrontabSchedule:
    return CrontabSchedule.objects.create(timezone=tz, **fields)


def periodic(name, *, task="demo.echo", **fields) -> PeriodicTask:
    return PeriodicTask.objects.create(name=name, task=task, **fields)


def original_fire_times(row: PeriodicTask, after: dt.datetime, count: int = COUNT):
    """The next fire times django-celery-beat's own schedule objects give ``row``."""
    row = PeriodicTask.objects.get(pk=row.pk)
    schedule = row.schedule
    times: list[dt.datetime] = []
    if row.crontab_id:
        last = after
        while len(times) < count:
            last_local, delta, _now = schedule.remaining_delta(last)
            last = last_local + delta
            times.append(last)
    elif row.interval_id:
        last = row.last_run_at or row.date_changed
        while len(times) < count:
            last = last + schedule.run_every
            if last > after:
                times.append(last)
    else:
        times.append(schedule.clocked_time)
    return [moment.astimezone(dt.UTC) for moment in times]


def adopted_fire_times(name: str, count: int = COUNT):
    job = Job.objects.get(name=name)
    return [
        moment.astimezone(dt.UTC) for moment in selectors.job_upcoming_runs(job=job, count=count)
    ]


def test_adopted_jobs_fire_when_the_originals_would():
    now = timezone.now()
    rows = [
        periodic(
            "office_hours",
            crontab=crontab("Europe/Berlin", minute="*/15", hour="9-17", day_of_week="mon-fri"),
        ),
        periodic(
            "twice_a_month",
            crontab=crontab("America/New_York", minute="30", hour="2", day_of_month="1,15"),
        ),
        periodic(
            "quarterly",
            crontab=crontab(
                "Asia/Shanghai", minute="5", hour="6", day_of_month="1", month_of_year="*/3"
            ),
        ),
        periodic(
            "sundays",
            crontab=crontab("Asia/Tokyo", minute="0", hour="*/6", day_of_week="sun,3"),
        ),
        periodic(
            "every_90s",
            interval=IntervalSchedule.objects.create(every=90, period="seconds"),
            last_run_at=now - dt.timedelta(seconds=30),
        ),
        periodic(
            "every_2h_never_ran",
            interval=IntervalSchedule.objects.create(every=2, period="hours"),
        ),
        periodic(
            "every_day_long_ago",
            interval=IntervalSchedule.objects.create(every=1, period="days"),
            last_run_at=now - dt.timedelta(days=3, hours=5),
        ),
        periodic(
            "once",
            clocked=ClockedSchedule.objects.create(clocked_time=now + dt.timedelta(hours=30)),
            one_off=True,
        ),
    ]
    report = adoption.beat_schedule_adopt()
    assert sorted(row["name"] for row in report.adopted) == sorted(row.name for row in rows)
    assert report.refused == []
    after = timezone.now()
    for row in rows:
        expected = original_fire_times(row, after)
        assert adopted_fire_times(row.name) == expected, row.name
    assert Job.objects.get(name="office_hours").timezone == "Europe/Berlin"
    assert Job.objects.get(name="office_hours").cron_expression == "0 0,15,30,45 9-17 * * 1-5"


def test_fields_are_carried_over():
    now = timezone.now()
    start = (now + dt.timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    expires = now + dt.timedelta(days=30)
    row = periodic(
        "report",
        crontab=crontab(minute="0", hour="*"),
        args='[1, "two"]',
        kwargs='{"days": 7}',
        enabled=False,
        one_off=True,
        start_time=start,
        expires=expires,
        queue="reports",
        priority=7,
        description="The hourly report",
    )
    periodic("graced", crontab=crontab(minute="0"), expire_seconds=120)
    adoption.beat_schedule_adopt()
    assert Job.objects.get(name="graced").misfire_grace_time == 120
    job = Job.objects.get(name="report")
    assert (job.task, job.args, job.kwargs) == ("demo.echo", [1, "two"], {"days": 7})
    assert not job.enabled
    assert (job.max_runs, job.start_at, job.end_at) == (1, start, expires)
    priority = adoption.job_priority(7, redis=services.broker_is_redis(settings.CELERY_BROKER_URL))
    assert (job.queue, job.priority, job.description) == ("reports", priority, row.description)
    job.enabled = True
    # Once enabled: the first hour at or after its start time, as the original.
    assert selectors.job_upcoming_runs(job=job, count=3) == [start]


def test_priority_sends_the_same_number_to_the_broker():
    assert adoption.job_priority(None, redis=False) == 0
    assert adoption.job_priority(7, redis=False) == 7
    assert adoption.job_priority(200, redis=False) == 9  # RabbitMQ takes 9 at most here
    assert adoption.job_priority(0, redis=True) == 9  # Redis: 0 is the most urgent
    assert adoption.job_priority(3, redis=True) == 6


def test_what_cannot_be_adopted_is_listed_with_the_reason():
    solar = SolarSchedule.objects.create(event="sunrise", latitude=31.2, longitude=121.5)
    periodic("at_sunrise", solar=solar)
    periodic("unknown", task="reports.missing", crontab=crontab(minute="0"))
    periodic("both_days", crontab=crontab(minute="0", day_of_month="1", day_of_week="mon"))
    periodic("bad_args", crontab=crontab(minute="0"), args="[1,")
    periodic("dict_args", crontab=crontab(minute="0"), args='{"a": 1}')
    periodic(
        "expired",
        crontab=crontab(minute="0"),
        expires=timezone.now() - dt.timedelta(days=1),
    )
    periodic(
        "past_clock",
        clocked=ClockedSchedule.objects.create(clocked_time=timezone.now() - dt.timedelta(hours=1)),
        one_off=True,
    )
    data = json.loads(adopt("--json"))
    reasons = {row["name"]: row["reason"] for row in data["refused"]}
    assert data["adopted"] == [] and not Job.objects.exists()
    assert "solar" in reasons["at_sunrise"]
    assert "'reports.missing' is not registered" in reasons["unknown"]
    assert '@job_task("reports.missing")' in reasons["unknown"]
    assert "both the day of month (1) and the day of week (mon)" in reasons["both_days"]
    assert "args are not valid JSON" in reasons["bad_args"]
    assert "args are not a JSON list" in reasons["dict_args"]
    assert "expired" in reasons["expired"]
    assert "has passed" in reasons["past_clock"]
    assert len(reasons) == 7


def test_a_celery_task_is_told_to_stack_job_task():
    from celery import current_app

    @current_app.task(name="legacy.cleanup")
    def cleanup():
        return None

    try:
        periodic("legacy", task="legacy.cleanup", crontab=crontab(minute="0"))
        text = adopt()
        assert "put @job_task() above its @shared_task" in text
        assert "not adopted 1" in text
    finally:
        current_app.tasks.pop("legacy.cleanup", None)


def test_dry_run_writes_nothing():
    periodic("hourly", crontab=crontab(minute="0"))
    changed = PeriodicTasks.last_change()
    text = adopt("--dry-run", "--disable-originals")
    assert "+ hourly: demo.echo" in text and "Would adopt 1" in text
    assert "Would disable the original hourly" in text
    assert not Job.objects.exists()
    assert PeriodicTask.objects.get(name="hourly").enabled
    assert PeriodicTasks.last_change() == changed


def test_adopting_twice_changes_nothing_the_second_time():
    periodic("hourly", crontab=crontab(minute="0"))
    periodic("ping", interval=IntervalSchedule.objects.create(every=30, period="seconds"))
    first = json.loads(adopt("--json"))
    assert len(first["adopted"]) == 2
    before = list(Job.objects.order_by("name").values())
    second = json.loads(adopt("--json"))
    assert second["adopted"] == [] and second["existing"] == ["hourly", "ping"]
    assert list(Job.objects.order_by("name").values()) == before


def test_disable_originals_disables_the_adopted_rows_only():
    periodic("hourly", crontab=crontab(minute="0"))
    periodic("unknown", task="reports.missing", crontab=crontab(minute="0"))
    changed = PeriodicTasks.last_change()
    data = json.loads(adopt("--disable-originals", "--json"))
    assert data["disabled_originals"] == ["hourly"]
    assert not PeriodicTask.objects.get(name="hourly").enabled
    assert PeriodicTask.objects.get(name="unknown").enabled
    assert PeriodicTasks.last_change() != changed  # django-celery-beat reloads
    assert Job.objects.get(name="hourly").enabled


def test_disable_originals_later_disables_the_rows_adopted_before():
    periodic("hourly", crontab=crontab(minute="0"))
    adopt()
    assert PeriodicTask.objects.get(name="hourly").enabled
    data = json.loads(adopt("--disable-originals", "--json"))
    assert data["existing"] == ["hourly"] and data["disabled_originals"] == ["hourly"]
    assert not PeriodicTask.objects.get(name="hourly").enabled


def test_disabling_in_the_same_transaction_as_the_jobs():
    periodic("hourly", crontab=crontab(minute="0"))
    with (
        mock.patch.object(PeriodicTasks, "update_changed", side_effect=RuntimeError("db gone")),
        pytest.raises(RuntimeError),
    ):
        adopt("--disable-originals")
    assert not Job.objects.exists()
    assert PeriodicTask.objects.get(name="hourly").enabled


def test_user_needs_add_and_change_periodic_task_permissions():
    periodic("hourly", crontab=crontab(minute="0"))
    user = User.objects.create_user("op")
    with pytest.raises(CommandError, match=r"scheduling\.add_job"):
        call_command("jobs", "--user", "op", "adopt-beat", stdout=io.StringIO())
    user.user_permissions.add(Permission.objects.get(codename="add_job"))
    with pytest.raises(CommandError, match="change_periodictask"):
        call_command(
            "jobs", "--user", "op", "adopt-beat", "--disable-originals", stdout=io.StringIO()
        )
    assert not Job.objects.exists()
    call_command("jobs", "--user", "op", "adopt-beat", stdout=io.StringIO())
    assert Job.objects.filter(name="hourly").exists()
