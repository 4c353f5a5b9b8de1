"""Catch-up after an outage, with a real beat: it stops within 5 s of SIGTERM at any
moment (sending the current fire times, or recording the outage), and what it stored as
sent it did send.

The beat imports ``tests.e2e.sends``, which writes down every message it published and,
with ``TEST_PUBLISH_SECONDS``, makes each batch slow to answer, so that the beat is in the
middle of a pass (rows locked, messages going out) when the signal comes.
"""

import datetime as dt
import itertools
import signal
import time

import pytest
from django.utils import timezone

from scheduling import services
from scheduling.models import Job, JobExecution, SchedulerLease
from tests.e2e.configs import NOT_ON_AMQP
from tests.e2e.processes import wait_for
from tests.e2e.test_failover import beat_env, sends

pytestmark = [pytest.mark.e2e, NOT_ON_AMQP]
JOBS = 2000
EXIT_BOUND = 5.0


def jobs_after_an_outage(count: int) -> list[Job]:
    """``count`` interval jobs (every 10 s) whose beat was down for an hour."""
    jobs = services.job_bulk_create(
        jobs=[
            Job(
                name=f"outage-{i}",
                task="demo.noop",
                trigger_type="interval",
                interval_every=10,
                interval_period="seconds",
            )
            for i in range(count)
        ]
    )
    fire = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
    Job.objects.update(
        next_run_at=fire, dispatch_at=fire, schedule_anchor=fire - dt.timedelta(seconds=10)
    )
    return jobs


def stop_and_time(celery_processes, name: str) -> float:
    proc = celery_processes.procs[name]
    started = time.monotonic()
    celery_processes.stop(name, sig=signal.SIGTERM, timeout=30)
    took = time.monotonic() - started
    assert proc.returncode is not None
    return took


def test_beat_stops_within_5_s_of_sigterm_while_it_catches_up(celery_processes):
    jobs_after_an_outage(JOBS)
    celery_processes.start_beat(env=beat_env(publish_seconds=0.3))
    pid = celery_processes.procs["beat"].pid
    wait_for(lambda: sends(pid), timeout=60, what="beat to send", processes=celery_processes)
    time.sleep(0.5)  # in the middle of a pass: each batch waits 0.3 s for the broker
    took = stop_and_time(celery_processes, "beat")
    print(f"SIGTERM while sending -> exit: {took:.2f} s")
    assert took < EXIT_BOUND, celery_processes.log_dir
    # What it stored as sent, it sent: a job whose following fire time is stored had its
    # current fire time published (a pass cut short commits only the batches that left).
    sent = {job_id for _, job_id, _ in sends(pid)}
    stored = set(Job.objects.filter(missed_from__isnull=False).values_list("pk", flat=True))
    assert stored and stored <= sent
    assert SchedulerLease.objects.get().holder == ""  # handed over on its way out


def test_beat_stops_within_5_s_of_sigterm_while_it_records_the_outage(celery_processes):
    jobs_after_an_outage(JOBS)
    fire = Job.objects.values_list("next_run_at", flat=True).first()
    celery_processes.start_beat()
    wait_for(
        lambda: JobExecution.objects.filter(missed_until__isnull=False).exists(),
        timeout=120,
        what="beat to record the outage",
        processes=celery_processes,
    )
    took = stop_and_time(celery_processes, "beat")
    print(f"SIGTERM while recording -> exit: {took:.2f} s")
    assert took < EXIT_BOUND
    # A second beat finishes the record: one summary per job, no more.
    celery_processes.start_beat(name="beat2")
    wait_for(
        lambda: not Job.objects.filter(missed_from__isnull=False).exists(),
        timeout=300,  # 2,000 jobs' hour, and the ledger of what the first beat sent
        what="the next beat to record the rest of the outage",
        processes=celery_processes,
    )
    # Each job's hour is one summary; a loaded machine may leave a job behind again
    # later (another, short span): never one that overlaps.
    by_job: dict[int, list[tuple[dt.datetime, dt.datetime]]] = {}
    for job_id, first, last in JobExecution.objects.filter(missed_until__isnull=False).values_list(
        "job_id", "scheduled_at", "missed_until"
    ):
        by_job.setdefault(job_id, []).append((first, last))
    assert len(by_job) == JOBS
    for spans in by_job.values():
        spans.sort()
        assert spans[0][0] == fire and spans[0][1] > fire + dt.timedelta(minutes=59)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), spans
