"""Leases: a running run's claim on its max-instances slot, kept alive while it runs.

A run's lease is set when it starts (``LEASE_SECONDS``) and renewed while the function
runs; a worker killed mid-run stops renewing, and once the lease has expired the run is
*lost* and its slot free (:func:`scheduling.runs.records.execution_reap_lost`).
"""

import datetime as dt
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, InterfaceError, connection
from django.utils import timezone

from scheduling import conf, threads
from scheduling.models import ExecutionStatus, JobExecution

logger = logging.getLogger(__name__)


def renewal_interval(term: float) -> float:
    """How often a lease of ``term`` seconds is renewed (a run's, or beat's): every third
    of its term, so that two renewals in a row may fail before it lapses."""
    return term / 3


_clock = {"offset": dt.timedelta(0), "measured": -math.inf}
CLOCK_CHECK_INTERVAL = 60.0


def db_now() -> dt.datetime:
    """Now by the database server's clock, which every worker shares: leases are written
    and compared by it, so a worker whose own clock is off neither reaps live runs nor
    keeps dead ones. The offset from this machine's clock is measured once a minute per
    process (one query); on SQLite every process runs on the database's machine."""
    if connection.vendor != "postgresql":
        return timezone.now()
    if time.monotonic() - _clock["measured"] >= CLOCK_CHECK_INTERVAL:
        from scheduling import sql

        with sql.cursor() as cursor:
            before = timezone.now()
            cursor.execute("SELECT STATEMENT_TIMESTAMP()")
            (server,) = cursor.fetchone()
            after = timezone.now()
        _clock["offset"] = server - (before + (after - before) / 2)
        _clock["measured"] = time.monotonic()
    return timezone.now() + _clock["offset"]


def lease_term() -> dt.timedelta:
    """How long a run's lease lasts from its start or its last renewal."""
    return dt.timedelta(seconds=conf.get("LEASE_SECONDS"))


class LeaseRenewer:
    """One thread per worker process renews the leases of the runs in progress in it,
    every :func:`renewal_interval`, in one statement (a thread per run would cost a short
    run a fifth of its time to start and join)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[int] = set()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def add(self, pk: int) -> None:
        with self._lock:
            self._running.add(pk)
            # After a fork (a prefork pool process) the parent's thread does not exist here.
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threads.start_daemon_thread(self._loop, "lease-renewer")

    def discard(self, pk: int) -> None:
        with self._lock:
            self._running.discard(pk)

    def _loop(self) -> None:
        while True:
            time.sleep(max(renewal_interval(conf.get("LEASE_SECONDS")), 0.5))
            with self._lock:
                running = list(self._running)
            try:
                if running:
                    JobExecution.objects.filter(
                        pk__in=running, status=ExecutionStatus.RUNNING
                    ).update(lease_until=db_now() + lease_term())
                else:
                    connection.close()  # this thread's own connection: none kept while idle
            except (DatabaseError, InterfaceError):
                # The database may be back by the next round.
                logger.warning("Could not renew the leases of executions %s", running)
                connection.close()


_renewer = LeaseRenewer()


@contextmanager
def lease_kept(execution: JobExecution) -> Iterator[None]:
    """Keep ``execution``'s lease renewed while the block runs."""
    _renewer.add(execution.pk)
    try:
        yield
    finally:
        _renewer.discard(execution.pk)
