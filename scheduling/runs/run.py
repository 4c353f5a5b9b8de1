"""One run on a worker, from the message to the record: start, call, finish."""

import datetime as dt
import time
import traceback as tb
from typing import Any

from celery import states
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, InterfaceError, close_old_connections

from scheduling import masking, registry
from scheduling.models import ExecutionStatus, Job, JobExecution
from scheduling.runs.call import call
from scheduling.runs.finish import finish, jsonable, summary
from scheduling.runs.lease import lease_kept
from scheduling.runs.records import NOT_RUN
from scheduling.runs.retries import RetryLater, retry_countdown, should_retry
from scheduling.runs.start import JobNotFoundError, execution_start
from scheduling.task_results import TaskMessage, task_result_record


class DatabaseUnavailable(Exception):
    """The run could not be started because the database did not answer; deliver it again."""


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
) -> Any:
    """Run one execution of a job on this worker and record it, whatever happens.

    1. Start it under the rules (:func:`execution_start`; ``overlap`` overrides the
       job's overlap policy); a run that must not start now is recorded as such (missed,
       skipped, or waiting for a free slot), and ``{"ran": false}`` returned.
    2. Look its task up in the registry again: a job whose task is not (or no longer)
       registered is recorded as failed with the reason, and nothing runs.
    3. Call the function with the run's lease kept alive.
    4. Record the outcome with the Celery task result of ``message`` (by default one
       built from ``task_id``) in one transaction; re-raise the function's exception
       after that, so Celery's result shows the failure too, or raise
       :class:`RetryLater` when the attempt is to be retried.
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
            overlap=overlap,
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
    with lease_kept(execution):  # until the outcome is recorded
        return _call_and_finish(execution, job, clock, attempt=attempt, message=message)


def _call_and_finish(
    execution: JobExecution, job: Job, clock: float, *, attempt: int, message: TaskMessage | None
) -> Any:
    try:
        value = call(registry.get_task(job.task), job)
    except SoftTimeLimitExceeded as exc:
        finish(
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
        retry = should_retry(job, exc, attempt)
        # What the function raised is told with the job's secrets masked, everywhere it
        # goes: the execution, the task result, alerts, Celery's log and events (Flower).
        secrets = masking.secret_values(job.kwargs)
        shown = masking.mask_exception(exc, secrets)
        finish(
            execution,
            clock,
            ExecutionStatus.FAILURE,
            message=message,
            error=shown,
            retrying=retry,
            exception=masking.mask_text(f"{type(exc).__name__}: {exc}", secrets),
            traceback=masking.mask_text(tb.format_exc(), secrets),
        )
        if retry:
            raise RetryLater(retry_countdown(job, attempt), shown) from None
        if shown is exc:
            raise
        raise shown from None
    returned = jsonable(value)
    finish(
        execution,
        clock,
        ExecutionStatus.SUCCESS,
        message=message,
        value=returned,
        result=summary(value),
    )
    return returned
