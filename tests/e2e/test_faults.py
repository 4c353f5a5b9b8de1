"""Fault injection with real processes: nothing runs twice, nothing is lost unexplained.

Each test injects one fault while a job fires every second, then accounts for every fire
time in the window (``tests/e2e/faults.py``). ``scripts/fault-report`` runs this module and
prints the table. Restarting Redis or PostgreSQL needs ``FAULT_INJECTION_SERVICES=1`` (set
by ``.ci/run``), as it restarts the machine's own servers.
"""

import datetime as dt
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from scheduling.models import JobExecution
from tests.e2e.faults import account, report_line
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]
SERVICES = os.environ.get("FAULT_INJECTION_SERVICES") == "1"


def ticking_job(**fields):
    key = uuid.uuid4().hex
    fields.setdefault("misfire_grace_time", 5)
    job = make_job(
        task="tests.count_runs",
        cron_expression="*/1 * * * * *",
        kwargs={"key": key, "seconds": fields.pop("seconds", 0)},
        **fields,
    )
    return job, key


def settle_and_account(job, key, since, until, fault, processes):
    # Everything sent by ``until`` has been run or accounted for once the grace and the
    # in-flight ledger margin have passed; a duplicate has had that long to show too. On a
    # loaded machine the records may take longer: wait for them, then count.
    time.sleep(job.misfire_grace_time + 16)
    close_old_connections()
    try:
        wait_for(
            lambda: account(job, key, since, until)["unexplained"] == 0,
            timeout=60,
            what="every fire time in the window to be run or recorded",
            processes=processes,
        )
    except AssertionError as exc:
        result = account(job, key, since, until)
        raise AssertionError(f"{report_line(fault, result)} {result['unexplained_times']}") from exc
    result = account(job, key, since, until)
    line = report_line(fault, result)
    print(line)
    assert result["duplicates"] == 0, line
    assert result["unexplained"] == 0, (
        line,
        result["unexplained_times"],
        {n: processes.log(n)[-2000:] for n in processes.procs},
    )
    assert result["inconsistent"] == [], (line, result["inconsistent"])
    return result


def wait_for_a_run_after(job, moment, processes) -> None:
    """Wait until a fire time after ``moment`` has run: the restarted process serves."""
    wait_for(
        lambda: JobExecution.objects.filter(
            job=job, status="success", scheduled_at__gt=moment
        ).exists(),
        timeout=60,
        what="a run after the restart",
        processes=processes,
    )


def start(processes, **worker_env):
    processes.start_worker(env=worker_env or None)
    processes.start_beat()


def test_worker_killed_mid_run(celery_processes):
    job, key = ticking_job(seconds=2.5, max_instances=1)
    lease = {"SCHEDULING_LEASE_SECONDS": "3"}
    start(celery_processes, **lease)
    wait_for(
        lambda: JobExecution.objects.filter(job=job, status="running").exists(),
        timeout=60,
        what="a run in progress",
        processes=celery_processes,
    )
    since = timezone.now().replace(microsecond=0)
    celery_processes.stop("w1", sig=signal.SIGKILL)
    time.sleep(5)
    celery_processes.start_worker(env=lease)
    wait_for_a_run_after(job, since, celery_processes)
    until = timezone.now().replace(microsecond=0)
    result = settle_and_account(job, key, since, until, "worker kill -9 mid-run", celery_processes)
    assert JobExecution.objects.filter(job=job, status="lost").exists()
    assert result["outcomes"].get("success", 0) >= 1


def test_beat_stopped_for_thirty_seconds(celery_processes):
    job, key = ticking_job()
    start(celery_processes)
    wait_for(
        lambda: JobExecution.objects.filter(job=job, status="success").count() >= 2,
        timeout=60,
        what="first runs",
        processes=celery_processes,
    )
    since = timezone.now().replace(microsecond=0)
    celery_processes.stop("beat")
    time.sleep(30)
    restarted_at = timezone.now()
    celery_processes.start_beat()
    wait_for_a_run_after(job, restarted_at, celery_processes)
    until = timezone.now().replace(microsecond=0)
    result = settle_and_account(job, key, since, until, "beat stopped 30 s", celery_processes)
    assert result["outcomes"].get("missed", 0) >= 20


@pytest.mark.skipif(
    not SERVICES
    or not settings.CELERY_BROKER_URL.startswith("redis://")
    or not shutil.which("redis-server"),
    reason="needs the Redis broker and FAULT_INJECTION_SERVICES=1",
)
def test_redis_restarted_while_jobs_fire(celery_processes):
    job, key = ticking_job()
    start(celery_processes)
    wait_for(
        lambda: JobExecution.objects.filter(job=job, status="success").count() >= 2,
        timeout=60,
        what="first runs",
        processes=celery_processes,
    )
    since = timezone.now().replace(microsecond=0)
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], check=False)
    time.sleep(5)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
        check=True,
    )
    time.sleep(10)
    until = timezone.now().replace(microsecond=0)
    wait_for(
        lambda: JobExecution.objects.filter(
            job=job, status="success", scheduled_at__gt=until
        ).exists(),
        timeout=60,
        what="runs after Redis came back",
        processes=celery_processes,
    )
    settle_and_account(job, key, since, until, "Redis restarted (5 s down)", celery_processes)


@pytest.mark.skipif(
    not SERVICES or connection.vendor != "postgresql" or not shutil.which("pg_ctlcluster"),
    reason="needs PostgreSQL and FAULT_INJECTION_SERVICES=1",
)
def test_postgres_restarted_while_jobs_fire(celery_processes):
    job, key = ticking_job()
    start(celery_processes)
    wait_for(
        lambda: JobExecution.objects.filter(job=job, status="success").count() >= 2,
        timeout=60,
        what="first runs",
        processes=celery_processes,
    )
    since = timezone.now().replace(microsecond=0)
    version = sorted(os.listdir("/etc/postgresql"))[0]
    connection.close()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True
    )
    time.sleep(10)
    until = timezone.now().replace(microsecond=0)
    close_old_connections()
    wait_for(
        lambda: JobExecution.objects.filter(
            job=job, status="success", scheduled_at__gt=until
        ).exists(),
        timeout=60,
        what="runs after PostgreSQL came back",
        processes=celery_processes,
    )
    settle_and_account(job, key, since, until, "PostgreSQL restarted", celery_processes)


def test_accounting_notices_a_lost_fire_time(transactional_db):
    """The check itself can fail: a fire time with no row is counted as unexplained."""
    job, key = ticking_job()
    since = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=3)
    result = account(job, key, since, since + dt.timedelta(seconds=2))
    # [since, since + 2 s] holds three whole seconds, both ends included; none has a row.
    assert result["expected"] == 3 and result["unexplained"] == 3
