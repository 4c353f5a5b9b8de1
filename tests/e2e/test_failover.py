"""Failover cannot be blocked: a leader stopped, cut from the broker or cut from the database
loses the lease within its term, a standby sends within the term plus a second, and the
old leader sends nothing once its lease has run out; every fire time runs once.

The beats here import ``tests.e2e.sends``, which writes down when each message left
(and, with ``TEST_PUBLISH_SECONDS``, makes the broker slow to answer, so that a leader is
in the middle of a pass, holding its rows, most of the time: the moment a fault bites).
"""

import os
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from tests.e2e.netfaults import Namespace, StallingProxy
from tests.e2e.processes import database_url, wait_for
from tests.e2e.test_faults import ticking_job
from tests.e2e.test_high_availability import beat_of, leader, settle, wait_for_successes

pytestmark = [pytest.mark.e2e]
TERM = 5.0  # the default SCHEDULING_BEAT_LEASE_SECONDS
BOUND = TERM + 1.0  # from the fault to the standby's first send
GRACE = 30
JOBS = 3
NETWORK_BROKER = settings.CELERY_BROKER_URL.startswith(("redis://", "amqp://"))

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: on SQLite a process stopped inside a transaction holds the "
    "whole database's write lock, and a network link to cut needs a database server",
)


def beat_env(publish_seconds: float = 0.0, **more: str) -> dict[str, str]:
    return {
        "SCHEDULING_EXTRA_JOB_MODULES": "tests.jobs,tests.e2e.sends",
        "TEST_PUBLISH_SECONDS": str(publish_seconds),
        **more,
    }


def sends(pid: int) -> list[tuple[float, int, str]]:
    """(publish began, job id, fire time) of every message beat ``pid`` published."""
    path = Path(settings.VAR_DIR) / f"sends-{pid}"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        began, job_id, fire = line.split()
        rows.append((float(began), int(job_id), fire))
    return rows


def first_send_after(processes, name: str, moment: float) -> float:
    pid = processes.procs[name].pid
    return wait_for(
        lambda: next((began for began, *_ in sends(pid) if began > moment), None),
        timeout=30,
        what=f"{name} to send",
        processes=processes,
    )


def leader_in_a_pass() -> bool:
    """Whether a beat is inside its sending transaction, between publishes, holding the
    due rows: a session left idle in a transaction after selecting jobs (the text of that
    query is cut before its ``FOR UPDATE``), for longer than a worker's one-round-trip
    transactions ever are."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'idle in transaction' AND query LIKE 'SELECT%%scheduling_job%%'"
            " AND STATEMENT_TIMESTAMP() - state_change > INTERVAL '50 milliseconds'"
        )
        return cursor.fetchone()[0] > 0


def wait_for_the_leader(processes, name: str) -> None:
    wait_for(
        lambda: leader()[0].endswith(f":{processes.procs[name].pid}"),
        timeout=60,
        what=f"{name} to lead",
        processes=processes,
    )


def start_jobs(processes):
    jobs = [ticking_job(misfire_grace_time=GRACE) for _ in range(JOBS)]
    processes.start_worker()
    return jobs


def settle_all(jobs, since, fault, processes) -> None:
    until = timezone.now().replace(microsecond=0)
    for job, key in jobs:
        result = settle(job, key, since, until, fault, processes)
        # Shorter than the grace, the gap leaves every fire time run.
        assert result["outcomes"] == {"success": result["expected"]}, result


def report(fault: str, took: float) -> None:
    print(f"FAILOVER {fault:<40} standby's first send {took:5.2f}s after (bound {BOUND:g}s)")


@postgresql_only
def test_a_stopped_leader_is_replaced_and_sends_nothing_when_it_resumes(celery_processes):
    jobs = start_jobs(celery_processes)
    for name in ("beat1", "beat2"):
        celery_processes.start_beat(name, env=beat_env(publish_seconds=0.2))
    wait_for(lambda: leader()[0], timeout=60, what="a leader", processes=celery_processes)
    for job, _ in jobs:
        wait_for_successes(job, 2, celery_processes)
    since = timezone.now().replace(microsecond=0)
    old = beat_of(celery_processes, leader()[0])
    [standby] = {"beat1", "beat2"} - {old}
    pid = celery_processes.procs[old].pid
    wait_for(leader_in_a_pass, timeout=30, interval=0.01, what="the leader in a pass")
    os.killpg(pid, signal.SIGSTOP)
    stopped = time.time()
    try:
        took = first_send_after(celery_processes, standby, stopped) - stopped
        report("leader stopped (SIGSTOP) mid-pass", took)
        assert took <= BOUND
        time.sleep(max(0.0, stopped + TERM + 3 - time.time()))
    finally:
        os.killpg(pid, signal.SIGCONT)
    wait_for(
        lambda: "lost the lease" in celery_processes.log(old),
        timeout=30,
        what="the resumed beat to stand by",
        processes=celery_processes,
    )
    time.sleep(2)
    # Nothing can leave while stopped; nothing may leave after it resumed, its lease gone.
    assert [row for row in sends(pid) if row[0] >= stopped] == []
    close_old_connections()
    settle_all(jobs, since, "leader SIGSTOP mid-pass, SIGCONT", celery_processes)


@pytest.mark.skipif(
    not NETWORK_BROKER,
    reason="the embedded filesystem broker has no connection to cut (Redis or RabbitMQ only)",
)
def test_a_leader_cut_from_the_broker_hands_the_lease_over(celery_processes):
    jobs = start_jobs(celery_processes)
    broker = urlsplit(settings.CELERY_BROKER_URL)
    proxy = StallingProxy((broker.hostname, broker.port))
    try:
        celery_processes.start_beat(
            "beat1", env=beat_env(CELERY_BROKER_URL=proxy.url(settings.CELERY_BROKER_URL))
        )
        wait_for_the_leader(celery_processes, "beat1")
        celery_processes.start_beat("beat2", ready=True, env=beat_env())
        for job, _ in jobs:
            wait_for_successes(job, 2, celery_processes)
        since = timezone.now().replace(microsecond=0)
        proxy.stall()
        cut = time.time()
        took = first_send_after(celery_processes, "beat2", cut) - cut
        report("leader's broker link stalled", took)
        assert took <= BOUND
        time.sleep(3)
        # Nothing the cut-off leader "sent" after its term is real: none may have left.
        pid = celery_processes.procs["beat1"].pid
        assert [row for row in sends(pid) if row[0] >= cut + TERM] == []
        assert beat_of(celery_processes, leader()[0]) == "beat2"
        settle_all(jobs, since, "leader's broker link stalled", celery_processes)
    finally:
        proxy.close()


@pytest.fixture
def namespace():
    """A network namespace for one beat; removed after the test, even a failed one."""
    ns = Namespace(tag=str(os.getpid() % 100000))
    try:
        ns.create()
        yield ns
    finally:
        ns.remove()


@postgresql_only
def test_a_leader_cut_from_the_database_is_replaced(celery_processes, namespace):
    jobs = start_jobs(celery_processes)
    inside = {"DATABASE_URL": namespace.forward(database_url())}
    if NETWORK_BROKER:
        inside["CELERY_BROKER_URL"] = namespace.forward(settings.CELERY_BROKER_URL)
    celery_processes.start_beat(
        "beat1", env=beat_env(publish_seconds=0.2, **inside), prefix=namespace.prefix
    )
    wait_for_the_leader(celery_processes, "beat1")
    celery_processes.start_beat("beat2", ready=True, env=beat_env(publish_seconds=0.2))
    for job, _ in jobs:
        wait_for_successes(job, 2, celery_processes)
    since = timezone.now().replace(microsecond=0)
    wait_for(leader_in_a_pass, timeout=30, interval=0.01, what="the leader in a pass")
    namespace.cut(urlsplit(inside["DATABASE_URL"]).port)
    cut = time.time()
    took = first_send_after(celery_processes, "beat2", cut) - cut
    report("leader's database link cut mid-pass", took)
    assert took <= BOUND
    time.sleep(max(0.0, cut + TERM + 3 - time.time()))
    namespace.heal()
    wait_for(
        lambda: "lost the lease" in celery_processes.log("beat1"),
        timeout=30,
        what="the reconnected beat to stand by",
        processes=celery_processes,
    )
    pid = celery_processes.procs["beat1"].pid
    assert [row for row in sends(pid) if row[0] >= cut + TERM] == []
    close_old_connections()
    settle_all(jobs, since, "leader's database link cut mid-pass", celery_processes)


def test_the_network_fault_helpers_forward_and_stall():
    """The proxy forwards until stalled, and then neither answers nor closes."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        proxy = StallingProxy(server.getsockname())
        try:
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
            peer, _ = server.accept()
            client.sendall(b"ping")
            assert peer.recv(4) == b"ping"
            proxy.stall()
            client.sendall(b"lost")
            peer.settimeout(0.5)
            with pytest.raises(TimeoutError):
                peer.recv(4)
        finally:
            proxy.close()
