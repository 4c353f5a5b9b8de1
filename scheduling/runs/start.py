"""The start of a run: apply the rules (:mod:`scheduling.runs.rules`) under the job's row
lock and write the *running* row, or record why the run does not start.

The lock (``SELECT ... FOR UPDATE``; on SQLite the write lock) makes the rules hold
across every worker on every machine sharing the database. A second message for the
same fire time and attempt is dropped by the row's unique key, not by a query: every
outcome inserts the row of its fire time, so a duplicate fails on that insert and its
whole transaction (a coalesce mark, lost runs reaped, events) is rolled back. The one
exception: a message delivered again whose own run is on record as running with an
expired lease (it never ran: its worker died first) takes that run over.

A first attempt that the rules let start takes one round trip (:func:`_start_at_once`);
any other goes through :func:`_start_in_full`, which also records a refusal.
"""

import datetime as dt
import logging
from contextlib import nullcontext
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from scheduling import sql, stats
from scheduling.models import ExecutionStatus, ExecutionTrigger, Job, JobExecution
from scheduling.runs import rules
from scheduling.runs.events import announce
from scheduling.runs.lease import db_now, lease_term
from scheduling.runs.records import (
    NOT_RUN,
    covered_by_summary,
    execution_reap_lost,
    record_not_run,
)
from scheduling.task_results import TaskMessage, task_result_record

logger = logging.getLogger(__name__)


class JobNotFoundError(LookupError):
    """The job a message names does not exist (any more)."""


_RUNNING_SQL = f"""
    SELECT SUM(CASE WHEN {rules.LIVE_SQL} THEN 1 ELSE 0 END),
           SUM(CASE WHEN {rules.LIVE_SQL} THEN 0 ELSE 1 END),
           MIN(lease_until)
    FROM {JobExecution._meta.db_table} WHERE job_id = %s AND status = %s
"""


def _db_time(moment: dt.datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(moment)


def _running_query(job_id: int, now: dt.datetime) -> tuple[str, list[Any]]:
    """How many of the job's running rows hold a live lease at ``now``, how many have
    expired, and the earliest lease."""
    live = rules.live_params(_db_time(now))
    return _RUNNING_SQL, [*live, *live, job_id, ExecutionStatus.RUNNING]


def _lock_job(job_id: int) -> tuple[Job | None, int]:
    """Lock and read the job's row; return it with how many of its runs hold a live lease,
    after reaping those whose lease expired.

    The lock and the count are sent together (:func:`sql.row_get_with`: the count runs
    once the lock is held). The count compares the leases with the time the lock was
    asked for; if the earliest of them has expired by the time it was granted (the start
    waited for it), they are counted again.
    """
    job, [(live, expired, earliest)] = sql.row_get_with(
        Job, job_id, _running_query(job_id, db_now()), for_update=True
    )
    if job is None:
        return None, 0
    now = db_now()
    if live and sql.from_db(JobExecution, "lease_until", earliest) < now:
        with sql.cursor() as cursor:
            cursor.execute(*_running_query(job_id, now))
            live, expired, _earliest = cursor.fetchone()
    if expired:
        execution_reap_lost(job=job)
    return job, live or 0


def _same_run(
    *,
    job_id: int,
    trigger: str,
    scheduled_at: dt.datetime | None,
    attempt: int,
    task_id: str | None,
) -> Q:
    """The rows of this run: of its message (any trigger), or of its fire time (a
    scheduled run, whichever message carried it)."""
    same = Q(task_result_id=task_id) if task_id else Q(pk__in=[])
    if trigger == ExecutionTrigger.SCHEDULE:
        same |= Q(job_id=job_id, trigger=trigger, scheduled_at=scheduled_at)
    return same & Q(attempt=attempt)


_NOT_DEAD = object()


def _take_over_dead(
    *, job_id: int, same: Q, worker: str, task_id: str | None, message: TaskMessage | None
) -> Any:
    """The run of a message delivered again, on record as *running* with an expired lease:
    its worker died, or the start's answer was lost on the way back, before the function
    ran. Apply the rules to it now and run it (return it) or record why not (return
    ``None``), instead of dropping the message as a duplicate; ``_NOT_DEAD`` when the run
    on record is finished or alive elsewhere."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        now, lease_now = timezone.now(), db_now()
        dead = (
            JobExecution.objects.select_for_update()
            .filter(same, rules.expired_at(lease_now))
            .first()
        )
        if job is None or dead is None:
            return _NOT_DEAD
        live = JobExecution.objects.filter(rules.live_at(lease_now), job=job).count()
        decision = rules.decide(
            job, scheduled_at=dead.scheduled_at, late=_lateness(dead, now), live=live
        )
        dead.job = job
        if not decision.starts:
            dead.status, dead.reason = decision.status, decision.reason[:500]
            dead.finished_at, dead.lease_until = now, None
            dead.save(update_fields=["status", "reason", "finished_at", "lease_until"])
            if message is not None:
                task_result_record(message=message, result=NOT_RUN, started_at=now)
            stats.stats_record(execution=dead)
            announce(dead)
            return None
        _cover_due_fire_times(job, dead, now)
        dead.worker, dead.started_at, dead.lease_until = worker, now, lease_now + lease_term()
        dead.task_result_id = task_id or dead.task_result_id
        dead.save(update_fields=["worker", "started_at", "lease_until", "task_result"])
        logger.warning("Job %s: run %s of a dead worker taken over by %s", job, dead.pk, worker)
        announce(dead)
        return dead


def _cover_due_fire_times(job: Job, execution: JobExecution, now: dt.datetime) -> None:
    """A coalescing job's scheduled run covers every fire time due by ``now``: their
    messages will be coalesced."""
    if job.coalesce and execution.trigger == ExecutionTrigger.SCHEDULE and execution.scheduled_at:
        Job.objects.filter(pk=job.pk).update(
            coalesced_until=rules.latest_due_fire_time(job, execution.scheduled_at, now)
        )


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
    """Apply the rules; return the running execution, or ``None`` if it must not run.

    ``message`` is the Celery message, whose task result is written with the row when
    the run does not start (missed, skipped; a duplicate's only if it has none yet).
    """
    run = dict(
        trigger=trigger,
        scheduled_at=scheduled_at,
        jitter=jitter or None,
        worker=worker,
        task_result_id=task_id,
    )
    try:
        started = _start_at_once(job_id=job_id, **run) if attempt == 0 else None
        if started is not None and not rules.misfired(
            started.job, _lateness(started, timezone.now())
        ):
            announce(started)
            return started
        with transaction.atomic():
            if started is not None:
                # The start waited for the job's lock past the misfire grace: the full
                # start, in the same transaction, records it as missed instead.
                JobExecution.objects.filter(pk=started.pk).delete()
            return _start_in_full(job_id=job_id, attempt=attempt, message=message, **run)
    except IntegrityError:
        same = _same_run(
            job_id=job_id,
            trigger=trigger,
            scheduled_at=scheduled_at,
            attempt=attempt,
            task_id=task_id,
        )
        taken = _take_over_dead(
            job_id=job_id, same=same, worker=worker, task_id=task_id, message=message
        )
        if taken is not _NOT_DEAD:
            return taken
        if not JobExecution.objects.filter(same).exists():
            raise
    logger.warning("Job %s: run of %s delivered twice; dropped", job_id, scheduled_at)
    if message is not None:
        task_result_record(message=message, result=NOT_RUN, overwrite=False)
    return None


def _lateness(execution: JobExecution, now: dt.datetime) -> float | None:
    return rules.lateness(
        trigger=execution.trigger,
        scheduled_at=execution.scheduled_at,
        jitter=execution.jitter,
        attempt=execution.attempt,
        now=now,
    )


def _running_row(now: dt.datetime, **fields: Any) -> JobExecution:
    """A running row that starts at ``now`` with a fresh lease; ``fields`` are the run's."""
    return JobExecution(
        status=ExecutionStatus.RUNNING,
        started_at=now,
        lease_until=db_now() + lease_term(),
        **fields,
    )


def _start_at_once(*, job_id: int, **run: Any) -> JobExecution | None:
    """Start a first attempt in one transaction sent in one round trip, if the rules let
    it start; ``None`` when they may not (the full start then decides what to record).
    The caller announces the run, once it has checked that the wait for the job's lock
    did not take it past its misfire grace (the lateness sent is the one before it).

    The job's row is locked and read, its runs counted (for leases to reap) and the
    running row inserted only if :data:`rules.STARTS_WHERE` holds, all sent at once: each
    statement runs once the lock is held. A coalescing job never starts here: its run
    also marks the fire times it covers.
    """
    now, lease_now = timezone.now(), db_now()
    execution = _running_row(now, job_id=job_id, attempt=0, **run)
    late = _lateness(execution, now)
    insert = sql.insert_select(
        execution,
        source=f"{Job._meta.db_table} j",
        computed={"job": "j.id", "job_name": "j.name", "task": "j.task"},
        where=f"j.id = %s AND NOT j.coalesce AND {rules.STARTS_WHERE}",
        params=[
            job_id,
            *rules.starts_params(
                late=late,
                scheduled_at_in_db=_db_time(execution.scheduled_at)
                if execution.scheduled_at
                else None,
                now_in_db=_db_time(lease_now),
            ),
        ],
    )
    # Its own transaction; inside a caller's (a test's), a savepoint, so that a duplicate
    # leaves the caller's transaction usable, as the full start's atomic() does.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        job, [(_live, expired, _earliest), inserted] = sql.row_get_with(
            Job, job_id, _running_query(job_id, lease_now), insert, for_update=True
        )
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist (removed before it ran).")
    if inserted is None:
        return None
    if expired:
        with transaction.atomic():
            _lock_job(job_id)  # reaps the runs whose lease expired
    execution.job, execution.job_name, execution.task = job, job.name, job.task
    return sql.inserted(execution, inserted[0])


def _start_in_full(
    *, job_id: int, attempt: int, message: TaskMessage | None, **run: Any
) -> JobExecution | None:
    """Apply the rules under the job's lock and write the running row, or the row that
    records why the run does not start; inside the caller's transaction."""
    job, live = _lock_job(job_id)
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist (removed before it ran).")
    now = timezone.now()
    execution = _running_row(now, job=job, job_name=job.name, task=job.task, attempt=attempt, **run)
    decision = rules.decide(
        job, scheduled_at=execution.scheduled_at, late=_lateness(execution, now), live=live
    )
    if not decision.starts:
        if (
            decision.status == ExecutionStatus.MISSED
            and attempt == 0
            and execution.trigger == ExecutionTrigger.SCHEDULE
            and execution.scheduled_at is not None
            and covered_by_summary(job_id=job.pk, fire_time=execution.scheduled_at)
        ):
            # Beat recorded this fire time missed in a summary of an outage (a message
            # sent before it went down, delivered late): it is on record already.
            logger.warning("Job %s: run of %s already recorded missed; dropped", job, run)
            if message is not None:
                task_result_record(message=message, result=NOT_RUN, overwrite=False)
            return None
        record_not_run(
            job,
            decision.status,
            decision.reason,
            message,
            trigger=execution.trigger,
            scheduled_at=execution.scheduled_at,
            jitter=execution.jitter,
            attempt=attempt,
            worker=execution.worker,
            task_result_id=execution.task_result_id,
        )
        return None
    _cover_due_fire_times(job, execution, now)
    if attempt > 0 and execution.task_result_id:
        execution.retry_of = JobExecution.objects.filter(
            task_result_id=execution.task_result_id, attempt=0
        ).first()
    sql.row_insert(execution)
    announce(execution)
    return execution
