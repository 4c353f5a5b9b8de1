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


def test_a_broken_row_is_skipped_and_beat_goes_on(scheduler):
    make_job(name="good")
    bad = make_job(name="bad")
    Job.objects.filter(pk=bad.pk).update(
        timezone="Mars/Olympus", next_run_at=timezone.now() - dt.timedelta(hours=1)
    )
    assert set(scheduler.all_as_schedule()) == {"good"}


def test_a_stale_entry_is_not_sent(scheduler, monkeypatch):
    sent = []
    monkeypatch.setattr(services, "job_dispatch", lambda **kwargs: sent.append(kwargs))
    job = make_job(cron_expression="*/1 * * * * *")
    scheduler._schedule = scheduler.all_as_schedule()
    entry = scheduler._schedule[job.name]
    services.job_pause(job=job)
    scheduler.reserve(entry)
    scheduler.apply_async(entry)
    assert sent == []


def test_fire_times_missed_while_beat_was_down_are_recorded(scheduler):
    from scheduling.models import JobExecution

    job = make_job(cron_expression="*/1 * * * * *", misfire_grace_time=5)
    down_since = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=30)
    Job.objects.filter(pk=job.pk).update(next_run_at=down_since)
    entry = scheduler.all_as_schedule()[job.name]
    missed = JobExecution.objects.filter(job=job, status="missed").order_by("scheduled_at")
    assert missed.count() >= 24
    assert missed[0].scheduled_at == down_since
    assert missed[0].reason.startswith("Not sent: beat was down")
    # The first fire time still within the grace is the next one sent.
    assert entry.next_run_at == missed.last().scheduled_at + dt.timedelta(seconds=1)
    assert (timezone.now() - entry.next_run_at).total_seconds() <= 6


def test_with_coalesce_beat_sends_only_the_newest_due_fire_time(scheduler):
    from scheduling.models import JobExecution

    job = make_job(cron_expression="*/1 * * * * *", misfire_grace_time=60, coalesce=True)
    since = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=10)
    Job.objects.filter(pk=job.pk).update(next_run_at=since)
    entry = scheduler.all_as_schedule()[job.name]
    coalesced = JobExecution.objects.filter(job=job, status="missed")
    assert coalesced.count() >= 9
    assert all(r.reason.startswith("Coalesced into the run at") for r in coalesced)
    assert 0 <= (timezone.now() - entry.next_run_at).total_seconds() < 1


def test_jitter_longer_than_the_grace_is_not_a_misfire(scheduler):
    job = make_job(cron_expression="0 */5 * * * *", misfire_grace_time=15, jitter=60)
    fire = timezone.now() - dt.timedelta(seconds=20)
    Job.objects.filter(pk=job.pk).update(next_run_at=fire)
    entry = scheduler.all_as_schedule()[job.name]
    assert entry.next_run_at == fire
