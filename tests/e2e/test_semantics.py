"""Execution semantics with real beat and worker processes: max instances, misfire grace,
coalescing, time limits, retries, jitter, and a killed worker's slot."""

import datetime as dt
import itertools
import signal
import time
import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from scheduling import services
from scheduling.models import BeatHeartbeat, Job, JobExecution
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]


def rows(job, **filters):
    return list(JobExecution.objects.filter(job=job, **filters).order_by("scheduled_at", "attempt"))


def max_overlap(runs) -> int:
    """Most runs that were going at the same moment."""
    events = sorted(
        [(r.started_at, 1) for r in runs] + [(r.finished_at, -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def test_max_instances_one_never_overlaps_and_records_skips(celery_processes):
    job = make_job(
        task="demo.sleep", cron_expression="*/1 * * * * *", kwargs={"seconds": 3}, max_instances=1
    )
    celery_processes.start_worker(concurrency=3)
    celery_processes.start_beat()
    wait_for(
        lambda: len(rows(job, status="success")) >= 2 and len(rows(job, status="skipped")) >= 3,
        timeout=60,
        what="2 runs and 3 skips",
        processes=celery_processes,
    )
    assert max_overlap(rows(job, status="success")) == 1
    skipped = rows(job, status="skipped")[0]
    assert skipped.reason == "1 run(s) still going; max instances is 1."
    assert skipped.scheduled_at is not None and skipped.worker == "w1@e2e"


@pytest.mark.skipif(
    settings.CELERY_BROKER_URL.startswith("filesystem://"),
    reason="the embedded broker is supported for one worker (README); several workers "
    "belong on Redis or RabbitMQ",
)
def test_two_workers_never_exceed_the_limit_together(celery_processes):
    job = make_job(
        task="demo.sleep", cron_expression="*/1 * * * * *", kwargs={"seconds": 2.5}, max_instances=2
    )
    celery_processes.start_worker("w1", concurrency=2)
    celery_processes.start_worker("w2", concurrency=2)
    celery_processes.start_beat()
    wait_for(
        lambda: len(rows(job, status="success")) >= 5 and rows(job, status="skipped"),
        timeout=90,
        what="5 runs and a skip",
        processes=celery_processes,
    )
    done = rows(job, status="success")
    assert max_overlap(done) <= 2
    assert {r.worker for r in rows(job)} == {"w1@e2e", "w2@e2e"}


def test_worker_outage_follows_misfire_grace_and_coalesce(celery_processes):
    grace = 5
    plain = make_job(name="plain", cron_expression="*/1 * * * * *", misfire_grace_time=grace)
    merged = make_job(
        name="merged", cron_expression="*/1 * * * * *", misfire_grace_time=60, coalesce=True
    )
    celery_processes.start_worker()
    celery_processes.start_beat()
    wait_for(
        lambda: (
            len(rows(plain, status="success")) >= 2 and len(rows(merged, status="success")) >= 2
        ),
        timeout=60,
        what="first runs",
        processes=celery_processes,
    )

    celery_processes.stop("w1")
    down_at = timezone.now()
    time.sleep(12)
    # "Up" is when the new worker answers, not when it was asked to start: on a loaded
    # machine start-up alone can outlast the grace.
    celery_processes.start_worker()
    up_at = timezone.now()
    time.sleep(6)

    outage = [down_at + dt.timedelta(seconds=1), up_at - dt.timedelta(seconds=1)]
    # Coalesce off: every fire time is accounted for once; those delivered later than the
    # grace are missed, the others ran late.
    during = rows(plain, scheduled_at__range=outage)
    fire_times = [r.scheduled_at for r in during]
    assert len(fire_times) == len(set(fire_times)) >= 9
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(fire_times))
    missed = [r for r in during if r.status == "missed"]
    ran = [r for r in during if r.status == "success"]
    assert missed and ran, [(r.scheduled_at, r.status) for r in during]
    assert all(r.started_at - r.scheduled_at > dt.timedelta(seconds=grace) for r in missed)
    assert all(r.reason.startswith("Started ") for r in missed)
    assert all(r.lateness <= grace + 1 for r in ran)

    # Coalesce on: the whole backlog gives exactly one (late) run; the rest are coalesced.
    # The catch-up is the first run after the outage; it covers every fire time due when
    # it started, so each of those is coalesced and none of them runs.
    after_outage = [r for r in rows(merged, status="success") if r.started_at > down_at]
    catch_up = min(after_outage, key=lambda r: r.started_at)
    covered = rows(
        merged, scheduled_at__gt=catch_up.scheduled_at, scheduled_at__lte=catch_up.started_at
    )
    table = [(r.scheduled_at, r.status, r.lateness) for r in rows(merged)]
    assert catch_up.lateness > 5, table
    assert len(covered) >= 8, table
    assert all(r.status == "missed" and r.reason.startswith("Coalesced") for r in covered), table
    fire_times = [catch_up.scheduled_at] + [r.scheduled_at for r in covered]
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(fire_times))
    # And it goes back to running on time.
    assert rows(merged, status="success", scheduled_at__gt=up_at + dt.timedelta(seconds=2))


def test_beat_outage_records_missed_fire_times_and_catches_up(celery_processes):
    grace = 4
    plain = make_job(name="plain", cron_expression="*/1 * * * * *", misfire_grace_time=grace)
    merged = make_job(
        name="merged", cron_expression="*/1 * * * * *", misfire_grace_time=60, coalesce=True
    )
    celery_processes.start_worker()
    celery_processes.start_beat()
    wait_for(
        lambda: len(rows(plain, status="success")) >= 2,
        timeout=60,
        what="first runs",
        processes=celery_processes,
    )

    celery_processes.stop("beat", sig=signal.SIGKILL)
    down_at = timezone.now()
    time.sleep(10)
    celery_processes.start_beat()
    wait_for(
        lambda: BeatHeartbeat.objects.filter(started_at__gt=down_at).exists(),
        timeout=60,
        what="the new beat's heartbeat",
        processes=celery_processes,
    )
    up_at = timezone.now()
    time.sleep(6)

    outage = [down_at + dt.timedelta(seconds=1), up_at - dt.timedelta(seconds=1)]
    during = rows(plain, scheduled_at__range=outage)
    fire_times = [r.scheduled_at for r in during]
    assert len(fire_times) == len(set(fire_times)) >= 8
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(fire_times))
    missed = [r for r in during if r.status == "missed"]
    caught_up = [r for r in during if r.status == "success"]
    assert missed and caught_up
    # Beat leaves unsent what is past its grace when it comes back; a catch-up run sent at
    # the very edge of its grace may still start after it, and the worker then records it
    # as missed too (and does not run it). Nothing else may be missed.
    not_sent = [r for r in missed if r.reason.startswith("Not sent: beat was down")]
    started_late = [r for r in missed if r.reason.startswith("Started ")]
    assert not_sent
    assert len(not_sent) + len(started_late) == len(missed), [r.reason for r in missed]
    # At most the oldest one or two catch-up runs, between what was not sent and what ran.
    assert len(started_late) <= 2, [(r.scheduled_at, r.reason) for r in started_late]
    for late in started_late:
        assert max(r.scheduled_at for r in not_sent) < late.scheduled_at
        assert late.scheduled_at < min(r.scheduled_at for r in caught_up)
    assert all(r.scheduled_at >= up_at - dt.timedelta(seconds=grace + 2) for r in caught_up)

    # Coalesce on: beat sends only the newest due fire time; the others are coalesced.
    coalesced = rows(merged, status="missed", scheduled_at__gt=down_at)
    assert len(coalesced) >= 7, [(r.scheduled_at, r.status) for r in rows(merged)]
    reasons = {r.reason for r in coalesced}
    assert len(reasons) == 1 and reasons.pop().startswith("Coalesced into the run at ")
    catch_up_at = max(r.scheduled_at for r in coalesced) + dt.timedelta(seconds=1)
    assert rows(merged, scheduled_at=catch_up_at, status="success")
    assert not rows(
        merged, status="success", scheduled_at__gt=down_at, scheduled_at__lt=catch_up_at
    )


def time_limited_jobs_run(celery_processes, jobs: list) -> dict[str, JobExecution]:
    """Start a worker (2 processes) and beat, run ``jobs`` now; wait until each timed out,
    then for two more runs of a job firing every second (the worker still serves)."""
    echo = make_job(name="echo", cron_expression="*/1 * * * * *")
    celery_processes.start_worker(concurrency=2)
    celery_processes.start_beat()
    for job in jobs:
        services.job_run_now(job=job)
    timed_out = wait_for(
        lambda: (
            (r := JobExecution.objects.filter(status="timeout")).count() == len(jobs) and list(r)
        ),
        timeout=60,
        what=f"{len(jobs)} timed-out runs",
        processes=celery_processes,
    )
    last = max(r.finished_at for r in timed_out)
    wait_for(
        lambda: (
            JobExecution.objects.filter(job=echo, status="success", started_at__gt=last).count()
            >= 2
        ),
        timeout=30,
        what="runs after the timeouts",
        processes=celery_processes,
    )
    return {r.job_name: r for r in timed_out}


def sleeper(name: str, task: str, **limits) -> Job:
    """A job that sleeps 30 s when run (its cron fires once a year), with time ``limits``."""
    return make_job(
        name=name, task=task, cron_expression="0 0 0 1 1 *", kwargs={"seconds": 30}, **limits
    )


def test_soft_time_limits_stop_runs_and_the_worker_keeps_serving(celery_processes):
    soft = sleeper("soft", "demo.sleep", soft_time_limit=1)
    async_job = sleeper("async", "demo.async_sleep", soft_time_limit=1)
    by_name = time_limited_jobs_run(celery_processes, [soft, async_job])
    assert by_name["soft"].duration < 5 and "soft time limit" in by_name["soft"].reason
    assert by_name["async"].duration < 5 and "soft time limit" in by_name["async"].reason


def test_a_hard_time_limit_kills_the_run_and_the_worker_keeps_serving(celery_processes):
    # On the embedded broker (billiard's blocking pool, one result queue for all processes)
    # this hung the worker about one time in ten while the lease renewer thread could take
    # the SIGTERM meant for the dying process (tests/test_threads.py holds that cause).
    hard = sleeper("hard", "tests.stubborn_sleep", soft_time_limit=1, time_limit=2)
    by_name = time_limited_jobs_run(celery_processes, [hard])
    assert "hard time limit" in by_name["hard"].reason
    assert 1.5 < by_name["hard"].duration < 10


def test_retries_back_off_and_record_every_attempt(celery_processes):
    flaky = make_job(
        name="flaky",
        task="tests.flaky",
        cron_expression="0 0 0 1 1 *",
        kwargs={"key": uuid.uuid4().hex, "failures": 2},
        max_retries=3,
        retry_backoff=1,
        retry_jitter=False,
    )
    other = make_job(
        name="other",
        task="tests.value_error",
        cron_expression="0 0 0 1 1 *",
        max_retries=3,
        retry_backoff=1,
        retry_on=["ConnectionError"],
    )
    celery_processes.start_worker()
    services.job_run_now(job=flaky)
    services.job_run_now(job=other)
    attempts = wait_for(
        lambda: (r := rows(flaky)) and r[-1].status == "success" and r,
        timeout=60,
        what="the flaky job to succeed",
        processes=celery_processes,
    )
    assert [(r.attempt, r.status) for r in attempts] == [
        (0, "failure"),
        (1, "failure"),
        (2, "success"),
    ]
    first = attempts[0]
    assert all(r.retry_of_id == first.pk for r in attempts[1:])
    assert len({r.task_result_id for r in attempts}) == 1
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps  # 1 s, then 2 s
    assert attempts[0].exception == "ConnectionError: attempt 1 fails"
    # ValueError is not in retry_on: one attempt only.
    time.sleep(2)
    assert [(r.attempt, r.status) for r in rows(other)] == [(0, "failure")]


def test_jitter_delays_each_run_and_is_recorded(celery_processes):
    job = make_job(cron_expression="*/2 * * * * *", jitter=1)
    celery_processes.start_worker()
    celery_processes.start_beat()
    runs = wait_for(
        lambda: (r := rows(job, status="success")) and len(r) >= 4 and r,
        timeout=60,
        what="4 runs",
        processes=celery_processes,
    )
    for run in runs:
        assert run.jitter is not None and 0 <= run.jitter <= 1
        assert run.started_at >= run.scheduled_at + dt.timedelta(seconds=run.jitter)
    assert len({round(run.jitter, 3) for run in runs}) > 1


def test_killed_worker_frees_its_slot_within_the_lease(celery_processes):
    lease = {"SCHEDULING_LEASE_SECONDS": "3"}
    job = make_job(
        task="demo.sleep", cron_expression="*/1 * * * * *", kwargs={"seconds": 60}, max_instances=1
    )
    celery_processes.start_worker("w1", env=lease)
    celery_processes.start_beat()
    first = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="running").first(),
        timeout=60,
        what="a running run",
        processes=celery_processes,
    )
    celery_processes.stop("w1", sig=signal.SIGKILL)
    killed_at = timezone.now()
    celery_processes.start_worker("w2", env=lease)
    second = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="running", worker="w2@e2e").first(),
        timeout=30,
        what="the new worker to take the slot",
        processes=celery_processes,
    )
    assert (second.started_at - killed_at).total_seconds() < 3 + 10
    first.refresh_from_db()
    assert first.status == "lost"
    assert "stopped renewing" in first.reason
