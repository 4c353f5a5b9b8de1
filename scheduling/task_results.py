"""Writes for the Celery task result of a run (django-celery-results' ``TaskResult`` row).

``scheduling.run_job`` is declared with ``ignore_result``: instead of Celery's result
backend writing the row on its own (a SELECT and an INSERT or UPDATE per state, each in
its own transaction, outside the run's), :mod:`scheduling.runs` writes it once, with
one upsert in the same transaction as the execution's final update. The row is the one
the backend would write with ``result_extended`` on — same columns, same encoding — so
the admin's link from an execution, ``AsyncResult(task_id)`` and Flower's result API read
it as usual; ``date_started`` is filled too (the run's start).

States, as Celery's would be: ``SUCCESS`` with the function's return value (also for a
message that did not run: missed or skipped, whose task returned ``{"ran": false}``),
``FAILURE`` with the exception (also timeouts), ``RETRY`` for a failed attempt that will
be retried under the same task id.
"""

import dataclasses
import datetime as dt
from typing import Any

from celery import current_app, states
from django.utils import timezone
from django_celery_results.models import TaskResult

from scheduling.sql import row_upsert

RUN_JOB = "scheduling.run_job"


@dataclasses.dataclass(frozen=True)
class TaskMessage:
    """The Celery message a run came from, as extended task results keep it."""

    task_id: str
    worker: str = ""
    task_name: str = RUN_JOB
    periodic_task_name: str | None = None
    args_repr: str | None = None
    kwargs_repr: str | None = None


def _encode(value: Any) -> tuple[str, str, str]:
    return current_app.backend.encode_content(value)


def _values(
    *,
    message: TaskMessage,
    state: str,
    result: Any,
    error: BaseException | None,
    traceback: str | None,
    started_at: dt.datetime | None,
) -> dict[str, Any]:
    if error is not None:
        result = current_app.backend.prepare_exception(error)
    content_type, content_encoding, encoded = _encode(result)
    now = timezone.now()
    return dict(
        task_id=message.task_id,
        status=state,
        result=encoded,
        traceback=traceback or None,
        meta=_encode({"children": []})[2],
        content_type=content_type,
        content_encoding=content_encoding,
        periodic_task_name=message.periodic_task_name,
        task_name=message.task_name,
        task_args=None if message.args_repr is None else _encode(message.args_repr)[2],
        task_kwargs=None if message.kwargs_repr is None else _encode(message.kwargs_repr)[2],
        worker=message.worker or None,
        date_created=now,
        date_started=started_at,
        date_done=now,
    )


def task_result_record(
    *,
    message: TaskMessage,
    state: str = states.SUCCESS,
    result: Any = None,
    error: BaseException | None = None,
    traceback: str | None = None,
    started_at: dt.datetime | None = None,
    overwrite: bool = True,
) -> None:
    """Store the task result of ``message`` in one statement (an upsert on ``task_id``).

    A later attempt under the same task id (a retry) overwrites the row and keeps its
    creation time. With ``overwrite=False`` an existing row is left alone: a message
    delivered twice must not replace the result of the run it duplicates.
    """
    values = _values(
        message=message,
        state=state,
        result=result,
        error=error,
        traceback=traceback,
        started_at=started_at,
    )
    row_upsert(
        TaskResult, conflict="task_id", keep=("date_created",) if overwrite else None, **values
    )
