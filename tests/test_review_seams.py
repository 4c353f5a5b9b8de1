"""Where the run control, calendars, groups, API and import/export meet: each test
reproduces a problem found in the review of their merge (failing before its fix)."""

import datetime as dt
from unittest import mock

import pytest
from django.db import transaction

from scheduling import calendar_services, selectors, services
from scheduling.config import ConfigError
from scheduling.models import Calendar, ExecutionStatus, Job, JobExecution
from scheduling.tasks import run_job
from tests.factories import make_job

pytestmark = pytest.mark.django_db

UTC = dt.UTC


@pytest.fixture
def sent(monkeypatch):
    """The messages ``run_job.apply_async`` was asked to send (sent as the test commits)."""
    messages = []
    monkeypatch.setattr(
        run_job,
        "apply_async",
        lambda kwargs=None, task_id=None, **options: (
            messages.append((kwargs, task_id)) or mock.Mock(id=task_id)
        ),
    )
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    return messages


def test_a_retry_of_a_run_now_with_kwargs_runs_with_the_runs_own_kwargs(sent):
    job = make_job(task="demo.fail", max_retries=1, kwargs={"message": "the job's"})
    task_id = services.job_run_now(job=job, kwargs={"message": "the run's"})
    kwargs, _task_id = sent[0]
    # As a worker runs it: the failed attempt is retried (in this process), with the same
    # message (override=True) under the same task id.
    run_job.apply(kwargs=kwargs, task_id=task_id)
    attempts = JobExecution.objects.filter(job=job).order_by("attempt")
    assert [(a.attempt, a.status) for a in attempts] == [
        (0, ExecutionStatus.FAILURE),
        (1, ExecutionStatus.FAILURE),
    ]
    assert attempts[1].kwargs == {"message": "the run's"}


def test_a_backfill_plan_shows_the_calendar_excluded_fire_times_and_does_not_send_them():
    job = make_job(cron_expression="0 0 2 * * *", timezone="UTC")
    calendar_services.calendar_add(
        name="holidays", rules=calendar_services.rules_parse(dates=["2026-11-10"])
    )
    calendar_services.job_set_calendars(job=job, names=["holidays"])
    job.refresh_from_db()
    backfill = services.job_backfill(
        job=job,
        start=dt.datetime(2026, 11, 9, tzinfo=UTC),
        end=dt.datetime(2026, 11, 12, tzinfo=UTC),
        dry_run=True,
    )
    plan = [(item["scheduled_at"].day, item["send"]) for item in backfill.plan]
    assert plan == [(9, True), (10, False), (11, True)]
    assert "holidays" in backfill.plan[1]["reason"]


EVERY_OPTION = {
    "group": "reports",
    "coalesce": False,
    "max_instances": 2,
    "overlap": "buffer_all",
    "misfire_grace_time": 30,
    "jitter": 5,
    "soft_time_limit": 50,
    "time_limit": 60,
    "max_retries": 3,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": False,
    "retry_on": ["ValueError"],
    "slow_threshold": 40.0,
    "alert_emails": "ops@example.com",
    "alert_webhooks": "https://hooks.example.com/x",
    "alert_grace": 10,
    "pause_after_failures": 4,
    "queue": "reports",
    "priority": 7,
    "exchange": "reports",
    "routing_key": "reports.nightly",
}


def test_export_import_keeps_every_option_the_window_the_calendars_and_the_pause():
    calendar_services.calendar_add(
        name="holidays", rules=calendar_services.rules_parse(dates=["2027-12-25"])
    )
    job = make_job(
        cron_expression="0 0 2 * * *",
        timezone="Asia/Shanghai",
        start_at=dt.datetime(2027, 1, 1, tzinfo=UTC),
        end_at=dt.datetime(2028, 1, 1, tzinfo=UTC),
        max_runs=100,
        **EVERY_OPTION,
    )
    calendar_services.job_set_calendars(job=job, names=["holidays"])
    services.job_pause(
        job=job, reason="Waiting for the upstream fix", until=dt.datetime(2027, 2, 1, tzinfo=UTC)
    )
    fields = (*Job.EDITABLE_FIELDS, "pause_reason", "resume_at")
    before = {name: getattr(Job.objects.get(pk=job.pk), name) for name in fields}
    document = selectors.config_export()
    Job.objects.all().delete()
    Calendar.objects.all().delete()
    services.config_import(data=document)
    again = Job.objects.get(name=job.name)
    assert {name: getattr(again, name) for name in fields} == before
    assert list(again.calendars.values_list("name", flat=True)) == ["holidays"]
    assert services.config_import(data=document).unchanged == [job.name]  # twice: no change
    services.job_resume(job=again)
    report = services.config_import(data=document)
    assert report.updated == [job.name]
    again.refresh_from_db()
    assert (again.enabled, again.pause_reason) == (False, "Waiting for the upstream fix")


def test_an_import_refuses_a_pause_reason_for_a_job_that_is_not_paused():
    document = {
        "jobs": [
            {
                "task_id": "nightly",
                "task_func": "demo.echo",
                "trigger_type": "cron",
                "trigger_args": {"hour": 2},
                "options": {"pause_reason": "why"},
            }
        ]
    }
    with pytest.raises(ConfigError, match="pause_reason"):
        services.config_import(data=document)
    assert not Job.objects.exists()
