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
from scheduling.models import Job, JobExecution
from tests.e2e.fates import (
    COALESCED_BY_BEAT,
    COALESCED_BY_RUN,
    EXPIRED,
    STARTED_LATE,
    late,
    table,
    wait_until_settled,
)
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]
NOT_SENT_PREFIX = "Not sent: beat was down"
COALESCED_PREFIX = "Coalesced into the run at "


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
    # Both workers must have run some: the limit would hold for one alone.
    wait_for(
        lambda: (
            len(done := rows(job, status="success")) >= 5
            and rows(job, status="skipped")
            and {r.worker for r in done} == {"w1@e2e", "w2@e2e"}
        ),
        timeout=90,
        what="5 runs on both workers, and a skip",
        processes=celery_processes,
    )
    assert max_overlap(rows(job, status="success")) <= 2


def test_worker_outage_follows_misfire_grace_and_coalesce(celery_processes):
    grace = 5
    plain = make_job(name="plain", cron_expression="*/1 * * * * *", misfire_grace_time=grace)
    patient = make_job(name="patient", cron_expression="*/1 * * * * *", misfire_grace_time=60)
    merged = make_job(
        name="merged", cron_expression="*/1 * * * * *", misfire_grace_time=60, coalesce=True
    )
    celery_processes.start_worker()
    celery_processes.start_beat()
    wait_for(
        lambda: all(len(rows(job, status="success")) >= 2 for job in (plain, patient, merged)),
        timeout=60,
        what="first runs",
        processes=celery_processes,
    )

    celery_processes.stop("w1")
    down_at = timezone.now()
    outage = 12
    time.sleep(outage)
    celery_processes.start_worker()
    # Beat sent every fire time on time; they waited in the broker. No worker ran any of
    # them before the new one started, at least ``outage`` seconds after ``down_at``.
    backlog = [down_at, down_at + dt.timedelta(seconds=outage)]
    surely_late = down_at + dt.timedelta(seconds=outage - grace - 1)

    # Coalesce off, short grace: each fire time has one row; those that started later than
    # the grace are missed (and did not run), the others ran late. Which side of the grace
    # each lands on depends on how fast the worker drains the queue; that each row agrees
    # with its own timestamps does not (fates.problems).
    fates = wait_until_settled(plain, *backlog, celery_processes)
    assert {r.status for r in fates.values()} <= {"success", "missed"}
    too_old = [r for fire, r in fates.items() if fire <= surely_late]
    assert len(too_old) >= outage - grace - 2, table(fates)
    assert all(r.status == "missed" for r in too_old), table(fates)

    # Coalesce off, grace longer than the outage: every fire time ran, the oldest late.
    fates = wait_until_settled(patient, *backlog, celery_processes)
    assert {r.status for r in fates.values()} == {"success"}, table(fates)
    oldest = min(fates.values(), key=lambda r: r.scheduled_at)
    assert late(oldest) > outage - 2, table(fates)

    # Coalesce on: the whole backlog gives exactly one (late) run. The catch-up is the first
    # run after the outage; it covers every fire time due when it started, so each of those
    # is coalesced and none of them runs.
    first_run = JobExecution.objects.filter(
        job=merged, started_at__gt=down_at, status__in=["running", "success"]
    ).order_by("started_at")
    catch_up = wait_for(
        lambda: (run := first_run.first()) and run.status == "success" and run,
        timeout=60,
        what="the catch-up run",
        processes=celery_processes,
    )
    assert catch_up.started_at > backlog[1]
    # (Its message may be from just before the outage: one the stopped worker left.)
    due = wait_until_settled(merged, down_at, catch_up.started_at, celery_processes)
    assert len(due) >= outage - 1, table(due)
    ran = [r for r in due.values() if r.status == "success"]
    assert ran == ([catch_up] if catch_up.scheduled_at >= down_at else []), table(due)
    assert all(COALESCED_BY_RUN.match(r.reason) for r in due.values() if r not in ran)
    # And it goes back to running on time.
    wait_for(
        lambda: rows(merged, status="success", scheduled_at__gt=catch_up.started_at),
        timeout=60,
        what="a run after the catch-up",
        processes=celery_processes,
    )


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
    outage = 10
    time.sleep(outage)
    celery_processes.start_beat()

    # Coalesce off: the new beat's first pass records every fire time older than the
    # grace as one summary (first, last, count; at one time: ``back_at``), and sends the
    # rest one by one, oldest first. A catch-up run sent near the edge of its grace may
    # still start after it, and the worker then records it missed (and does not run it);
    # how many do depends on the machine's load, not on the product.
    [summary] = wait_for(
        lambda: rows(plain, missed_until__gte=down_at, reason__startswith=NOT_SENT_PREFIX),
        timeout=60,
        what="the new beat to record the fire times it did not send",
        processes=celery_processes,
    )
    back_at = summary.started_at
    assert back_at > down_at + dt.timedelta(seconds=outage)
    fates = wait_until_settled(plain, down_at, back_at + dt.timedelta(seconds=2), celery_processes)
    first_pass = [fire for fire, r in fates.items() if r == summary]
    last_not_sent = summary.missed_until
    # Everything from the outage up to there was not sent, and is in that summary (whose
    # count is the fire times of its range: fates.problems checks it)...
    assert [f for f in fates if f <= last_not_sent] == first_pass, table(fates)
    assert first_pass[-1] == last_not_sent, table(fates)
    assert len(first_pass) >= outage - grace - 1, table(fates)
    # ... and every fire time after it was sent, starting with the very next one, which was
    # due when beat came back: a run, a worker's "started late", or (its message reached
    # the end of its grace in the queue) "expired in the queue".
    first_sent = fates[last_not_sent + dt.timedelta(seconds=1)]
    assert first_sent.scheduled_at < back_at
    assert (
        first_sent.status == "success"
        or STARTED_LATE.match(first_sent.reason)
        or EXPIRED.match(first_sent.reason)
    ), table(fates)
    # And it goes back to running on time.
    wait_for(
        lambda: rows(plain, status="success", scheduled_at__gt=back_at),
        timeout=60,
        what="a run after the catch-up",
        processes=celery_processes,
    )

    # Coalesce on: the first pass sends only the newest due fire time; every other one
    # since the outage is recorded coalesced into it, in that pass, and none of them runs.
    by_beat = wait_for(
        lambda: rows(merged, scheduled_at__gte=down_at, reason__startswith=COALESCED_PREFIX),
        timeout=60,
        what="the fire times the new beat coalesced",
        processes=celery_processes,
    )
    first_pass_at = min(r.started_at for r in by_beat)
    coalesced = [r for r in by_beat if r.started_at == first_pass_at]
    [reason] = {r.reason for r in coalesced}
    catch_up_at = dt.datetime.fromisoformat(COALESCED_BY_BEAT.match(reason)[1])
    fates = wait_until_settled(merged, down_at, catch_up_at, celery_processes)
    assert fates.pop(catch_up_at).status == "success", table(fates)
    assert list(fates.values()) == coalesced, table(fates)
    assert len(coalesced) >= outage - 1, table(fates)


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
    # Killed after its 2 s limit, long before the function's 30 s would have ended.
    assert 1.5 < by_name["hard"].duration < 30


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
        timeout=60,
        what="the new worker to take the slot",
        processes=celery_processes,
    )
    if second.pk == first.pk:
        # On RabbitMQ the dead worker's unacknowledged message comes back at once: if it
        # reaches the new worker after the run's lease ran out, within the run's grace, the
        # run is taken over, in its own row (a run of the same fire time, not a second).
        assert second.started_at >= killed_at
        assert rows(job, status="lost") == []
        return
    # Otherwise the start that took the slot records the dead run as lost right after (its
    # own transaction, once the new run's row is in).
    first = wait_for(
        lambda: JobExecution.objects.filter(pk=first.pk, status="lost").first(),
        timeout=10,
        what="the dead run to be recorded as lost",
        processes=celery_processes,
    )
    assert "stopped renewing" in first.reason
    # Its lease, last renewed before the kill, ran out within a lease's length of it, and
    # the run is lost as of then; the slot was taken after that, not before...
    assert first.finished_at == first.lease_until <= killed_at + dt.timedelta(seconds=3)
    assert second.started_at >= first.lease_until
    # ... and the first fire time that tried once it had run out took it: no run was
    # skipped for the dead one's sake after its lease ended (the count and the record of a
    # skip are a moment apart in one transaction: a second's leeway).
    skipped_after = rows(
        job,
        status="skipped",
        started_at__gt=first.lease_until + dt.timedelta(seconds=1),
        started_at__lt=second.started_at,
    )
    assert skipped_after == [], [(r.started_at, r.reason) for r in skipped_after]
