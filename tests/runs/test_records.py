"""Records of runs that end without the worker finishing them: missed, lost."""

import datetime as dt

import pytest
from django.utils import timezone

from scheduling import runs
from scheduling.models import JobExecution
from tests.factories import make_job, make_running

pytestmark = pytest.mark.django_db


def test_a_run_whose_lease_expired_is_lost_and_frees_its_slot():
    job = make_job(cron_expression="*/1 * * * * *", max_instances=1)
    past = timezone.now() - dt.timedelta(seconds=60)
    dead = make_running(job, started_at=past)
    started = runs.execution_start(
        job_id=job.pk,
        trigger="manual",
        scheduled_at=timezone.now(),
        jitter=0,
        attempt=0,
        task_id="t2",
        worker="w",
    )
    assert started is not None and started.status == "running"
    dead.refresh_from_db()
    assert dead.status == "lost" and dead.finished_at == dead.lease_until


def record_outage(job, first, before):
    from scheduling.runs.rules import Missed

    return runs.execution_record_missed_summaries(
        missed=[(job, job.trigger(), Missed(first=first, before=before))],
        reason="Not sent: beat was down ({grace}s).",
    )


def test_an_outage_is_one_summary_row_with_its_first_last_and_count():
    job = make_job(trigger_type="interval", interval_every=10, interval_period="seconds")
    first = job.next_run_at - dt.timedelta(hours=1)
    [summary] = record_outage(job, first, job.next_run_at)
    summary.refresh_from_db()
    assert (summary.status, summary.scheduled_at, summary.missed_count) == ("missed", first, 360)
    assert summary.missed_until == job.next_run_at - dt.timedelta(seconds=10)
    assert summary.reason == f"Not sent: beat was down ({job.misfire_grace_time}s)."
    assert summary.covers(first + dt.timedelta(seconds=1234))
    assert not summary.covers(job.next_run_at)
    assert runs.covered_by_summary(job_id=job.pk, fire_time=summary.missed_until)
    assert not runs.covered_by_summary(job_id=job.pk, fire_time=job.next_run_at)


def test_a_summary_leaves_a_first_fire_time_already_on_record_as_it_is():
    """A beat killed between sending a fire time and storing the next one: its run has a
    row; the new beat's summary starts after it."""
    job = make_job(cron_expression="*/5 * * * * *")
    first = job.next_run_at - dt.timedelta(minutes=1)
    ran = make_running(job, started_at=first, scheduled_at=first)
    JobExecution.objects.filter(pk=ran.pk).update(trigger="schedule")
    [summary] = record_outage(job, first, job.next_run_at)
    assert summary.scheduled_at == first + dt.timedelta(seconds=5)
    assert summary.missed_count == 11
    ran.refresh_from_db()
    assert ran.status == "running"
