"""The finish of a run: how it ended, recorded in one transaction sent in one round trip.

What is written: the execution's outcome, the Celery task result
(:mod:`scheduling.task_results`, instead of the result backend), the day's statistics
and the job's last run; the job's alert states are read along with it, for the run
event that follows the commit. A run's result is stored masked (:mod:`scheduling.masking`).
Its slot is free then: a run of the job that waits for one is sent
(:mod:`scheduling.runs.waiting`).
"""

import datetime as dt
import json
import logging
import time
from typing import Any

from celery import states
from celery.exceptions import TimeLimitExceeded
from django.db import (
    DatabaseError,
    InterfaceError,
    close_old_connections,
    connection,
    transaction,
)
from django.utils import timezone

from scheduling import alerts, conf, masking, sql, stats
from scheduling.models import STOPPED_STATUSES, ExecutionStatus, Job, JobExecution
from scheduling.runs import groups, rules, waiting
from scheduling.runs.events import announce
from scheduling.task_results import TaskMessage, task_result_record

logger = logging.getLogger(__name__)


def summary(value: Any) -> str:
    """A run's return value as stored on its execution row: JSON, masked, cut short."""
    limit = conf.get("RESULT_SUMMARY_MAX_CHARS")
    try:
        text = json.dumps(masking.mask(value), ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def jsonable(value: Any) -> Any:
    """A run's return value as Celery's result store gets it: JSON, with secrets masked."""
    value = masking.mask(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def finish(
    execution: JobExecution,
    clock: float,
    status: str,
    *,
    message: TaskMessage | None,
    value: Any = None,
    error: BaseException | None = None,
    retrying: bool = False,
    from_status: str = ExecutionStatus.RUNNING,
    **outcome: str,
) -> str | None:
    """Record how the run that started at ``clock`` (``time.perf_counter()``) ended: the
    execution row, the task result (``RETRY`` while attempts remain, ``REVOKED`` for a
    cancelled run), the statistics and the job's last run, then send the run event.
    Return the status recorded, or ``None`` when the run was recorded otherwise meanwhile.

    1. A database that does not answer (restarted, say) is tried again, for up to
       ``FINISH_RETRY_SECONDS``, while the caller keeps the run's lease alive; before
       each new try, a record the lost answer had in fact committed is found and kept.
    2. The record is made only while the run is still ``from_status`` (*running*, or
       *cancelling* for a run whose function saw its cancel): a run recorded as lost
       (its lease expired) or terminated meanwhile keeps that record, and is not counted
       a second time. A run found *cancelling* (cancelled after its function's last look)
       is recorded as cancelled instead.
    """
    if from_status == ExecutionStatus.CANCELLING:
        _stop_fields(execution)
    execution.duration = time.perf_counter() - clock
    execution.finished_at = execution.started_at + dt.timedelta(seconds=execution.duration)
    execution.status = status
    execution.lease_until = None
    # PostgreSQL stores no NUL character in text: a function may well raise or return one.
    outcome = {name: text.replace("\x00", "\\x00") for name, text in outcome.items()}
    for name, text in outcome.items():
        setattr(execution, name, text)
    if status in STOPPED_STATUSES:
        state = states.REVOKED
    else:
        state = states.SUCCESS if error is None else states.RETRY if retrying else states.FAILURE
    written = dict(
        message=message,
        state=state,
        value=value,
        error=error,
        outcome=outcome,
        from_status=from_status,
    )
    deadline = time.monotonic() + conf.get("FINISH_RETRY_SECONDS")
    pause = 0.5
    while True:
        try:
            recorded, firing_alerts = _record(execution, **written)
            break
        except (DatabaseError, InterfaceError) as exc:
            connection.close()
            if time.monotonic() + pause > deadline:
                raise
            logger.warning(
                "Job %s: could not record how its run %s ended (%s); trying again in %.1fs",
                execution.job_name,
                execution.pk,
                exc,
                pause,
            )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
        try:
            if _recorded_already(execution):
                recorded, firing_alerts = True, None
                break
        except (DatabaseError, InterfaceError):
            connection.close()
    if not recorded:
        now = _stop_fields(execution).get("status")
        if from_status == ExecutionStatus.RUNNING and now == ExecutionStatus.CANCELLING:
            outcome.pop("reason", None)  # the cancel's own reason says who and why
            return finish(
                execution,
                clock,
                ExecutionStatus.CANCELLED,
                message=message,
                value=value,
                error=error,
                from_status=ExecutionStatus.CANCELLING,
                **outcome,
            )
        logger.warning(
            "Job %s: run %s was recorded as %s before it ended %s",
            execution.job_name,
            execution.pk,
            now or "removed",
            status,
        )
        return None
    announce(execution, firing_alerts=firing_alerts, retrying=retrying)
    logger.info("Job %s %s in %.3fs", execution.job_name, status, execution.duration)
    promote_after(execution)
    return status


def _stop_fields(execution: JobExecution) -> dict[str, Any]:
    """Read the run's status and who asked it to stop, and why, into ``execution``."""
    row = (
        JobExecution.objects.filter(pk=execution.pk)
        .values("status", "reason", "cancelled_by", "cancel_requested_at")
        .first()
    ) or {}
    if row.get("status") in (ExecutionStatus.CANCELLING, *STOPPED_STATUSES):
        for name in ("reason", "cancelled_by", "cancel_requested_at"):
            setattr(execution, name, row[name])
    return row


def promote_after(execution: JobExecution) -> None:
    """The run ended and freed its slot: send the job's oldest waiting run, if its policy
    buffers, and those of the other jobs of its group, if the group caps its runs. A
    database that does not answer leaves it to the housekeeping
    (:func:`scheduling.runs.waiting.executions_promote_due`)."""
    if execution.job is None:
        return
    try:
        # A stopped run may have been stopped for a run waiting under a run's own override
        # (run now with cancel other): rare enough to look whatever the job's policy.
        if rules.buffers(execution.job) or execution.status in STOPPED_STATUSES:
            waiting.execution_promote_waiting(job_id=execution.job_id)
        for job_id in groups.group_waiting_job_ids(execution=execution):
            waiting.execution_promote_waiting(job_id=job_id)
    except (DatabaseError, InterfaceError):
        logger.warning("Job %s: waiting runs not sent now; later", execution.job_name)
        connection.close()


def _recorded_already(execution: JobExecution) -> bool:
    return JobExecution.objects.filter(
        pk=execution.pk, status=execution.status, finished_at=execution.finished_at
    ).exists()


def _record(
    execution: JobExecution,
    *,
    message: TaskMessage | None,
    state: str,
    value: Any,
    error: BaseException | None,
    outcome: dict[str, str],
    from_status: str,
) -> tuple[bool, set[str]]:
    """Write the outcome in one transaction sent in one round trip
    (:func:`sql.one_trip_transaction`); return whether the run was still running (and so
    is recorded now) and the job's alert states, read along with it."""
    # The statistics and the job's last run follow the execution's update: only if it
    # made the row this outcome (a run reaped as lost keeps its record).
    ours = (
        f"EXISTS (SELECT 1 FROM {JobExecution._meta.db_table}"
        " WHERE id = %s AND status = %s AND finished_at = %s)",
        [
            execution.pk,
            execution.status,
            connection.ops.adapt_datetimefield_value(execution.finished_at),
        ],
    )
    with sql.cursor() as updated, sql.cursor() as firing:
        with sql.one_trip_transaction():
            updated.execute(
                *sql.update_statement(
                    JobExecution,
                    execution.pk,
                    where=("status = %s", [from_status]),
                    duration=execution.duration,
                    finished_at=execution.finished_at,
                    status=execution.status,
                    lease_until=None,
                    **outcome,
                )
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
            stats.stats_record(execution=execution, only_if=ours)
            # The alerts' reading for the run event, sent along instead of after.
            firing.execute(*alerts.firing_query(execution.job_id))
            # Last: the job's row stays locked (against the next run's start) until the commit.
            job_last_update(execution, only_if=ours)
        return updated.rowcount == 1, alerts.firing_read(firing)


def job_last_update(execution: JobExecution, only_if: tuple[str, list] = ("", [])) -> None:
    """Make ``execution`` the job's last run (and count it), if ``only_if`` holds."""
    sql.row_update(
        Job,
        execution.job_id,
        where=only_if,
        increment=["total_run_count"],
        last_run_at=execution.started_at,
        last_status=execution.status,
        last_duration=execution.duration,
    )


def execution_mark_timed_out(*, task_id: str, limit: float) -> int:
    """Record as timed out the run of ``task_id`` that the worker's main process killed
    over its hard limit (its task result records the ``TimeLimitExceeded`` too); return
    how many runs it was (0 or 1)."""
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
            job_last_update(execution)
            task_result_record(
                message=TaskMessage(
                    task_id=task_id, worker=execution.worker, periodic_task_name=execution.job_name
                ),
                state=states.FAILURE,
                error=error,
                started_at=execution.started_at,
            )
            stats.stats_record(execution=execution)
            announce(execution)
        promote_after(execution)
        updated += 1
    return updated
