"""Several beats at once, with real processes: one dispatches, a standby takes over when it
dies, and every fire time runs exactly once (accounted by ``tests/e2e/faults.py``)."""

import datetime as dt
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from scheduling import services
from scheduling.models import JobExecution, SchedulerLease
from tests.e2e.faults import account, report_line
from tests.e2e.processes import wait_for
from tests.e2e.test_faults import ticking_job, wait_for_a_run_after

pytestmark = [pytest.mark.e2e]
# The default lease (5 s) and poll (1 s): a standby takes over within about a second of
# the lease running out, at most ~6 s after the leader's last renewal; up to 5 s is allowed
# for a loaded machine.
LEASE = dt.timedelta(seconds=5)
TAKEOVER_AFTER_EXPIRY = dt.timedelta(seconds=5)
# Longer than any delay load puts between a fire time and its run, so that every fire time
# runs; a fire time that beats fail to send or send twice still shows.
GRACE = 30


def lease_row() -> SchedulerLease | None:
    close_old_connections()
    return SchedulerLease.objects.filter(name="beat").first()


def leader() -> tuple[str, int]:
    lease = lease_row()
    return (lease.holder, lease.token) if lease else ("", 0)


def beat_of(processes, holder: str) -> str:
    pid = int(holder.rsplit(":", 1)[1])
    [name] = [name for name, proc in processes.procs.items() if proc.pid == pid]
    return name


def start_beats(processes, count: int) -> list[str]:
    names = [f"beat{i}" for i in range(1, count + 1)]
    for name in names:
        processes.start_beat(name)
    wait_for(
        lambda: leader()[0],
        timeout=60,
        what="a leader among the beats",
        processes=processes,
    )
    return names


def wait_for_successes(job, count: int, processes) -> None:
    wait_for(
        lambda: JobExecution.objects.filter(job=job, status="success").count() >= count,
        timeout=60,
        what="first runs",
        processes=processes,
    )


def settle(job, key, since, until, fault, processes) -> dict:
    """Wait until every fire time in the window is explained, then account for them."""
    try:
        wait_for(
            lambda: account(job, key, since, until)["unexplained"] == 0,
            timeout=job.misfire_grace_time + 30,
            what="every fire time in the window to be run or recorded",
            processes=processes,
        )
    except AssertionError as exc:
        result = account(job, key, since, until)
        line = f"{report_line(fault, result)} {result['unexplained_times']}"
        raise AssertionError(f"{line}\n{exc}") from exc
    time.sleep(2)  # a duplicate would have shown up by now
    result = account(job, key, since, until)
    line = report_line(fault, result)
    print(line)
    assert result["duplicates"] == 0, line
    assert result["unexplained"] == 0, line
    return result


@pytest.mark.parametrize("beats", [2, 3])
def test_several_beats_run_each_fire_time_exactly_once(celery_processes, beats):
    job, key = ticking_job(misfire_grace_time=GRACE)
    celery_processes.start_worker()
    names = start_beats(celery_processes, beats)
    wait_for_successes(job, 2, celery_processes)
    holder, token = leader()
    since = timezone.now().replace(microsecond=0)
    time.sleep(10)
    until = timezone.now().replace(microsecond=0)
    result = settle(job, key, since, until, f"{beats} beats running", celery_processes)
    # Exactly the expected runs: every fire time succeeded, once.
    assert result["outcomes"] == {"success": result["expected"]}, result
    assert leader() == (holder, token), "leadership changed hands with nobody failing"
    leaders = [n for n in names if "is now the leader" in celery_processes.log(n)]
    assert leaders == [beat_of(celery_processes, holder)], leaders


def test_leader_killed_a_standby_takes_over_and_nothing_is_lost_or_doubled(celery_processes):
    job, key = ticking_job(misfire_grace_time=GRACE)
    celery_processes.start_worker()
    start_beats(celery_processes, 3)
    wait_for_successes(job, 3, celery_processes)
    before = lease_row()
    since = timezone.now().replace(microsecond=0)
    celery_processes.stop(beat_of(celery_processes, before.holder), sig=signal.SIGKILL)
    killed_at = timezone.now()
    # The dead leader's last renewal, unless a standby already took over (then the last one
    # seen before the kill, which is no later).
    after = lease_row()
    last = after if after.token == before.token else before
    taken = wait_for(
        lambda: (lease := lease_row()).token > before.token and lease,
        timeout=30,
        what="a standby to take over",
        processes=celery_processes,
    )
    # By the lease's own record: taken over once it had run out, never before (two
    # leaders), and soon after; measured from the kill, by the clocks that wrote the lease.
    print(f"HA takeover after kill -9 of the leader: {taken.acquired_at - killed_at} after")
    assert last.expires_at <= killed_at + LEASE
    assert last.expires_at <= taken.acquired_at <= last.expires_at + TAKEOVER_AFTER_EXPIRY
    assert taken.holder != before.holder
    wait_for(
        lambda: JobExecution.objects.filter(
            job=job, status="success", scheduled_at__gt=taken.acquired_at
        ).exists(),
        timeout=60,
        what="the new leader's first runs",
        processes=celery_processes,
    )
    until = timezone.now().replace(microsecond=0)
    result = settle(job, key, since, until, "leader beat kill -9", celery_processes)
    # The gap is shorter than the job's misfire grace: every fire time in it still ran.
    assert result["outcomes"] == {"success": result["expected"]}, result


def test_a_restarted_beat_reruns_neither_one_off_jobs_nor_sent_runs(celery_processes):
    job, key = ticking_job()
    once_key = "once-" + key
    once = services.job_schedule_delay(
        name="run-once", task="tests.count_runs", delay_seconds=2, kwargs={"key": once_key}
    )
    celery_processes.start_worker()
    celery_processes.start_beat("beat1")
    wait_for(
        lambda: (
            JobExecution.objects.filter(job=once, status="success").exists()
            and JobExecution.objects.filter(job=job, status="success").count() >= 3
        ),
        timeout=60,
        what="the one-off run and the first ticks",
        processes=celery_processes,
    )
    # From the job's first run on (not before: a fire time before it was created never was).
    since = JobExecution.objects.filter(job=job).order_by("scheduled_at")[0].scheduled_at
    for stop in (signal.SIGTERM, signal.SIGKILL):
        celery_processes.stop("beat1", sig=stop)
        restarted_at = timezone.now()
        celery_processes.start_beat("beat1")
        # The restarted beat has sent (after a kill, once the dead one's lease ran out).
        wait_for_a_run_after(job, restarted_at, celery_processes)
    until = timezone.now().replace(microsecond=0)
    settle(job, key, since, until, "beat restarted (TERM, then KILL)", celery_processes)
    assert JobExecution.objects.filter(job=once).count() == 1
    calls = Path(settings.VAR_DIR) / f"calls-{once_key}"
    assert calls.read_text().count("x") == 1, "the one-off function ran more than once"
