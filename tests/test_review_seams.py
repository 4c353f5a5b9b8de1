"""Where the run control, calendars, groups, API and import/export meet: each test
reproduces a problem found in the review of their merge (failing before its fix)."""

import datetime as dt
from unittest import mock

import pytest
from django.db import transaction

from scheduling import calendar_services, services
from scheduling.models import ExecutionStatus, JobExecution
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
