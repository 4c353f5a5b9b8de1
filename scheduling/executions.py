"""Writes for runs: start (with the misfire, coalesce and max-instances rules), finish,
record missed fire times, and reclaim the slots of runs whose worker died.

How a scheduled message becomes a run, on the worker, in one short transaction that holds
the job's row lock (``SELECT ... FOR UPDATE``; on SQLite the write lock), so the rules hold
across every worker on every machine sharing the database:

1. a second message for the same fire time and attempt is dropped (unique key);
2. **misfire**: started later than fire time + jitter + ``misfire_grace_time`` → *missed*;
3. **coalesce**: the run that starts first after a backlog covers every fire time due by
   then; the messages of the fire times it covered are *missed* (coalesced), so a backlog
   of any length gives exactly one run;
4. **max instances**: as many runs as ``max_instances`` hold a live lease → *skipped*;
5. otherwise a *running* row with a lease, renewed by a thread while the function runs;
   a worker killed mid-run stops renewing, and once the lease expires the run is *lost*
   and its slot free (within ``LEASE_SECONDS``).

What a run costs matters as much as what it records: a worker must record hundreds of
short runs a second (``benchmarks/worker_throughput.py``), and on a worker a run's
statements cost less than the waits for their answers. A run is two transactions, each
sent to PostgreSQL in one round trip (:func:`rows.one_trip_transaction`):

- the start (:func:`_start_at_once`): lock and read the job, count its running rows (to
  reap the lost ones, when a lease has expired) and insert the running row only if rules
  2-5 let it run; rule 1 is the insert's unique key, not a query. When a rule says no,
  the full start (:func:`_start`) applies the rules again in a transaction of its own and
  records why (a missed, coalesced or skipped row);
- the finish: the execution's outcome, the Celery task result
  (:mod:`scheduling.task_results`, instead of the result backend), the day's statistics
  and the job's last run, with the read of the job's alert states for the run event.

Each is one plain statement (:mod:`scheduling.rows`): building them as querysets cost the
worker more than the database spent on them. ``tests/test_run_cost.py`` holds the counts
(2 round trips and 8 statements a run, from 10 and 12, and 26 statements before that).
"""

import asyncio
import datetime as dt
import json
import logging
import os
import threading
import time
import traceback as tb
from contextlib import contextmanager, nullcontext
from typing import Any

from celery import states
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    close_old_connections,
    connection,
    transaction,
)
from django.utils import timezone

from scheduling import alerts, conf, masking, registry, rows, signals, stats, threads
from scheduling.models import ExecutionStatus, ExecutionTrigger, Job, JobExecution
from scheduling.rows import row_insert, row_update
from scheduling.task_results import TaskMessage, task_result_record

logger = logging.getLogger(__name__)


class JobNotFoundError(LookupError):
    """The job a message names does not exist (any more)."""


class DatabaseUnavailable(Exception):
    """The run could not be started because the database did not answer; deliver it again."""


class RetryLater(Exception):
    """Raised to the Celery task when a failed attempt should be retried after ``countdown``."""

    def __init__(self, countdown: float, cause: BaseException) -> None:
        self.countdown = countdown
        self.cause = cause
        super().__init__(f"retry in {countdown:.1f}s after {type(cause).__name__}: {cause}")


def _announce(signal, execution: JobExecution, **extra: Any) -> None:
    """Send a run event once the execution row is committed."""
    transaction.on_commit(
        lambda: signal.send_robust(sender=JobExecution, execution=execution, **extra)
    )


STATUS_EVENTS = {
    ExecutionStatus.SUCCESS: signals.run_succeeded,
    ExecutionStatus.FAILURE: signals.run_failed,
    ExecutionStatus.TIMEOUT: signals.run_failed,
    ExecutionStatus.LOST: signals.run_failed,
    ExecutionStatus.MISSED: signals.run_missed,
    ExecutionStatus.SKIPPED: signals.run_skipped,
}


def _lease() -> dt.timedelta:
    return dt.timedelta(seconds=conf.get("LEASE_SECONDS"))


def execution_reap_lost(*, job: Job | None = None) -> int:
    """Mark running rows whose lease expired as lost (their worker died); return how many."""
    now = timezone.now()
    stale = JobExecution.objects.filter(status=ExecutionStatus.RUNNING, lease_until__lt=now)
    if job is not None:
        stale = stale.filter(job=job)
    lost = list(stale)
    for execution in lost:
        execution.status = ExecutionStatus.LOST
        execution.finished_at = execution.lease_until
        execution.reason = "The worker stopped renewing the run's lease (killed or cut off)."
        execution.save(update_fields=["status", "finished_at", "reason"])
        _announce(signals.run_failed, execution)
    return len(lost)


NOT_RUN = {"ran": False}


def _record(
    job: Job, status: str, reason: str, message: TaskMessage | None, **fields: Any
) -> JobExecution:
    """Record a fire time that does not run (missed, skipped) and its task's result."""
    now = timezone.now()
    execution = row_insert(
        JobExecution(
            job=job,
            job_name=job.name,
            task=job.task,
            status=status,
            reason=reason[:500],
            started_at=now,
            finished_at=now,
            **fields,
        )
    )
    if message is not None:
        task_result_record(message=message, result=NOT_RUN, started_at=now)
    logger.info("Job %s %s: %s", job.name, status, reason)
    _announce(STATUS_EVENTS[status], execution)
    return execution


_RUNNING_SQL = f"""
    SELECT SUM(CASE WHEN lease_until >= %s THEN 1 ELSE 0 END),
           SUM(CASE WHEN lease_until < %s THEN 1 ELSE 0 END),
           MIN(lease_until)
    FROM {JobExecution._meta.db_table} WHERE job_id = %s AND status = %s
"""


def _lock_job(job_id: int) -> tuple[Job | None, int]:
    """Lock and read the job's row; return it with how many of its runs hold a live lease,
    after reaping those whose lease expired.

    The lock and the count are sent together (:func:`rows.row_get_with`; the count runs
    once the lock is held), and the reap (a select, and an update per lost run) runs only
    when a lease has expired. The count compares the leases with the time the lock was
    asked for; if the earliest of them has expired by the time it was granted (the start
    waited for it), they are counted again.
    """
    job, [(live, expired, earliest)] = rows.row_get_with(
        Job, job_id, (_RUNNING_SQL, _running_params(job_id, timezone.now())), for_update=True
    )
    if job is None:
        return None, 0
    now = timezone.now()
    if live and rows.from_db(JobExecution, "lease_until", earliest) < now:
        with rows.cursor() as cursor:
            cursor.execute(_RUNNING_SQL, _running_params(job_id, now))
            live, expired, _earliest = cursor.fetchone()
    if expired:
        execution_reap_lost(job=job)
    return job, live or 0


def _db_time(moment: dt.datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(moment)


def _running_params(job_id: int, now: dt.datetime) -> list[Any]:
    at = _db_time(now)
    return [at, at, job_id, ExecutionStatus.RUNNING]


def _recorded(*, job_id: int, scheduled_at: dt.datetime | None, attempt: int) -> bool:
    return JobExecution.objects.filter(
        job_id=job_id,
        trigger=ExecutionTrigger.SCHEDULE,
        scheduled_at=scheduled_at,
        attempt=attempt,
    ).exists()


def execution_start(
    *,
    job_id: int,
    trigger: str,
    scheduled_at: dt.datetime | None,
    jitter: float,
    attempt: int,
    task_id: str | None,
    worker: str,
    message: TaskMessage | None = None,
) -> JobExecution | None:
    """Apply the rules above; return the running execution, or ``None`` if it must not run.

    Rule 1 is enforced by the unique key itself rather than by a query first: every
    outcome of rules 2-5 inserts the row of its fire time, so a duplicate fails on that
    insert and its whole transaction (a coalesce mark, lost runs reaped, events) is rolled
    back. ``message`` is the Celery message, whose task result is written with the row
    when the run does not start (missed, skipped; a duplicate's only if it has none yet).
    """
    run = dict(
        job_id=job_id,
        trigger=trigger,
        scheduled_at=scheduled_at,
        jitter=jitter,
        task_id=task_id,
        worker=worker,
    )
    try:
        started = _start_at_once(**run) if attempt == 0 else None
        if started is not None and not _misfired(started, timezone.now()):
            _announce(signals.run_started, started)
            return started
        with transaction.atomic():
            if started is not None:
                # The start waited for the job's lock past the misfire grace: the full
                # start, in the same transaction, records it as missed instead.
                JobExecution.objects.filter(pk=started.pk).delete()
            return _start(**run, attempt=attempt, message=message)
    except IntegrityError:
        duplicate = trigger == ExecutionTrigger.SCHEDULE and _recorded(
            job_id=job_id, scheduled_at=scheduled_at, attempt=attempt
        )
        if not duplicate:
            raise
    logger.warning("Job %s: fire time %s delivered twice; dropped", job_id, scheduled_at)
    if message is not None:
        task_result_record(message=message, result=NOT_RUN, overwrite=False)
    return None


# The rules of a run that starts, as one condition on the job's row (aliased j): not
# coalesced, within its misfire grace (the lateness is a parameter), a slot free.
_STARTS_WHERE = f"""
    j.id = %s AND NOT j.coalesce AND %s <= j.misfire_grace_time
    AND (SELECT COUNT(*) FROM {JobExecution._meta.db_table}
         WHERE job_id = j.id AND status = %s AND lease_until >= %s) < j.max_instances
"""


def _start_at_once(
    *,
    job_id: int,
    trigger: str,
    scheduled_at: dt.datetime | None,
    jitter: float,
    task_id: str | None,
    worker: str,
) -> JobExecution | None:
    """Start a first attempt in one transaction sent in one round trip, if every rule lets
    it run; return ``None`` when one may not (the full start then decides what to record).
    The caller announces the run, once it has checked that the wait for the job's lock
    did not take it past its misfire grace (the lateness sent is the one before it).

    The job's row is locked and read, its runs counted (for leases to reap) and the
    running row inserted only if the rules hold (:data:`_STARTS_WHERE`), all sent at once
    (:func:`rows.row_get_with`): each statement runs once the lock is held. Nothing is
    written when a rule says no, and the full start (:func:`_start`) applies the rules
    again under the lock and records why. A job that coalesces always takes that path:
    its run also marks the fire times it covers. A duplicate fails on the unique key here
    as it does there.
    """
    now = timezone.now()
    late = _lateness(trigger, scheduled_at, jitter, now)
    execution = JobExecution(
        job_id=job_id,
        status=ExecutionStatus.RUNNING,
        started_at=now,
        lease_until=now + _lease(),
        trigger=trigger,
        scheduled_at=scheduled_at,
        jitter=jitter or None,
        attempt=0,
        worker=worker,
        task_result_id=task_id,
    )
    insert = rows.insert_select(
        execution,
        source=f"{Job._meta.db_table} j",
        computed={"job": "j.id", "job_name": "j.name", "task": "j.task"},
        where=_STARTS_WHERE,
        params=[job_id, late or 0.0, ExecutionStatus.RUNNING, _db_time(now)],
    )
    # Its own transaction; inside a caller's (a test's), a savepoint, so that a duplicate
    # leaves the caller's transaction usable, as the full start's atomic() does.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        job, [(_live, expired, _earliest), inserted] = rows.row_get_with(
            Job, job_id, (_RUNNING_SQL, _running_params(job_id, now)), insert, for_update=True
        )
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist (removed before it ran).")
    if inserted is None:
        return None
    if expired:
        with transaction.atomic():
            _lock_job(job_id)  # reaps the runs whose lease expired
    execution.job, execution.job_name, execution.task = job, job.name, job.task
    return rows.inserted(execution, inserted[0])


def _lateness(
    trigger: str, scheduled_at: dt.datetime | None, jitter: float | None, now: dt.datetime
) -> float | None:
    """Seconds from a fire time (plus its jitter) to ``now``; ``None`` where rule 2 does
    not apply (a run not sent by the schedule)."""
    if trigger != ExecutionTrigger.SCHEDULE or scheduled_at is None:
        return None
    return (now - scheduled_at - dt.timedelta(seconds=jitter or 0)).total_seconds()


def _misfired(execution: JobExecution, now: dt.datetime) -> bool:
    """Whether the run of ``execution`` starting at ``now`` is past its misfire grace."""
    late = _lateness(execution.trigger, execution.scheduled_at, execution.jitter, now)
    return late is not None and late > execution.job.misfire_grace_time


def _start(
    *,
    job_id: int,
    trigger: str,
    scheduled_at: dt.datetime | None,
    jitter: float,
    attempt: int,
    task_id: str | None,
    worker: str,
    message: TaskMessage | None,
) -> JobExecution | None:
    common = {
        "trigger": trigger,
        "scheduled_at": scheduled_at,
        "jitter": jitter or None,
        "attempt": attempt,
        "worker": worker,
        "task_result_id": task_id,
    }
    job, running = _lock_job(job_id)
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist (removed before it ran).")
    now = timezone.now()
    late = _lateness(trigger, scheduled_at, jitter, now) if attempt == 0 else None
    if late is not None:
        if late > job.misfire_grace_time:
            _record(
                job,
                ExecutionStatus.MISSED,
                f"Started {late:.1f}s after its fire time; the grace is {job.misfire_grace_time}s.",
                message,
                **common,
            )
            return None
        if job.coalesce and job.coalesced_until and scheduled_at <= job.coalesced_until:
            _record(
                job,
                ExecutionStatus.MISSED,
                f"Coalesced into the run that covered fire times up to "
                f"{job.coalesced_until.isoformat()}.",
                message,
                **common,
            )
            return None
    if running >= job.max_instances:
        _record(
            job,
            ExecutionStatus.SKIPPED,
            f"{running} run(s) still going; max instances is {job.max_instances}.",
            message,
            **common,
        )
        return None
    if job.coalesce and trigger == ExecutionTrigger.SCHEDULE and scheduled_at is not None:
        # This run covers every fire time due by now: their messages will be coalesced.
        Job.objects.filter(pk=job.pk).update(
            coalesced_until=_latest_due_fire_time(job, scheduled_at, now)
        )
    first = None
    if attempt > 0 and task_id:
        first = JobExecution.objects.filter(task_result_id=task_id, attempt=0).first()
    execution = row_insert(
        JobExecution(
            job=job,
            job_name=job.name,
            task=job.task,
            status=ExecutionStatus.RUNNING,
            started_at=now,
            lease_until=now + _lease(),
            retry_of=first,
            **common,
        )
    )
    _announce(signals.run_started, execution)
    return execution


def _latest_due_fire_time(job: Job, scheduled_at: dt.datetime, now: dt.datetime) -> dt.datetime:
    """The newest fire time of ``job`` at or before ``now`` (at least ``scheduled_at``)."""
    latest = scheduled_at
    try:
        trigger = job.trigger()
    except ValueError:
        return latest
    for _ in range(100_000):
        following = trigger.next_after(latest)
        if following is None or following > now:
            break
        latest = following
    return latest


class _LeaseRenewer:
    """One thread per worker process renews the leases of the runs in progress in it.

    A run's lease is set when it starts (``LEASE_SECONDS``); this thread extends the lease
    of every run still going, every third of it, in one statement. (A thread per run did the
    same, but starting and joining it was a fifth of the cost of a short run.)
    """

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
            time.sleep(max(conf.get("LEASE_SECONDS") / 3, 0.5))
            with self._lock:
                running = list(self._running)
            try:
                if running:
                    JobExecution.objects.filter(
                        pk__in=running, status=ExecutionStatus.RUNNING
                    ).update(lease_until=timezone.now() + _lease())
                else:
                    connection.close()  # this thread's own connection: none kept while idle
            except (DatabaseError, InterfaceError):
                # The database may be back by the next round.
                logger.warning("Could not renew the leases of executions %s", running)
                connection.close()


_lease_renewer = _LeaseRenewer()


@contextmanager
def _lease_keeper(execution: JobExecution):
    """Keep the run's lease renewed while the function runs."""
    _lease_renewer.add(execution.pk)
    try:
        yield
    finally:
        _lease_renewer.discard(execution.pk)


def _call(task: registry.RegisteredTask, job: Job) -> Any:
    args, kwargs = list(job.args or []), dict(job.kwargs or {})
    if task.is_async:
        # A fresh event loop per run, in the worker process: never the web server's loop.
        # The soft limit is enforced inside the loop, so the coroutine is cancelled cleanly.
        coroutine = task.func(*args, **kwargs)
        if job.soft_time_limit:
            coroutine = asyncio.wait_for(coroutine, timeout=job.soft_time_limit)
        try:
            return asyncio.run(coroutine)
        except TimeoutError as exc:
            raise SoftTimeLimitExceeded(f"soft time limit ({job.soft_time_limit}s)") from exc
    return task.func(*args, **kwargs)


def _should_retry(job: Job, exc: BaseException, attempt: int) -> bool:
    if attempt >= job.max_retries or isinstance(exc, SoftTimeLimitExceeded):
        return False
    if not job.retry_on:
        return True
    names = set(job.retry_on)
    return any(
        cls.__name__ in names or f"{cls.__module__}.{cls.__qualname__}" in names
        for cls in type(exc).__mro__
    )


def retry_countdown(job: Job, attempt: int) -> float:
    """Exponential backoff from ``retry_backoff``, capped, with full jitter if enabled."""
    return float(
        get_exponential_backoff_interval(
            factor=job.retry_backoff,
            retries=attempt,
            maximum=job.retry_backoff_max,
            full_jitter=job.retry_jitter,
        )
    )


def execution_run(
    *,
    job_id: int,
    trigger: str,
    scheduled_at: dt.datetime | None,
    task_id: str | None,
    worker: str,
    jitter: float = 0.0,
    attempt: int = 0,
    message: TaskMessage | None = None,
) -> Any:
    """Run one execution of a job on this worker and record it, whatever happens.

    The task name is looked up in the registry again here: a job whose task is not (or
    no longer) registered is recorded as failed with the reason, and nothing runs.
    Exceptions are re-raised after recording, so Celery's result shows the failure too;
    a failure that should be retried raises :class:`RetryLater` instead. The Celery task
    result of ``message`` (by default one built from ``task_id``) is written here too,
    in the same transaction as the execution row's outcome.
    """
    if message is None and task_id:
        message = TaskMessage(task_id=task_id, worker=worker)
    try:
        execution = execution_start(
            job_id=job_id,
            trigger=trigger,
            scheduled_at=scheduled_at,
            jitter=jitter,
            attempt=attempt,
            task_id=task_id,
            worker=worker,
            message=message,
        )
    except (DatabaseError, InterfaceError) as exc:
        close_old_connections()
        raise DatabaseUnavailable(f"Could not start job {job_id}: {exc}") from exc
    except JobNotFoundError as exc:
        if message is not None:
            task_result_record(message=message, state=states.FAILURE, error=exc)
        raise
    if execution is None:
        return NOT_RUN
    job = execution.job
    clock = time.perf_counter()
    try:
        with _lease_keeper(execution):
            task = registry.get_task(job.task)
            value = _call(task, job)
    except SoftTimeLimitExceeded as exc:
        _finish(
            execution,
            clock,
            ExecutionStatus.TIMEOUT,
            message=message,
            error=exc,
            exception=f"Timed out: {exc}",
            traceback=tb.format_exc(),
            reason="Over its soft time limit.",
        )
        raise
    except Exception as exc:
        retry = _should_retry(job, exc, attempt)
        _finish(
            execution,
            clock,
            ExecutionStatus.FAILURE,
            message=message,
            error=exc,
            retrying=retry,
            exception=f"{type(exc).__name__}: {exc}",
            traceback=tb.format_exc(),
        )
        if retry:
            raise RetryLater(retry_countdown(job, attempt), exc) from exc
        raise
    returned = _jsonable(value)
    _finish(
        execution,
        clock,
        ExecutionStatus.SUCCESS,
        message=message,
        value=returned,
        result=_summary(value),
    )
    return returned


def execution_mark_timed_out(*, task_id: str, limit: float) -> int:
    """Called by the worker's main process when it killed a run over its hard limit; the
    run's task result records the ``TimeLimitExceeded`` too."""
    close_old_connections()
    now = timezone.now()
    updated = 0
    error = TimeLimitExceeded(limit)
    for execution in JobExecution.objects.filter(
        task_result_id=task_id, status=ExecutionStatus.RUNNING
    ):
        execution.status = ExecutionStatus.TIMEOUT
        execution.finished_at = now
        execution.duration = (now - execution.started_at).total_seconds()
        execution.exception = f"TimeLimitExceeded: killed after its hard time limit ({limit}s)"
        execution.reason = "Over its hard time limit; the worker process was replaced."
        with transaction.atomic():
            execution.save(
                update_fields=["status", "finished_at", "duration", "exception", "reason"]
            )
            _update_job_last(execution)
            task_result_record(
                message=TaskMessage(
                    task_id=task_id, worker=execution.worker, periodic_task_name=execution.job_name
                ),
                state=states.FAILURE,
                error=error,
                started_at=execution.started_at,
            )
            _announce(signals.run_failed, execution)
        updated += 1
    return updated


def _summary(value: Any) -> str:
    limit = conf.get("RESULT_SUMMARY_MAX_CHARS")
    try:
        text = json.dumps(masking.mask(value), ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _jsonable(value: Any) -> Any:
    """What Celery's result store gets: JSON, with secrets masked."""
    value = masking.mask(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _finish(
    execution: JobExecution,
    clock: float,
    status: str,
    *,
    message: TaskMessage | None,
    value: Any = None,
    error: BaseException | None = None,
    retrying: bool = False,
    **outcome: str,
) -> None:
    """Record how the run ended — the execution row, the Celery task result (``RETRY``
    while attempts remain), the day's statistics and the job's last run — in one
    transaction, sent to PostgreSQL in one round trip (:func:`rows.one_trip_transaction`:
    nothing in it is read back but the job's alert states, which the run event carries to
    the alerts). The run event goes out once that is committed, outside it.
    """
    execution.duration = time.perf_counter() - clock
    execution.finished_at = execution.started_at + dt.timedelta(seconds=execution.duration)
    execution.status = status
    execution.lease_until = None
    for name, text in outcome.items():
        setattr(execution, name, text)
    state = states.SUCCESS if error is None else states.RETRY if retrying else states.FAILURE
    with rows.cursor() as firing:
        with rows.one_trip_transaction():
            row_update(
                JobExecution,
                execution.pk,
                duration=execution.duration,
                finished_at=execution.finished_at,
                status=status,
                lease_until=None,
                **outcome,
            )
            if message is not None:
                task_result_record(
                    message=message,
                    state=state,
                    result=value,
                    error=error,
                    traceback=outcome.get("traceback"),
                    started_at=execution.started_at,
                )
            stats.stats_record(execution=execution)
            # The alerts' reading for the run event below, sent along instead of after.
            firing.execute(*alerts.firing_query(execution.job_id))
            # Last: the job's row stays locked (against the next run's start) until the commit.
            _update_job_last(execution)
        firing_alerts = alerts.firing_read(firing)
    _announce(STATUS_EVENTS[status], execution, firing_alerts=firing_alerts)
    logger.info("Job %s %s in %.3fs", execution.job_name, status, execution.duration)


def _update_job_last(execution: JobExecution) -> None:
    row_update(
        Job,
        execution.job_id,
        increment=["total_run_count"],
        last_run_at=execution.started_at,
        last_status=execution.status,
        last_duration=execution.duration,
    )


def execution_record_missed(*, job: Job, fire_times: list[dt.datetime], reason: str) -> int:
    """Record fire times beat did not send (it was down, or they were coalesced)."""
    if not fire_times:
        return 0
    now = timezone.now()
    rows = [
        JobExecution(
            job=job,
            job_name=job.name,
            task=job.task,
            trigger=ExecutionTrigger.SCHEDULE,
            status=ExecutionStatus.MISSED,
            scheduled_at=fire_time,
            started_at=now,
            finished_at=now,
            reason=reason[:500],
        )
        for fire_time in fire_times
    ]
    new = _not_yet_recorded(job, rows)
    JobExecution.objects.bulk_create(new, ignore_conflicts=True)
    for execution in new:
        _announce(signals.run_missed, execution)
    logger.warning("Job %s: %d fire time(s) missed: %s", job.name, len(rows), reason)
    return len(new)


def _not_yet_recorded(job: Job, rows: list[JobExecution]) -> list[JobExecution]:
    recorded = set(
        JobExecution.objects.filter(
            job=job,
            trigger=ExecutionTrigger.SCHEDULE,
            attempt=0,
            scheduled_at__in=[row.scheduled_at for row in rows],
        ).values_list("scheduled_at", flat=True)
    )
    return [row for row in rows if row.scheduled_at not in recorded]
