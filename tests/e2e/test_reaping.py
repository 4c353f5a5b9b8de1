"""Runs whose worker died are recorded as lost by the other workers' periodic check, not
only when the same job next starts."""

import datetime as dt
import signal

import pytest
from django.utils import timezone

from scheduling.models import JobExecution
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]


def test_a_one_off_jobs_dead_run_is_reaped_without_another_start(celery_processes):
    env = {"SCHEDULING_LEASE_SECONDS": "3", "SCHEDULING_REAP_INTERVAL": "1"}
    job = make_job(
        task="demo.sleep",
        trigger_type="date",
        run_at=timezone.now() + dt.timedelta(seconds=3),
        kwargs={"seconds": 120},
    )
    celery_processes.start_worker("w1", env=env)
    celery_processes.start_beat()
    running = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="running").first(),
        timeout=60,
        what="the one-off run to start",
        processes=celery_processes,
    )
    celery_processes.stop("w1", sig=signal.SIGKILL)
    celery_processes.start_worker("w2", env=env)  # the job never starts again
    lost = wait_for(
        lambda: JobExecution.objects.filter(pk=running.pk, status="lost").first(),
        timeout=30,
        what="the dead run to be recorded as lost",
        processes=celery_processes,
    )
    assert lost.reason.startswith("The worker stopped renewing")
    assert lost.finished_at == lost.lease_until
    assert JobExecution.objects.filter(job=job).count() == 1
