"""One run on a worker, from the message to the record: start, call, finish."""

import asyncio
import datetime as dt
import logging
import time
import traceback as tb
from typing import Any, NoReturn

from celery import states
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, InterfaceError, close_old_connections

from scheduling import masking, registry
from scheduling.models import ExecutionStatus, Job, JobExecution, RunOverride
from scheduling.runs.call import call
from scheduling.runs.context import RunCancelled, RunContext
from scheduling.runs.finish import finish, jsonable, summary
from scheduling.runs.lease import lease_kept, progress_write
from scheduling.runs.records import NOT_RUN
from scheduling.runs.retries import RetryLater, retry_countdown, should_retry
from scheduling.runs.start import JobNotFoundError, execution_start
from scheduling.task_results import TaskMessage, task_result_record

logger = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The run could not be started because the database did not answer; deliver it again."""


class RunStopped(Exception):
    """The run was cancelled or terminated: its record is made, and the Celery task ends
    as revoked (``value`` is what the function returned, if anything)."""

    def __init__(self, execution: JobExecution, value: Any = None) -> None:
        self.execution = execution
        self.value = value
        super().__init__(f"Run {execution.pk} of {execution.job_name} was {execution.status}")


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
    overlap: str | None = None,
    sent_at: dt.datetime | None = None,
    parent_id: int | None = None,
    backfill_id: int | None = None,
    override: bool = False,
) -> Any:
    """Run one execution of a job on this worker and record it, whatever happens.

    ``sent_at``, ``parent_id``, ``backfill_id``: where a run not sent by the schedule
    came from (its misfire grace counts from ``sent_at``); ``override``: its keyword
    arguments wait under its task id (:class:`RunOverride`), not the job's.

    1. Start it under the rules (:func:`execution_start`; ``overlap`` overrides the
       job's overlap policy); a run that must not start now is recorded as such (missed,
       skipped, or waiting for a free slot), and ``{"ran": false}`` returned.
    2. Look its task up in the registry again: a job whose task is not (or no longer)
       registered is recorded as failed with the reason, and nothing runs.
    3. Call the function with the run's lease kept alive and its run context
       (:mod:`scheduling.runs.context`), which learns of a cancel through the lease.
    4. Record the outcome with the Celery task result of ``message`` (by default one
       built from ``task_id``) in one transaction; re-raise the function's exception
       after that, so Celery's result shows the failure too, or raise
       :class:`RetryLater` when the attempt is to be retried, or :class:`RunStopped`
       when the run was cancelled or terminated (never retried).
    """
    if message is None and task_id:
        message = TaskMessage(task_id=task_id, worker=worker)
    try:
        kwargs = _override_kwargs(task_id) if override else None
        execution = execution_start(
            job_id=job_id,
            trigger=trigger,
            scheduled_at=scheduled_at,
            jitter=jitter,
            attempt=attempt,
            task_id=task_id,
            worker=worker,
            message=message,
            overlap=overlap,
            sent_at=sent_at,
            parent_id=parent_id,
            backfill_id=backfill_id,
            kwargs=kwargs,
        )
        if override:
            RunOverride.objects.filter(task_id=task_id).delete()  # on the run's row now
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
    context = RunContext(
        job=job.name,
        execution_id=execution.pk,
        scheduled_at=execution.scheduled_at,
        attempt=attempt,
        trigger=execution.trigger,
        task_id=task_id,
        worker=worker,
    )
    with lease_kept(execution, context):  # until the outcome is recorded
        return _call_and_finish(
            execution, job, clock, attempt=attempt, message=message, context=context
        )


def _override_kwargs(task_id: str | None) -> dict:
    """The keyword arguments a run with overrides was sent with: waiting under its task id
    (:class:`RunOverride`) until its first start, then on its row, which is where a retry
    or a message delivered again finds them (Celery sends those with the same
    ``override``). ``JobNotFoundError`` when they are in neither place (never stored)."""
    found = RunOverride.objects.filter(task_id=task_id).values_list("kwargs", flat=True).first()
    if found is None and task_id:
        found = (
            JobExecution.objects.filter(task_result_id=task_id, kwargs__isnull=False)
            .order_by("-pk")
            .values_list("kwargs", flat=True)
            .first()
        )
    if found is None:
        raise JobNotFoundError(f"The keyword arguments of run {task_id} are not on record.")
    return found


def run_kwargs(execution: JobExecution, job: Job) -> dict:
    """What the run is called with: its own keyword arguments, else its job's."""
    return (job.kwargs or {}) if execution.kwargs is None else execution.kwargs


def _call_and_finish(
    execution: JobExecution,
    job: Job,
    clock: float,
    *,
    attempt: int,
    message: TaskMessage | None,
    context: RunContext,
) -> Any:
    try:
        value = call(registry.get_task(job.task), job, context, execution.kwargs)
    except (asyncio.CancelledError, Exception) as exc:
        _write_progress(context)
        if context.cancelled():
            _finish_stopped(execution, clock, context, message=message, error=exc)
        if isinstance(exc, asyncio.CancelledError):
            # Not cancelled by us: the function's own cancellation is its failure.
            exc = RuntimeError(f"CancelledError: {exc}")
        _finished_with_error(execution, job, clock, exc, attempt=attempt, message=message)
    _write_progress(context)
    if context.cancelled():
        _finish_stopped(execution, clock, context, message=message, value=value)
    returned = jsonable(value)
    status = finish(
        execution,
        clock,
        ExecutionStatus.SUCCESS,
        message=message,
        value=returned,
        result=summary(value),
    )
    if status not in (ExecutionStatus.SUCCESS, None):
        raise RunStopped(execution, returned)  # cancelled after the function's last look
    return returned


def _write_progress(context: RunContext) -> None:
    try:
        progress_write(context)
    except (DatabaseError, InterfaceError):
        logger.warning("Could not write the last progress of run %s", context.execution_id)


def _finish_stopped(
    execution: JobExecution,
    clock: float,
    context: RunContext,
    *,
    message: TaskMessage | None,
    value: Any = None,
    error: BaseException | None = None,
) -> NoReturn:
    """Record a run whose function stopped after it was asked to (whatever it returned
    or raised) as cancelled, and end the task as revoked."""
    outcome: dict[str, Any] = {}
    if error is not None and not isinstance(error, asyncio.CancelledError | RunCancelled):
        secrets = masking.secret_values(run_kwargs(execution, execution.job))
        outcome["exception"] = masking.mask_text(f"{type(error).__name__}: {error}", secrets)
        outcome["traceback"] = masking.mask_text("".join(tb.format_exception(error)), secrets)
    elif error is None:
        outcome["result"] = summary(value)
    finish(
        execution,
        clock,
        ExecutionStatus.CANCELLED,
        message=message,
        value=jsonable(value),
        from_status=ExecutionStatus.CANCELLING,
        **outcome,
    )
    raise RunStopped(execution, jsonable(value))


def _finished_with_error(
    execution: JobExecution,
    job: Job,
    clock: float,
    exc: Exception,
    *,
    attempt: int,
    message: TaskMessage | None,
) -> NoReturn:
    """Record a run whose function raised ``exc`` (timed out, or failed and perhaps to
    be retried) and raise what the Celery task raises then."""
    trace = "".join(tb.format_exception(exc))
    if isinstance(exc, SoftTimeLimitExceeded):
        status = finish(
            execution,
            clock,
            ExecutionStatus.TIMEOUT,
            message=message,
            error=exc,
            exception=f"Timed out: {exc}",
            traceback=trace,
            reason="Over its soft time limit.",
        )
        if status not in (ExecutionStatus.TIMEOUT, None):
            raise RunStopped(execution) from None  # cancelled meanwhile
        raise exc
    retry = should_retry(job, exc, attempt)
    # What the function raised is told with the job's secrets masked, everywhere it
    # goes: the execution, the task result, alerts, Celery's log and events (Flower).
    secrets = masking.secret_values(run_kwargs(execution, job))
    shown = masking.mask_exception(exc, secrets)
    status = finish(
        execution,
        clock,
        ExecutionStatus.FAILURE,
        message=message,
        error=shown,
        retrying=retry,
        exception=masking.mask_text(f"{type(exc).__name__}: {exc}", secrets),
        traceback=masking.mask_text(trace, secrets),
    )
    if status not in (ExecutionStatus.FAILURE, None):
        raise RunStopped(execution) from None  # cancelled meanwhile: never retried
    if retry:
        raise RetryLater(retry_countdown(job, attempt), shown) from None
    if shown is exc:
        raise exc
    raise shown from None
