"""Leases: a running run's claim on its max-instances slot, kept alive while it runs.

A run's lease is set when it starts (``LEASE_SECONDS``) and renewed while the function
runs; a worker killed mid-run stops renewing, and once the lease has expired the run is
*lost* and its slot free (:func:`scheduling.runs.records.execution_reap_lost`). A run
asked to stop (*cancelling*) keeps its lease while its function is still going, without
holding its slot.
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
from scheduling.models import (
    IN_PROGRESS_STATUSES,
    STOPPED_STATUSES,
    ExecutionStatus,
    JobExecution,
    progress_text,
)
from scheduling.runs.context import PROGRESS_EVENT, RunContext

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
    run a fifth of its time to start and join).

    The same thread is how a run learns, through the database (so from any machine),
    that it was asked to stop: every ``CANCEL_CHECK_INTERVAL`` it reads which of its
    runs were asked to stop (one indexed query) and tells their run contexts
    (:meth:`RunContext.request_cancel`); and it writes the progress they reported.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, RunContext | None] = {}
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def add(self, pk: int, context: RunContext | None = None) -> None:
        with self._lock:
            self._running[pk] = context
            # After a fork (a prefork pool process) the parent's thread does not exist here.
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threads.start_daemon_thread(self._loop, "lease-renewer")

    def discard(self, pk: int) -> None:
        with self._lock:
            self._running.pop(pk, None)

    def _loop(self) -> None:
        renewed = time.monotonic()
        while True:
            interval = max(renewal_interval(conf.get("LEASE_SECONDS")), 0.5)
            tick = max(min(interval, conf.get("CANCEL_CHECK_INTERVAL") or interval), 0.1)
            time.sleep(tick)
            with self._lock:
                running = dict(self._running)
            try:
                if not running:
                    connection.close()  # this thread's own connection: none kept while idle
                    continue
                if time.monotonic() - renewed >= interval - tick / 2:
                    renewed = time.monotonic()
                    JobExecution.objects.filter(
                        pk__in=list(running), status__in=IN_PROGRESS_STATUSES
                    ).update(lease_until=db_now() + lease_term())
                contexts = {pk: c for pk, c in running.items() if c is not None}
                if contexts:
                    check_contexts(contexts)
            except (DatabaseError, InterfaceError):
                # The database may be back by the next round.
                logger.warning("Could not renew the leases of executions %s", list(running))
                connection.close()


#: A run in one of these was asked to stop (a run reaped as lost meanwhile is not).
STOP_ASKED_STATUSES = frozenset({ExecutionStatus.CANCELLING, *STOPPED_STATUSES})


def check_contexts(contexts: dict[int, RunContext]) -> None:
    """Tell the contexts of runs asked to stop, and write the progress reported."""
    for pk in JobExecution.objects.filter(
        pk__in=list(contexts), status__in=STOP_ASKED_STATUSES
    ).values_list("pk", flat=True):
        contexts[pk].request_cancel()
    for context in contexts.values():
        progress_write(context)


def progress_write(context: RunContext) -> None:
    """Write the progress ``context`` reported since the last write, if any, to its run
    and send it as a Celery task event (Flower shows it in the run's entry)."""
    pending = context.take_progress()
    if pending is None:
        return
    percent, message = pending
    JobExecution.objects.filter(pk=context.execution_id, status__in=IN_PROGRESS_STATUSES).update(
        progress=percent, progress_message=message
    )
    if context.task_id:
        _send_progress_event(context, percent, message)


def _send_progress_event(context: RunContext, percent: float | None, message: str) -> None:
    from celery import current_app

    try:
        with current_app.events.default_dispatcher(hostname=context.worker or None) as events:
            events.send(
                PROGRESS_EVENT,
                uuid=context.task_id,
                retry=False,
                progress=percent,
                progress_message=message,
                result=progress_text(percent, message),
            )
    except Exception as exc:  # the broker away: the progress is on the run all the same
        logger.warning("Could not send the progress of run %s: %s", context.execution_id, exc)


_renewer = LeaseRenewer()


@contextmanager
def lease_kept(execution: JobExecution, context: RunContext | None = None) -> Iterator[None]:
    """Keep ``execution``'s lease renewed while the block runs; tell ``context`` when
    the run is asked to stop, and write the progress it reports."""
    _renewer.add(execution.pk, context)
    try:
        yield
    finally:
        _renewer.discard(execution.pk)
