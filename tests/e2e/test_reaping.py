"""Runs whose worker died are recorded as lost by the other workers' periodic check, not
only when the same job next starts; and only those: leases go by the database's clock."""

import datetime as dt
import glob
import signal

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from scheduling import services
from scheduling.models import JobExecution
from tests.e2e.configs import NOT_ON_AMQP
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e, NOT_ON_AMQP]


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
        lambda: (
            JobExecution.objects.filter(pk=running.pk)
            .filter(Q(status="lost") | Q(status="running", worker="w2@e2e"))
            .first()
        ),
        timeout=30,
        what="the dead run to be recorded as lost",
        processes=celery_processes,
    )
    if lost.status == "running":
        # On RabbitMQ the dead worker's message comes back at once: reaching the new
        # worker after the run's lease ran out, it takes over its own run (same row).
        assert JobExecution.objects.filter(job=job).count() == 1
        return
    assert lost.reason.startswith("The worker stopped renewing")
    assert lost.finished_at == lost.lease_until
    assert JobExecution.objects.filter(job=job).count() == 1


FAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)


@pytest.mark.skipif(FAKETIME is None, reason="needs libfaketime (Debian package libfaketime)")
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite: one machine, one clock")
@pytest.mark.skipif(
    settings.CELERY_BROKER_URL.startswith("filesystem://"),
    reason="two workers: Redis or RabbitMQ (the embedded broker serves one)",
)
def test_a_worker_whose_clock_is_ahead_reaps_no_live_run(celery_processes):
    lease = {"SCHEDULING_LEASE_SECONDS": "6"}
    # The default grace (15 s): lateness is read on the database's clock, not on that of
    # the worker 30 s ahead, which would find the run 30 s late.
    job = make_job(task="demo.sleep", kwargs={"seconds": 12}, max_instances=2)
    celery_processes.start_worker("w1", concurrency=1, env=lease)
    services.job_run_now(job=job)
    first = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="running").first(),
        timeout=60,
        what="the first run on the worker with the right clock",
        processes=celery_processes,
    )
    ahead = {**lease, "LD_PRELOAD": FAKETIME, "FAKETIME": "+30s"}
    celery_processes.start_worker("w2", concurrency=1, env=ahead)
    services.job_run_now(job=job)
    wait_for(
        lambda: JobExecution.objects.filter(job=job, worker="w2@e2e").exists(),
        timeout=60,
        what="a run on the worker whose clock is 30 s ahead",
        processes=celery_processes,
    )
    wait_for(
        lambda: not JobExecution.objects.filter(job=job, status="running").exists(),
        timeout=60,
        what="both runs to end",
        processes=celery_processes,
    )
    first.refresh_from_db()
    assert first.status == "success", first.reason
    assert set(JobExecution.objects.filter(job=job).values_list("status", flat=True)) == {"success"}
