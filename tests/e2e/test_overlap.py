"""Overlap policies with real beat and worker processes: a job whose runs last longer than
its interval, and what each policy records for every fire time (tests.e2e.fates)."""

import datetime as dt
import signal
import time

import pytest
from django.conf import settings

from scheduling import services
from scheduling.models import Job, JobExecution
from tests.e2e.fates import BUFFER_FULL, STILL_GOING, table, wait_until_settled
from tests.e2e.processes import wait_for
from tests.e2e.test_semantics import max_overlap, rows
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]
EMBEDDED = settings.CELERY_BROKER_URL.startswith("filesystem://")


def every_second(**fields) -> Job:
    """A job firing every second, paused until :func:`start` has its processes ready."""
    return make_job(
        task="demo.sleep",
        cron_expression="*/1 * * * * *",
        max_instances=1,
        enabled=False,
        **fields,
    )


def start(processes, workers: int, concurrency: int = 2, env=None, jobs=()) -> list[str]:
    """Start the workers and a beat, then resume ``jobs``: their first fire times come
    once everything runs (a slow start on a loaded machine would have them missed)."""
    names = [
        processes.start_worker(f"w{i}", concurrency=concurrency, env=env)
        for i in range(1, workers + 1)
    ]
    processes.start_beat(ready=True)
    for job in jobs:
        services.job_resume(job=job)
    return names


def run_until(processes, job: Job, condition, what: str, timeout: float = 120):
    """Let the job fire until ``condition()`` holds (sampling how many runs wait on the
    way), pause it, and return (the first and last fire time sent, most runs seen
    waiting at once)."""
    most_waiting = 0

    def sampled():
        nonlocal most_waiting
        most_waiting = max(
            most_waiting, JobExecution.objects.filter(job=job, status="waiting").count()
        )
        return condition()

    wait_for(sampled, timeout=timeout, what=what, interval=0.1, processes=processes)
    services.job_pause(job=job)
    time.sleep(2)  # fire times beat sent before the pause reach the worker
    fired = JobExecution.objects.filter(job=job, trigger="schedule")
    first, last = fired.earliest("scheduled_at"), fired.latest("scheduled_at")
    return first.scheduled_at, last.scheduled_at, most_waiting


def ran_after_waiting(fates) -> list[JobExecution]:
    return [r for r in fates.values() if r.status == "success" and r.waiting_since]


def test_skip_records_each_fire_time_that_finds_the_slot_taken(celery_processes):
    job = every_second(kwargs={"seconds": 2.5}, overlap="skip")
    start(celery_processes, workers=1, jobs=[job])
    since, until, most_waiting = run_until(
        celery_processes,
        job,
        lambda: len(rows(job, status="success")) >= 3 and len(rows(job, status="skipped")) >= 3,
        "3 runs and 3 skips",
    )
    fates = wait_until_settled(job, since, until, celery_processes)
    assert {r.status for r in fates.values()} == {"success", "skipped"}, table(fates)
    assert all(STILL_GOING.match(r.reason) for r in fates.values() if r.status == "skipped")
    assert most_waiting == 0 and not ran_after_waiting(fates)
    assert max_overlap(rows(job, status="success")) == 1


@pytest.mark.parametrize("workers", [1] if EMBEDDED else [2])
def test_buffer_one_keeps_one_run_waiting_across_workers(celery_processes, workers):
    """On Redis and RabbitMQ with two workers: the one waiting run and the slot hold
    across them (the embedded broker serves one worker)."""
    job = every_second(kwargs={"seconds": 2.5}, overlap="buffer_one")
    names = start(celery_processes, workers=workers, jobs=[job])

    def enough():
        waited = [r for r in rows(job, status="success") if r.waiting_since]
        skipped = rows(job, status="skipped")
        return len(waited) >= 4 and skipped and {r.worker for r in waited} == set(names)

    since, until, most_waiting = run_until(
        celery_processes, job, enough, "4 runs that waited, on every worker, and a skip"
    )
    fates = wait_until_settled(job, since, until, celery_processes)
    assert {r.status for r in fates.values()} == {"success", "skipped"}, table(fates)
    skipped = [r for r in fates.values() if r.status == "skipped"]
    assert all(BUFFER_FULL.match(r.reason) for r in skipped), table(fates)
    # A skip is justified by a run that waited then: it began waiting before and started
    # after (that run's fire time may be older than the window's).
    waited = [r for r in rows(job, status="success") if r.waiting_since]
    for row in skipped:
        assert any(w.waiting_since <= row.started_at <= w.started_at for w in waited), table(fates)
    assert most_waiting <= 1
    assert max_overlap(rows(job, status="success")) == 1


def test_buffer_all_queues_up_to_its_bound_without_holding_a_process(celery_processes):
    job = every_second(kwargs={"seconds": 2}, overlap="buffer_all")
    bystander = make_job(
        name="bystander", task="demo.noop", cron_expression="*/1 * * * * *", enabled=False
    )
    start(
        celery_processes,
        workers=1,
        concurrency=2,
        env={"SCHEDULING_BUFFER_ALL_LIMIT": "3"},
        jobs=[job, bystander],
    )
    since, until, most_waiting = run_until(
        celery_processes,
        job,
        lambda: any(BUFFER_FULL.match(r.reason) for r in rows(job, status="skipped")),
        "a fire time skipped over the bound",
    )
    fates = wait_until_settled(job, since, until, celery_processes)
    assert {r.status for r in fates.values()} == {"success", "skipped"}, table(fates)
    assert all(
        r.reason.endswith("buffer_all keeps at most 3 waiting (BUFFER_ALL_LIMIT).")
        for r in fates.values()
        if r.status == "skipped"
    ), table(fates)
    waited = sorted(ran_after_waiting(fates), key=lambda r: r.scheduled_at)
    assert len(waited) >= 3, table(fates)
    assert [r.started_at for r in waited] == sorted(r.started_at for r in waited), table(fates)
    assert most_waiting <= 3
    assert max_overlap(rows(job, status="success")) == 1
    # The worker's second process kept serving the other job on time meanwhile.
    services.job_pause(job=bystander)
    first = JobExecution.objects.filter(job=bystander).earliest("scheduled_at").scheduled_at
    others = wait_until_settled(bystander, max(since, first), until, celery_processes)
    assert {r.status for r in others.values()} == {"success"}, table(others)


def test_allow_all_starts_every_fire_time_beyond_max_instances(celery_processes):
    job = every_second(kwargs={"seconds": 3}, overlap="allow_all")
    start(celery_processes, workers=1, concurrency=5, jobs=[job])
    since, until, _ = run_until(
        celery_processes, job, lambda: len(rows(job, status="success")) >= 5, "5 runs"
    )
    fates = wait_until_settled(job, since, until, celery_processes)
    assert {r.status for r in fates.values()} == {"success"}, table(fates)
    assert max_overlap(rows(job, status="success")) >= 2


def test_a_waiting_run_goes_when_the_worker_of_the_run_ahead_died(celery_processes):
    """The worker running the job is killed: no finish sends the waiting run; the other
    worker's housekeeping records the run lost once its lease expires, and sends it."""
    env = {"SCHEDULING_LEASE_SECONDS": "3", "SCHEDULING_REAP_INTERVAL": "1"}
    job = make_job(task="demo.sleep", kwargs={"seconds": 4}, max_instances=1, overlap="buffer_one")
    # Two processes: the second takes the next message while the first runs.
    celery_processes.start_worker("w1", concurrency=2, env=env)
    first = services.job_run_now(job=job)
    wait_for(
        lambda: JobExecution.objects.filter(task_result_id=first, status="running").exists(),
        timeout=30,
        what="the first run to start",
        processes=celery_processes,
    )
    second = services.job_run_now(job=job)
    wait_for(
        lambda: JobExecution.objects.filter(task_result_id=second, status="waiting").exists(),
        timeout=30,
        what="the second run to wait",
        processes=celery_processes,
    )
    celery_processes.stop("w1", sig=signal.SIGKILL)
    killed_at = time.monotonic()
    celery_processes.start_worker("w2", concurrency=1, env=env)
    ran = wait_for(
        lambda: JobExecution.objects.filter(task_result_id=second, status="success").first(),
        timeout=60,
        what="the waiting run to run",
        processes=celery_processes,
    )
    assert ran.worker == "w2@e2e" and ran.reason.startswith("Waited ")
    # Lost; or, had its message come back after its lease expired, its delivery again
    # found the other waiting (buffer one) and was skipped.
    assert JobExecution.objects.get(task_result_id=first, attempt=0).status in {"lost", "skipped"}
    assert time.monotonic() - killed_at > 3  # not before the lease had expired


def test_terminate_other_kills_the_run_going_and_starts_the_new_one(celery_processes):
    job = make_job(
        task="demo.sleep",
        cron_expression="*/3 * * * * *",
        kwargs={"seconds": 60},
        max_instances=1,
        overlap="terminate_other",
        enabled=False,
    )
    start(celery_processes, workers=1, jobs=[job])
    wait_for(
        lambda: len(rows(job, status="terminated")) >= 3,
        timeout=90,
        what="3 runs terminated by the runs after them",
        processes=celery_processes,  # the worker serves on (check_alive)
    )
    services.job_pause(job=job)
    terminated = rows(job, status="terminated")
    for run in terminated:
        assert run.reason.startswith("Terminated by overlap policy terminate_other"), run.reason
        # Its place was taken by the next fire time, which started at once.
        after = JobExecution.objects.filter(job=job, scheduled_at__gt=run.scheduled_at).order_by(
            "scheduled_at"
        )[0]
        assert after.started_at >= run.finished_at - dt.timedelta(seconds=1)
        assert after.waiting_since is None


def test_cancel_other_cancels_the_run_going_and_starts_once_it_stopped(celery_processes):
    job = make_job(
        task="demo.async_sleep",
        cron_expression="*/3 * * * * *",
        kwargs={"seconds": 60},
        max_instances=1,
        overlap="cancel_other",
        enabled=False,
    )
    start(celery_processes, workers=1, env={"SCHEDULING_CANCEL_CHECK_INTERVAL": "0.5"}, jobs=[job])
    wait_for(
        lambda: len(rows(job, status="cancelled")) >= 2,
        timeout=90,
        what="2 runs cancelled by the runs after them",
        processes=celery_processes,
    )
    services.job_pause(job=job)
    for run in rows(job, status="cancelled"):
        assert run.reason.startswith("Cancelled by overlap policy cancel_other"), run.reason
        successor = (
            JobExecution.objects.filter(job=job, scheduled_at__gt=run.scheduled_at)
            .exclude(status="skipped")
            .order_by("scheduled_at")
            .first()
        )
        # The fire time that cancelled it waited, and started only once it had stopped.
        assert successor is not None and successor.waiting_since is not None
        if successor.status not in ("waiting", "queued"):
            assert successor.started_at >= run.finished_at, (run.finished_at, successor.started_at)
