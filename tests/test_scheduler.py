"""The beat scheduler's bookkeeping, without a broker (the e2e tests cover the real loop)."""

import datetime as dt

import pytest
from django.utils import timezone

from project.celery import app
from scheduling import services
from scheduling.models import Job
from scheduling.scheduler import JobScheduler
from tests.factories import make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def scheduler():
    return JobScheduler(app=app, lazy=True)


def test_loads_enabled_jobs_only(scheduler):
    make_job(name="on")
    services.job_pause(job=make_job(name="off"))
    assert set(scheduler.all_as_schedule()) == {"on"}


def test_due_entry_reports_due_and_the_wait_to_the_following_fire(scheduler):
    job = make_job(cron_expression="*/1 * * * * *")
    Job.objects.filter(pk=job.pk).update(next_run_at=timezone.now().replace(microsecond=0))
    entry = scheduler.all_as_schedule()[job.name]
    is_due, wait = entry.is_due()
    assert is_due and 0 <= wait <= 1


def test_firing_stores_the_following_fire_time_at_once(scheduler):
    job = make_job(cron_expression="*/1 * * * * *")
    fire = timezone.now().replace(microsecond=0)
    Job.objects.filter(pk=job.pk).update(next_run_at=fire)
    scheduler._schedule = scheduler.all_as_schedule()
    entry = scheduler._schedule[job.name]
    new_entry = scheduler.reserve(entry)
    assert not entry.stale
    job.refresh_from_db()
    assert job.next_run_at == new_entry.next_run_at == fire + dt.timedelta(seconds=1)


def test_a_job_edited_after_beat_read_it_is_not_sent_nor_overwritten(scheduler):
    job = make_job(cron_expression="*/1 * * * * *")
    scheduler._schedule = scheduler.all_as_schedule()
    entry = scheduler._schedule[job.name]
    services.job_reschedule(job=job, cron_expression="0 0 0 1 1 *")
    edited = Job.objects.get(pk=job.pk).next_run_at
    scheduler.reserve(entry)
    assert entry.stale
    assert scheduler.apply_async(entry) is None
    assert Job.objects.get(pk=job.pk).next_run_at == edited


def test_fire_times_past_the_grace_are_not_sent_after_downtime(scheduler):
    job = make_job(cron_expression="*/1 * * * * *", misfire_grace_time=15)
    Job.objects.filter(pk=job.pk).update(next_run_at=timezone.now() - dt.timedelta(hours=1))
    entry = scheduler.all_as_schedule()[job.name]
    assert entry.next_run_at >= timezone.now() - dt.timedelta(seconds=16)


def test_a_finished_one_off_job_is_never_due_again(scheduler):
    job = services.job_register_date(
        name="once", task="demo.echo", run_at=timezone.now() + dt.timedelta(seconds=1)
    )
    scheduler._schedule = scheduler.all_as_schedule()
    assert scheduler._schedule["once"].next_run_at == job.run_at
    new_entry = scheduler.reserve(scheduler._schedule["once"])
    assert new_entry.next_run_at is None
    assert new_entry.is_due().is_due is False
    assert Job.objects.get(pk=job.pk).next_run_at is None
    # A restarted beat does not run it again.
    assert JobScheduler(app=app, lazy=True).all_as_schedule()["once"].next_run_at is None
