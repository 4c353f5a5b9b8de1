"""Pauses with real processes: beat resumes a job at its resume time, and a job that
keeps failing pauses itself."""

import datetime as dt

import pytest

from scheduling import services
from scheduling.models import Alert, AlertKind, Job, JobChange, JobExecution
from tests.e2e.configs import NOT_ON_AMQP
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e, NOT_ON_AMQP]


def test_beat_resumes_a_paused_job_at_its_resume_time(celery_processes):
    celery_processes.start_worker()
    celery_processes.start_beat(ready=True)
    job = make_job(cron_expression="*/1 * * * * *")
    until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=4)
    services.job_pause(job=job, reason="maintenance window", until=until)
    paused = dt.datetime.now(dt.UTC)

    runs = wait_for(
        lambda: (r := list(JobExecution.objects.filter(job=job, status="success"))) and r,
        timeout=60,
        what="a run after the resume time",
        processes=celery_processes,
    )
    job.refresh_from_db()
    assert job.enabled and job.resume_at is None and job.pause_reason == ""
    change = JobChange.objects.get(job=job, action="resumed")
    assert change.source == "system" and change.actor  # the beat that resumed it
    assert change.at >= until
    # Nothing ran while paused: every run is of a fire time at or after the resume time.
    fire_times = sorted(run.scheduled_at for run in JobExecution.objects.filter(job=job))
    assert fire_times[0] >= until, (paused, until, fire_times)
    assert runs


def test_a_job_that_keeps_failing_pauses_itself_after_its_retries(celery_processes):
    job = make_job(
        task="demo.fail",
        cron_expression="*/2 * * * * *",
        max_retries=1,
        retry_backoff=0,
        retry_jitter=False,
        pause_after_failures=2,
    )
    celery_processes.start_worker()
    celery_processes.start_beat()

    wait_for(
        lambda: not Job.objects.get(pk=job.pk).enabled,
        timeout=90,
        what="the job to pause itself",
        processes=celery_processes,
    )
    job.refresh_from_db()
    assert job.consecutive_failures == 2
    assert "2 failed runs in a row" in job.pause_reason
    assert "This job failed on purpose." in job.pause_reason
    change = JobChange.objects.get(job=job, action="paused")
    assert (change.source, change.actor) == ("system", "pause_after_failures")
    assert Alert.objects.filter(job=job, kind=AlertKind.PAUSED, state="firing").exists()
    # Counted after the retries: each of the two counted fire times had two attempts.
    failed = JobExecution.objects.filter(job=job, status="failure")
    counted = {run.scheduled_at for run in failed if run.attempt == 1}
    assert len(counted) >= 2, [(r.scheduled_at, r.attempt) for r in failed]
    assert all(failed.filter(scheduled_at=moment, attempt=0).exists() for moment in counted), (
        "a fire time counted before its retry"
    )
