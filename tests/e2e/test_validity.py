"""Validity windows and run limits with real processes: a job with max runs fires that many
times and ends disabled, one with a start time does not fire before it, one with an end
time fires up to it and no later; each finish is in the job's audit trail."""

import datetime as dt

import pytest
from django.utils import timezone

from scheduling.models import Job, JobChange, JobExecution
from tests.e2e.configs import NOT_ON_AMQP
from tests.e2e.fates import wait_until_settled
from tests.e2e.processes import wait_for
from tests.e2e.test_beat_and_worker import wait_for_beat_past
from tests.factories import make_job

pytestmark = [pytest.mark.e2e, NOT_ON_AMQP]


def scheduled_rows(job: Job) -> list[JobExecution]:
    return list(
        JobExecution.objects.filter(job=job, trigger="schedule", attempt=0).order_by("scheduled_at")
    )


def wait_until_finished(job: Job, processes) -> JobChange:
    """Wait until beat has finished ``job`` (disabled, with its audit entry); return it."""
    return wait_for(
        lambda: JobChange.objects.filter(job=job, action="finished").first(),
        timeout=90,
        what=f"beat to finish {job.name}",
        processes=processes,
    )


def test_a_job_with_max_runs_3_runs_3_times_and_ends_disabled_with_its_reason(celery_processes):
    celery_processes.start_worker()
    celery_processes.start_beat(ready=True)
    witness = make_job(name="witness", cron_expression="*/1 * * * * *")
    job = make_job(name="three-times", trigger_type="interval", interval_every=1,
                   interval_period="seconds", max_runs=3)  # fmt: skip

    entry = wait_until_finished(job, celery_processes)
    finished_at = timezone.now()
    wait_for_beat_past(witness, finished_at, celery_processes)

    rows = scheduled_rows(job)
    assert len(rows) == 3, [(r.scheduled_at, r.status, r.reason) for r in rows]
    fates = wait_until_settled(job, rows[0].scheduled_at, rows[-1].scheduled_at, celery_processes)
    assert len(fates) == 3  # one row per fire time, each consistent with itself
    job.refresh_from_db()
    assert (job.enabled, job.next_run_at, job.scheduled_run_count, job.runs_remaining) == (
        False,
        None,
        3,
        0,
    )
    assert entry.source == "system" and ":" in entry.actor  # the beat, host:pid
    assert entry.changes["enabled"] == [True, False]
    assert entry.changes["reason"] == "Finished: it has sent its 3 runs (max runs)."
    assert JobChange.objects.filter(job=job, action="finished").count() == 1


def test_a_job_with_a_start_time_ahead_does_not_run_before_it_and_stops_at_its_end(
    celery_processes,
):
    celery_processes.start_worker()
    celery_processes.start_beat(ready=True)
    witness = make_job(name="witness", cron_expression="*/1 * * * * *")
    start = timezone.now().replace(microsecond=0) + dt.timedelta(seconds=6)
    end = start + dt.timedelta(seconds=2)
    job = make_job(name="windowed", cron_expression="*/1 * * * * *", start_at=start, end_at=end)
    assert job.next_run_at == start

    entry = wait_until_finished(job, celery_processes)
    wait_for_beat_past(witness, timezone.now(), celery_processes)

    fates = wait_until_settled(job, start, end, celery_processes)
    assert sorted(fates) == [start, start + dt.timedelta(seconds=1), end]
    rows = scheduled_rows(job)
    assert [row.scheduled_at for row in rows] == sorted(fates), "a fire time outside the window"
    # The witness ran before the start: beat was passing while the job waited for it.
    assert JobExecution.objects.filter(job=witness, scheduled_at__lt=start).exists()
    assert all(row.started_at >= start for row in rows)
    job.refresh_from_db()
    assert not job.enabled and job.next_run_at is None
    assert entry.changes["reason"].startswith("Finished: no fire time is left before its end time")
