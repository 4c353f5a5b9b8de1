"""Validity windows and run limits: a job's start time, end time and max runs, in the
trigger rules, the services, beat's passes, the preview, the commands and config files.

Beat's passes run in this process; sending is observed at its boundary,
``services.job_dispatch`` (the e2e tests run real beats and workers).
"""

import datetime as dt
import io
import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from project.celery import app
from scheduling import alerts, publish, schedules, selectors, services
from scheduling.config import ConfigError
from scheduling.models import Job, JobChange
from scheduling.scheduler import JobScheduler
from tests.factories import make_job
from tests.test_scheduler import sent_runs

pytestmark = pytest.mark.django_db

NEW_YORK = "America/New_York"
UTC = dt.UTC


def local(moment: dt.datetime, tz: str = NEW_YORK) -> str:
    return moment.astimezone(schedules.get_timezone(tz)).isoformat()


def wall(text: str, tz: str = NEW_YORK) -> dt.datetime:
    return schedules.parse_moment(text, tz)


def now_s() -> dt.datetime:
    return timezone.now().replace(microsecond=0)


# --- reading a wall-clock time: the cron rules' daylight-saving policy ---------------------


def test_a_wall_clock_time_in_a_spring_forward_gap_is_the_end_of_the_gap():
    # New York jumps from 02:00 to 03:00 on 2027-03-14: 02:30 never shows on the clock.
    assert local(wall("2027-03-14 02:30:00")) == "2027-03-14T03:00:00-04:00"
    # Lord Howe Island jumps by half an hour, 02:00 to 02:30.
    moment = wall("2027-10-03 02:15:00", "Australia/Lord_Howe")
    assert local(moment, "Australia/Lord_Howe") == "2027-10-03T02:30:00+11:00"


def test_a_wall_clock_time_that_occurs_twice_is_its_first_occurrence():
    # New York's clock shows 01:00-01:59 twice on 2027-11-07 (EDT, then EST).
    assert local(wall("2027-11-07 01:30:00")) == "2027-11-07T01:30:00-04:00"


def test_a_date_time_with_an_offset_is_taken_as_it_is():
    assert wall("2027-03-14T02:30:00+00:00") == dt.datetime(2027, 3, 14, 2, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [("soon", "'soon' is not a date-time"), ("9999-12-31 23:00:00", "outside the calendar")],
)
def test_a_bad_date_time_is_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        wall(text)


# --- the window bounds any trigger --------------------------------------------------------


def test_the_first_fire_time_is_the_first_at_or_after_the_start():
    every_minute = schedules.CronTrigger("0 * * * * *", "UTC")
    start = dt.datetime(2027, 1, 1, 10, 0, tzinfo=UTC)
    window = schedules.Window(every_minute, start=start)
    assert window.next_after(start - dt.timedelta(days=3)) == start
    later = schedules.Window(every_minute, start=start + dt.timedelta(seconds=30))
    assert later.next_after(start - dt.timedelta(days=3)) == start + dt.timedelta(minutes=1)


def test_no_fire_time_is_after_the_end_and_the_end_itself_may_fire():
    every_minute = schedules.CronTrigger("0 * * * * *", "UTC")
    end = dt.datetime(2027, 1, 1, 10, 2, tzinfo=UTC)
    window = schedules.Window(every_minute, end=end)
    times = schedules.upcoming(
        window, after=dt.datetime(2027, 1, 1, 9, 59, 30, tzinfo=UTC), count=9
    )
    assert [t.minute for t in times] == [0, 1, 2]


def test_a_window_across_the_fall_back_hour_keeps_both_real_hours_and_stops_at_its_end():
    # Hourly in New York from 00:30 to 03:00 on the fall-back day: 01:00 happens twice
    # (both real hours, as the cron policy says), and 03:00 is the last.
    window = schedules.Window(
        schedules.CronTrigger("0 0 * * * *", NEW_YORK),
        start=wall("2027-11-07 00:30:00"),
        end=wall("2027-11-07 03:00:00"),
    )
    times = schedules.upcoming(window, after=dt.datetime(2027, 1, 1, tzinfo=UTC), count=10)
    assert [local(t) for t in times] == [
        "2027-11-07T01:00:00-04:00",
        "2027-11-07T01:00:00-05:00",
        "2027-11-07T02:00:00-05:00",
        "2027-11-07T03:00:00-05:00",
    ]


# --- the job: its fields, validation and preview -------------------------------------------


def test_the_preview_of_a_daily_job_stops_at_an_end_time_that_occurs_twice():
    # 01:30 on the fall-back day is read as its first occurrence (EDT): the daily run at
    # 01:30 that day is the last one, and runs once.
    job = make_job(
        cron_expression="0 30 1 * * *",
        timezone=NEW_YORK,
        start_at=wall("2027-11-04 00:00:00"),
        end_at=wall("2027-11-07 01:30:00"),
    )
    runs = selectors.job_upcoming_runs(job=job, count=10)
    assert [local(r) for r in runs] == [
        "2027-11-04T01:30:00-04:00",
        "2027-11-05T01:30:00-04:00",
        "2027-11-06T01:30:00-04:00",
        "2027-11-07T01:30:00-04:00",
    ]


def test_a_start_in_the_spring_forward_gap_starts_when_the_clock_passes_it():
    job = make_job(
        cron_expression="0 0 * * * *", timezone=NEW_YORK, start_at=wall("2027-03-14 02:30:00")
    )
    assert local(job.next_run_at) == "2027-03-14T03:00:00-04:00"


def test_an_interval_with_a_start_time_fires_at_the_start_and_every_period_after():
    start = now_s() + dt.timedelta(hours=1)
    job = make_job(
        trigger_type="interval", interval_every=10, interval_period="minutes", start_at=start
    )
    runs = selectors.job_upcoming_runs(job=job, count=3)
    assert runs == [start, start + dt.timedelta(minutes=10), start + dt.timedelta(minutes=20)]


def test_the_preview_shows_no_more_runs_than_are_left():
    job = make_job(cron_expression="*/1 * * * * *", max_runs=3)
    assert len(selectors.job_upcoming_runs(job=job, count=5)) == 3
    Job.objects.filter(pk=job.pk).update(scheduled_run_count=2)
    job.refresh_from_db()
    assert len(selectors.job_upcoming_runs(job=job, count=5)) == 1
    assert job.runs_remaining == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"start_at": dt.datetime(2099, 1, 2), "end_at": None},
            "start_at",
            "with its timezone",
        ),
        (
            {
                "start_at": dt.datetime(2099, 1, 2, tzinfo=UTC),
                "end_at": dt.datetime(2099, 1, 1, tzinfo=UTC),
            },
            "end_at",
            "after the start time",
        ),
        ({"max_runs": 0}, "max_runs", "at least 1"),
        ({"end_at": dt.datetime(2020, 1, 1, tzinfo=UTC)}, "end_at", "No fire time is left"),
        (
            {
                "trigger_type": "date",
                "run_at": dt.datetime(2099, 1, 1, tzinfo=UTC),
                "start_at": dt.datetime(2099, 6, 1, tzinfo=UTC),
            },
            "start_at",
            "no fire time at or after the start time",
        ),
    ],
)
def test_a_bad_window_is_refused_naming_the_field_and_nothing_is_saved(fields, field, message):
    with pytest.raises(ValidationError) as caught:
        make_job(name="bad", **fields)
    assert field in caught.value.message_dict, caught.value.message_dict
    assert message in " ".join(caught.value.message_dict[field])
    assert not Job.objects.filter(name="bad").exists()


def test_a_paused_job_may_keep_an_end_time_that_has_passed():
    job = make_job(enabled=False, end_at=dt.datetime(2020, 1, 1, tzinfo=UTC))
    assert job.next_run_at is None
    with pytest.raises(ValidationError) as caught:
        services.job_resume(job=job)
    assert "end_at" in caught.value.message_dict


def test_a_finished_job_resumes_only_with_more_runs():
    job = make_job(cron_expression="*/1 * * * * *", max_runs=2)
    Job.objects.filter(pk=job.pk).update(scheduled_run_count=2, enabled=False)
    job.refresh_from_db()
    with pytest.raises(ValidationError) as caught:
        services.job_resume(job=job)
    assert "already sent 2 scheduled runs" in caught.value.message_dict["max_runs"][0]
    services.job_update(job=job, enabled=True, max_runs=4)
    job.refresh_from_db()
    assert job.enabled and job.runs_remaining == 2 and job.next_run_at is not None


def test_an_edit_validates_against_the_runs_beat_counted_meanwhile():
    job = make_job(cron_expression="*/1 * * * * *", max_runs=5)
    stale = Job.objects.get(pk=job.pk)
    Job.objects.filter(pk=job.pk).update(scheduled_run_count=3)  # beat sent 3 since
    with pytest.raises(ValidationError) as caught:
        services.job_update(job=stale, max_runs=3)
    assert "max_runs" in caught.value.message_dict
    services.job_update(job=Job.objects.get(pk=job.pk), description="still counted")
    assert Job.objects.get(pk=job.pk).scheduled_run_count == 3  # an edit never resets it


def test_status_carries_the_window_and_the_runs_left():
    start = dt.datetime(2099, 1, 1, tzinfo=UTC)
    status = selectors.job_status(job=make_job(start_at=start, max_runs=3))
    assert status["start_at"] == start.isoformat()
    assert status["end_at"] is None
    assert (status["max_runs"], status["runs_remaining"], status["scheduled_run_count"]) == (
        3,
        3,
        0,
    )


def test_a_job_whose_window_has_not_started_is_not_overdue():
    job = make_job(
        cron_expression="*/1 * * * * *",
        alert_emails="ops@example.com",
        alert_grace=1,
        start_at=timezone.now() + dt.timedelta(hours=1),
    )
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - dt.timedelta(days=1))
    assert alerts.deadman_check() == []


# --- beat: counts what it sends, finishes the job ------------------------------------------


def test_an_edit_of_a_job_beat_finished_meanwhile_keeps_it_finished():
    job = make_job(cron_expression="*/1 * * * * *", max_runs=1)
    stale = Job.objects.get(pk=job.pk)
    services.job_finish(job=Job.objects.get(pk=job.pk), reason="Finished: test.")
    services.job_update(job=stale, cron_expression="*/2 * * * * *")
    job.refresh_from_db()
    assert (job.enabled, job.next_run_at, job.cron_expression) == (False, None, "*/2 * * * * *")


@pytest.fixture
def sent(monkeypatch):
    """Runs the scheduler sends, as (job name, fire time)."""
    runs: list[tuple[str, dt.datetime]] = []

    def dispatch(*, job, scheduled_at, **kwargs):
        runs.append((job.name, scheduled_at))
        return "task-id"

    monkeypatch.setattr(services, "job_dispatch", dispatch)
    monkeypatch.setattr(
        publish,
        "messages_publish",
        lambda producer, messages, **_: runs.extend(
            (name, fire) for name, fire, _jitter in sent_runs(messages)
        ),
    )
    return runs


@pytest.fixture
def scheduler():
    scheduler = JobScheduler(app=app, lazy=True)
    assert scheduler.lease.acquire()
    return scheduler


def make_due(job: Job, fire: dt.datetime) -> None:
    Job.objects.filter(pk=job.pk).update(next_run_at=fire, dispatch_at=fire)


def finished_entries(job: Job) -> list[JobChange]:
    return list(JobChange.objects.filter(job=job, action="finished"))


def test_beat_sends_max_runs_fire_times_then_finishes_the_job_with_its_reason(scheduler, sent):
    job = make_job(name="three", cron_expression="*/1 * * * * *", max_runs=2)
    first = now_s()
    make_due(job, first)
    assert scheduler.dispatch_due(timezone.now()) == 1
    job.refresh_from_db()
    assert (job.scheduled_run_count, job.runs_remaining, job.enabled) == (1, 1, True)
    assert finished_entries(job) == []

    make_due(job, first + dt.timedelta(seconds=1))
    assert scheduler.dispatch_due(timezone.now() + dt.timedelta(seconds=1)) == 1
    job.refresh_from_db()
    assert (job.scheduled_run_count, job.enabled, job.next_run_at, job.dispatch_at) == (
        2,
        False,
        None,
        None,
    )
    (entry,) = finished_entries(job)
    assert entry.source == "system" and entry.actor == scheduler.beat_name
    assert entry.changes["enabled"] == [True, False]
    assert entry.changes["reason"] == "Finished: it has sent its 2 runs (max runs)."
    assert [name for name, _ in sent] == ["three", "three"]


def test_beat_sends_the_last_fire_time_before_the_end_and_then_finishes(scheduler, sent):
    end = now_s() + dt.timedelta(seconds=1)
    job = make_job(cron_expression="*/1 * * * * *", end_at=end)
    make_due(job, end)
    assert scheduler.dispatch_due(end) == 1
    assert sent == [(job.name, end)]
    job.refresh_from_db()
    assert not job.enabled and job.next_run_at is None
    (entry,) = finished_entries(job)
    assert entry.changes["reason"].startswith("Finished: no fire time is left before its end time")
    assert scheduler.dispatch_due(end + dt.timedelta(seconds=5)) == 0


def test_fire_times_beat_never_sent_do_not_use_up_runs(scheduler, sent):
    job = make_job(cron_expression="*/1 * * * * *", max_runs=2, misfire_grace_time=5)
    now = now_s()
    make_due(job, now - dt.timedelta(seconds=30))  # beat was down: 24 of them are missed
    scheduler.dispatch_due(now)
    job.refresh_from_db()
    assert job.scheduled_run_count == 1 and job.enabled
    scheduler._record_pending_missed(timezone.now(), None)  # the outage's summary
    (summary,) = job.executions.filter(status="missed")
    assert summary.missed_count >= 20


def test_a_pass_rolled_back_counts_nothing_and_the_next_leader_counts_the_fire_time_once(
    scheduler, sent
):
    # A beat that dies between sending and committing leaves its pass rolled back; the
    # next leader sends the same fire time again (the worker drops the duplicate message).
    job = make_job(cron_expression="*/1 * * * * *", max_runs=1)
    fire = now_s()
    make_due(job, fire)
    with transaction.atomic():
        scheduler.dispatch_due(timezone.now())
        transaction.set_rollback(True)
    job.refresh_from_db()
    assert (job.scheduled_run_count, job.enabled, job.next_run_at) == (0, True, fire)
    scheduler.dispatch_due(timezone.now())
    job.refresh_from_db()
    assert (job.scheduled_run_count, job.enabled) == (1, False)
    assert sent == [(job.name, fire), (job.name, fire)]
    assert len(finished_entries(job)) == 1


def test_manual_runs_are_not_counted(django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(services, "job_dispatch", lambda **kwargs: "task-id")
    job = make_job(max_runs=1)
    with django_capture_on_commit_callbacks(execute=True):
        services.job_run_now(job=job)
    job.refresh_from_db()
    assert job.scheduled_run_count == 0 and job.runs_remaining == 1


# --- commands ------------------------------------------------------------------------------


def jobs(*args) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_add_and_modify_set_and_clear_the_window_from_the_command_line():
    jobs(
        "add", "w", "--task", "demo.echo", "--cron", "0 0 * * * *", "--timezone", NEW_YORK,
        "--start-at", "2099-03-01 09:00:00", "--end-at", "2099-03-31T18:00:00+00:00",
        "--max-runs", "10",
    )  # fmt: skip
    shown = json.loads(jobs("show", "w", "--json"))
    assert shown["start_at"] == "2099-03-01T14:00:00+00:00"  # 09:00 in New York (EST)
    assert shown["end_at"] == "2099-03-31T18:00:00+00:00"
    assert (shown["max_runs"], shown["runs_remaining"]) == (10, 10)
    assert shown["upcoming"][0] == "2099-03-01T14:00:00+00:00"

    jobs("modify", "w", "--start-at", "", "--end-at", "", "--max-runs", "")
    job = Job.objects.get(name="w")
    assert (job.start_at, job.end_at, job.max_runs) == (None, None, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-runs", "many"], "--max-runs 'many' is not a whole number"),
        (["--max-runs", "0"], "max_runs: Max runs is at least 1"),
        (["--start-at", "next week"], "--start-at 'next week' is not a date-time"),
        (
            ["--start-at", "2099-01-02 00:00:00", "--end-at", "2099-01-01 00:00:00"],
            "end_at: The end time must be after the start time.",
        ),
    ],
)
def test_a_bad_window_on_the_command_line_is_a_one_line_error(args, message):
    with pytest.raises(CommandError) as caught:
        jobs("add", "bad", "--task", "demo.echo", "--cron", "0 0 * * * *", *args)
    assert message in str(caught.value)
    assert not Job.objects.filter(name="bad").exists()


# --- config files ----------------------------------------------------------------------------

ENTRY = {
    "task_id": "windowed",
    "task_func": "demo.echo",
    "trigger_type": "cron",
    "trigger_args": {"expression": "0 0 * * * *"},
    "timezone": NEW_YORK,
}


def test_export_and_import_carry_the_window_and_give_the_same_file():
    entry = {
        **ENTRY,
        "options": {"start_at": "2099-03-08 02:30:00", "end_at": None, "max_runs": 5},
    }
    services.config_import(data=[entry])
    job = Job.objects.get(name="windowed")
    assert local(job.start_at) == "2099-03-08T03:00:00-04:00"  # in the gap: its end
    exported = selectors.config_export()
    options = exported["jobs"][0]["options"]
    assert (options["start_at"], options["end_at"], options["max_runs"]) == (
        "2099-03-08T03:00:00-04:00",
        None,
        5,
    )
    assert services.config_import(data=exported).unchanged == ["windowed"]
    Job.objects.all().delete()
    services.config_import(data=exported)
    assert selectors.config_export() == exported


def test_import_takes_apschedulers_start_date_and_end_date():
    trigger_args = {"hour": 9, "start_date": "2099-01-01 00:00:00", "end_date": "2099-02-01"}
    services.config_import(data=[{**ENTRY, "trigger_args": trigger_args}])
    job = Job.objects.get(name="windowed")
    assert local(job.start_at) == "2099-01-01T00:00:00-05:00"
    assert local(job.end_at) == "2099-02-01T00:00:00-05:00"
    assert job.cron_expression == "0 0 9 * * *"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({**ENTRY, "options": {"start_at": "soon"}}, "options: start_at 'soon' is not a date-time"),
        ({**ENTRY, "options": {"end_at": 20990101}}, "options: end_at must be an ISO date-time"),
        ({**ENTRY, "options": {"max_runs": "3"}}, "max_runs: must be a whole number"),
        ({**ENTRY, "options": {"max_runs": 0}}, "max_runs: Max runs is at least 1"),
        (
            {
                **ENTRY,
                "trigger_args": {"expression": "0 0 * * * *", "end_date": "2099-01-01"},
                "options": {"end_at": "2099-01-01"},
            },
            "give options.end_at or trigger_args.end_date, not both",
        ),
        (
            {**ENTRY, "options": {"start_at": "2099-01-02", "end_at": "2099-01-01"}},
            "end_at: The end time must be after the start time.",
        ),
    ],
)
def test_a_malformed_window_in_a_file_is_named_and_nothing_is_imported(entry, problem):
    with pytest.raises(ConfigError) as caught:
        services.config_import(data=[entry, {**ENTRY, "task_id": "fine"}])
    assert any(problem in p and "(windowed)" in p for p in caught.value.problems), (
        caught.value.problems
    )
    assert not Job.objects.exists()


# --- the admin -------------------------------------------------------------------------------


def test_the_admin_form_reads_the_window_in_the_jobs_timezone_and_shows_the_runs_left(
    admin_client,
):
    from tests.test_admin import form_data

    response = admin_client.post(
        reverse("admin:scheduling_job_add"),
        form_data(
            timezone=NEW_YORK,
            start_at_0="2099-01-01",
            start_at_1="09:00:00",
            end_at_0="",
            end_at_1="",
            max_runs="3",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get(name="from-admin")
    assert local(job.start_at) == "2099-01-01T09:00:00-05:00"
    page = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk])).content.decode()
    assert "3 of 3 (0 scheduled runs sent)." in page
    assert 'value="09:00:00"' in page  # shown back in the job's timezone


def test_the_live_preview_stops_at_the_end_time_and_after_the_runs_left(admin_client):
    url = reverse("admin:scheduling_job_preview")
    answer = admin_client.get(
        url,
        {
            "trigger_type": "cron",
            "cron_expression": "0 0 * * * *",
            "timezone": NEW_YORK,
            "start_at": "2099-01-01 00:30:00",
            "end_at": "2099-01-01 02:00:00",
        },
    ).json()
    assert answer["next_runs"] == ["2099-01-01 01:00:00 -05:00", "2099-01-01 02:00:00 -05:00"]
    assert "Until 2099-01-01 02:00:00 -05:00" in answer["window"]
    capped = admin_client.get(
        url, {"trigger_type": "cron", "cron_expression": "0 0 * * * *", "max_runs": "2"}
    ).json()
    assert len(capped["next_runs"]) == 2 and "2 of 2 runs left" in capped["window"]
    bad = admin_client.get(
        url,
        {
            "trigger_type": "cron",
            "cron_expression": "0 0 * * * *",
            "start_at": "2099-01-02 00:00:00",
            "end_at": "2099-01-01 00:00:00",
        },
    )
    assert bad.status_code == 400 and "after the start time" in bad.json()["error"]
