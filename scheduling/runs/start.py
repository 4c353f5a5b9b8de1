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
from scheduling.models import ExecutionStatus, ExecutionTrigger, Job, JobExecution, JobGroup
from scheduling.runs import groups, rules, waiting
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
    SELECT SUM(CASE WHEN {rules.SLOT_SQL} THEN 1 ELSE 0 END),
           SUM(CASE WHEN status = %s AND lease_until < %s THEN 1 ELSE 0 END),
           MIN(CASE WHEN status = %s THEN lease_until END),
           SUM(CASE WHEN status = %s THEN 1 ELSE 0 END)
    FROM {JobExecution._meta.db_table} WHERE job_id = %s AND status IN (%s, %s, %s)
"""


def _db_time(moment: dt.datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(moment)


def _running_query(job_id: int, now: dt.datetime) -> tuple[str, list[Any]]:
    """How many of the job's runs hold a slot at ``now`` (:data:`rules.SLOT_SQL`), how
    many running ones have an expired lease, the earliest lease of a running one, and
    how many wait for a slot."""
    at = _db_time(now)
    running, queued, waiting = (
        ExecutionStatus.RUNNING,
        ExecutionStatus.QUEUED,
        ExecutionStatus.WAITING,
    )
    return _RUNNING_SQL, [
        *rules.slot_params(at),
        running,
        at,
        running,
        waiting,
        job_id,
        running,
        queued,
        waiting,
    ]


def lock_job(job_id: int) -> tuple[Job | None, int, int]:
    """Lock and read the job's row; return it with how many of its runs hold a slot
    (:data:`rules.SLOT_SQL`) and how many wait for one, after reaping those whose lease
    expired.

    The lock and the count are sent together (:func:`sql.row_get_with`: the count runs
    once the lock is held). The count compares the leases with the time the lock was
    asked for; if the earliest of them has expired by the time it was granted (the start
    waited for it), they are counted again.
    """
    job, [(live, expired, earliest, waiting)] = sql.row_get_with(
        Job, job_id, _running_query(job_id, db_now()), for_update=True
    )
    if job is None:
        return None, 0, 0
    now = db_now()
    if earliest is not None and sql.from_db(JobExecution, "lease_until", earliest) < now:
        with sql.cursor() as cursor:
            cursor.execute(*_running_query(job_id, now))
            live, expired, _earliest, waiting = cursor.fetchone()
    if expired:
        execution_reap_lost(job=job)
    return job, live or 0, waiting or 0


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
    *,
    job_id: int,
    same: Q,
    worker: str,
    task_id: str | None,
    message: TaskMessage | None,
    overlap: str | None,
) -> Any:
    """The run of a message delivered again, on record as *running* with an expired lease:
    its worker died, or the start's answer was lost on the way back, before the function
    ran. Apply the rules to it now and run it (return it) or record why not (return
    ``None``), instead of dropping the message as a duplicate; ``_NOT_DEAD`` when the run
    on record is finished or alive elsewhere."""
    with transaction.atomic():
        group = groups.lock_group(job_id)
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        now, lease_now = timezone.now(), db_now()
        dead = (
            JobExecution.objects.select_for_update()
            .filter(same, rules.expired_at(lease_now))
            .first()
        )
        if job is None or dead is None:
            return _NOT_DEAD
        runs = JobExecution.objects.filter(job=job)
        decision = _decide(
            job,
            dead,
            live=runs.filter(rules.slot_at(lease_now)).count(),
            waiting=runs.filter(status=ExecutionStatus.WAITING).count(),
            overlap=overlap,
            group=group,
        )
        dead.job = job
        if decision.waits:
            dead.status, dead.reason = decision.status, decision.reason[:500]
            dead.waiting_since, dead.lease_until = now, None
            dead.save(update_fields=["status", "reason", "waiting_since", "lease_until"])
            announce(dead)
            return None
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
        setattr(dead, groups.CAPPED, group is not None)
        logger.warning("Job %s: run %s of a dead worker taken over by %s", job, dead.pk, worker)
        announce(dead)
        return dead


def _take_queued(*, job_id: int, same: Q, worker: str, task_id: str | None) -> Any:
    """The run of a message sent after it waited (*queued*, :mod:`scheduling.runs.waiting`):
    start it in the slot kept for it, without applying the rules again (they let it wait,
    and the wait does not count against its misfire grace); ``None`` when this message's
    run is not queued. The conditional claim (queued → running, under the row's lock)
    starts it once, however many copies of its message arrive."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        queued = (
            JobExecution.objects.select_for_update()
            .filter(same, status=ExecutionStatus.QUEUED)
            .first()
        )
        if job is None or queued is None:
            return None
        now = timezone.now()
        waited = (now - (queued.waiting_since or now)).total_seconds()
        queued.job, queued.status, queued.worker = job, ExecutionStatus.RUNNING, worker
        queued.started_at, queued.lease_until = now, db_now() + lease_term()
        queued.reason = f"Waited {waited:.1f}s for a free slot."
        queued.task_result_id = task_id or queued.task_result_id
        queued.save(
            update_fields=["status", "worker", "started_at", "lease_until", "reason", "task_result"]
        )
        announce(queued)
        return queued


def _cover_due_fire_times(job: Job, execution: JobExecution, now: dt.datetime) -> None:
    """A coalescing job's scheduled run covers every fire time due by ``now``: their
    messages will be coalesced."""
    if job.coalesce and execution.trigger == ExecutionTrigger.SCHEDULE and execution.scheduled_at:
        Job.objects.filter(pk=job.pk).update(
            coalesced_until=rules.latest_due_fire_time(job, execution.scheduled_at, now)
        )


def _decide(
    job: Job,
    execution: JobExecution,
    *,
    live: int,
    waiting: int,
    overlap: str | None,
    group: rules.GroupSlots | None = None,
) -> rules.Decision:
    """The rules' decision on ``execution`` now (``group``: the slots of its job's group,
    if it caps its runs); one that needs the runs going to be cancelled or terminated first
    (overlap policies cancel other and terminate other) has them asked to stop here, in the
    caller's transaction."""
    decision = rules.decide(
        job,
        scheduled_at=execution.scheduled_at,
        late=_lateness(execution),
        live=live,
        waiting=waiting,
        overlap=overlap,
        retry=execution.attempt > 0,
        scheduled=execution.trigger == ExecutionTrigger.SCHEDULE,
        group=group,
    )
    if decision.others is not None:
        _stop_others(job, execution, terminate=decision.others == rules.Others.TERMINATE)
    return decision


def _stop_others(job: Job, execution: JobExecution, *, terminate: bool) -> None:
    """Cancel (or terminate) the runs of ``job`` that hold a slot, for ``execution``."""
    from scheduling.runs.cancel import stop_request

    actor = rules.TERMINATE_OTHER_ACTOR if terminate else rules.CANCEL_OTHER_ACTOR
    reason = (
        f"the run of {(execution.scheduled_at or execution.started_at).isoformat()} takes its place"
    )
    for other in JobExecution.objects.filter(rules.live_at(db_now()), job=job):
        stop_request(execution=other, terminate=terminate, actor=actor, reason=reason)
    if terminate:
        # A run sent after waiting holds a slot too: it never starts (its message, when it
        # comes, finds it skipped and is dropped).
        JobExecution.objects.filter(job=job, status=ExecutionStatus.QUEUED).update(
            status=ExecutionStatus.SKIPPED,
            reason=f"Dropped by {actor}: {reason}"[:500],
            finished_at=timezone.now(),
            lease_until=None,
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
    overlap: str | None = None,
    **origin: Any,
) -> JobExecution | None:
    """Apply the rules; return the running execution, or ``None`` if it must not run
    (now: it may wait for a free slot, :mod:`scheduling.runs.waiting`). ``origin``: the
    run's own fields of a run not sent by the schedule (``sent_at``, ``parent_id``,
    ``backfill_id``, ``kwargs``), stored on every row recorded for it.

    ``message`` is the Celery message, whose task result is written with the row when
    the run does not start (missed, skipped; a duplicate's only if it has none yet; a
    waiting run's once it has run). ``overlap`` overrides the job's overlap policy for
    this run (run now with an override).
    """
    run = dict(
        trigger=trigger,
        scheduled_at=scheduled_at,
        jitter=jitter or None,
        worker=worker,
        task_result_id=task_id,
        **{name: value for name, value in origin.items() if value is not None},
    )
    try:
        started = _start_at_once(job_id=job_id, overlap=overlap, **run) if attempt == 0 else None
        if started is not None and not rules.misfired(started.job, _lateness(started)):
            announce(started)
            return started
        with transaction.atomic():
            if started is not None:
                # The start waited for the job's lock past the misfire grace: the full
                # start, in the same transaction, records it as missed instead.
                JobExecution.objects.filter(pk=started.pk).delete()
            return _start_in_full(
                job_id=job_id, attempt=attempt, message=message, overlap=overlap, **run
            )
    except IntegrityError:
        same = _same_run(
            job_id=job_id,
            trigger=trigger,
            scheduled_at=scheduled_at,
            attempt=attempt,
            task_id=task_id,
        )
        queued = _take_queued(job_id=job_id, same=same, worker=worker, task_id=task_id)
        if queued is not None:
            return queued
        taken = _take_over_dead(
            job_id=job_id,
            same=same,
            worker=worker,
            task_id=task_id,
            message=message,
            overlap=overlap,
        )
        if taken is not _NOT_DEAD:
            return taken
        if not JobExecution.objects.filter(same).exists():
            raise
    logger.warning("Job %s: run of %s delivered twice; dropped", job_id, scheduled_at)
    if message is not None:
        task_result_record(message=message, result=NOT_RUN, overwrite=False)
    return None


def _lateness(execution: JobExecution) -> float | None:
    """How late ``execution`` starts, read on the database's clock, as leases are: the
    clocks of the worker that starts it and of whoever sent it may be off."""
    return rules.lateness(
        trigger=execution.trigger,
        scheduled_at=execution.scheduled_at,
        jitter=execution.jitter,
        attempt=execution.attempt,
        now=db_now(),
        sent_at=execution.sent_at,
    )


#: The fields of a run that say where it came from, beyond its trigger (a run not sent by
#: the schedule): copied onto whatever row records it.
ORIGIN_FIELDS = ("sent_at", "parent_id", "backfill_id", "kwargs")


def _running_row(now: dt.datetime, **fields: Any) -> JobExecution:
    """A running row that starts at ``now`` with a fresh lease; ``fields`` are the run's."""
    return JobExecution(
        status=ExecutionStatus.RUNNING,
        started_at=now,
        lease_until=db_now() + lease_term(),
        **fields,
    )


#: The job's group (if it has a row) does not cap its runs.
_UNCAPPED_WHERE = f"""NOT EXISTS (
    SELECT 1 FROM {JobGroup._meta.db_table} g
    WHERE g.name = j.{connection.ops.quote_name("group")} AND g.max_instances IS NOT NULL)"""


def _start_at_once(*, job_id: int, overlap: str | None, **run: Any) -> JobExecution | None:
    """Start a first attempt in one transaction sent in one round trip, if the rules let
    it start; ``None`` when they may not (the full start then decides what to record).
    The caller announces the run, once it has checked that the wait for the job's lock
    did not take it past its misfire grace (the lateness sent is the one before it).

    The job's row is locked and read, its runs counted (for leases to reap) and the
    running row inserted only if :data:`rules.STARTS_WHERE` holds, all sent at once: each
    statement runs once the lock is held. A coalescing job never starts here: its run
    also marks the fire times it covers; nor does a job whose group caps its runs: its
    start locks the group first (:mod:`scheduling.runs.groups`).
    """
    now, lease_now = timezone.now(), db_now()
    execution = _running_row(now, job_id=job_id, attempt=0, **run)
    late = _lateness(execution)
    insert = sql.insert_select(
        execution,
        source=f"{Job._meta.db_table} j",
        computed={"job": "j.id", "job_name": "j.name", "task": "j.task"},
        where=f"j.id = %s AND NOT j.coalesce AND {_UNCAPPED_WHERE} AND {rules.STARTS_WHERE}",
        params=[
            job_id,
            *rules.starts_params(
                late=late,
                scheduled_at_in_db=_db_time(execution.scheduled_at)
                if execution.scheduled_at
                else None,
                now_in_db=_db_time(lease_now),
                overlap=overlap,
            ),
        ],
    )
    # Its own transaction; inside a caller's (a test's), a savepoint, so that a duplicate
    # leaves the caller's transaction usable, as the full start's atomic() does.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        job, [(_live, expired, _earliest, _waiting), inserted] = sql.row_get_with(
            Job, job_id, _running_query(job_id, lease_now), insert, for_update=True
        )
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist (removed before it ran).")
    if inserted is None:
        return None
    if expired:
        with transaction.atomic():
            lock_job(job_id)  # reaps the runs whose lease expired
    execution.job, execution.job_name, execution.task = job, job.name, job.task
    setattr(execution, groups.CAPPED, False)
    return sql.inserted(execution, inserted[0])


def _start_in_full(
    *, job_id: int, attempt: int, message: TaskMessage | None, overlap: str | None, **run: Any
) -> JobExecution | None:
    """Apply the rules under the job's lock and write the running row, or the row that
    records why the run does not start (or that it waits); inside the caller's
    transaction. Runs that wait while a slot is free (the run that held it was reaped
    here) are sent on. A job whose group caps its runs has the group's row locked first."""
    group = groups.lock_group(job_id)
    job, live, waiting_runs = lock_job(job_id)
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist (removed before it ran).")
    if rules.promotable(job, live=live, waiting=waiting_runs, group=group):
        sent = waiting.execution_promote_waiting(job_id=job.pk)
        live, waiting_runs = live + sent, waiting_runs - sent
        group = group.taking(sent) if group is not None else None
    now = timezone.now()
    execution = _running_row(now, job=job, job_name=job.name, task=job.task, attempt=attempt, **run)
    decision = _decide(
        job, execution, live=live, waiting=waiting_runs, overlap=overlap, group=group
    )
    fields = dict(
        trigger=execution.trigger,
        scheduled_at=execution.scheduled_at,
        jitter=execution.jitter,
        attempt=attempt,
        worker=execution.worker,
        task_result_id=execution.task_result_id,
        **{name: getattr(execution, name) for name in ORIGIN_FIELDS},
    )
    if decision.waits:
        waiting.record_waiting(job, decision.reason, **fields)
        return None
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
        record_not_run(job, decision.status, decision.reason, message, **fields)
        return None
    _cover_due_fire_times(job, execution, now)
    setattr(execution, groups.CAPPED, group is not None)
    if attempt > 0 and execution.task_result_id:
        execution.retry_of = JobExecution.objects.filter(
            task_result_id=execution.task_result_id, attempt=0
        ).first()
    sql.row_insert(execution)
    announce(execution)
    return execution
