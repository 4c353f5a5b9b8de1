"""Stopping a run in progress: cancel (cooperative) and terminate (its process killed).

A run's life when someone stops it:

1. **cancel**: the run becomes *cancelling* at once. Only *running* runs hold a
   max-instances slot (:data:`scheduling.runs.rules.LIVE_SQL`), so its slot is free from
   that moment. The lease renewer of the worker process running it reads the change
   within ``CANCEL_CHECK_INTERVAL`` (through the database, whatever machine it is on)
   and tells the function (:class:`~scheduling.runs.context.RunContext`: ``cancelled()``
   for a sync function, ``CancelledError`` in an ``async def`` one). When the function
   stops, its finish records the run *cancelled* (:func:`scheduling.runs.finish.finish`).
2. **grace**: a run still *cancelling* ``CANCEL_GRACE_SECONDS`` after the request is
   terminated by the first worker whose periodic check sees it
   (:func:`execution_terminate_overdue`); one whose worker stopped renewing its lease
   meanwhile is recorded cancelled (its process is gone).
3. **terminate**: the run is recorded *terminated* at once, and Celery's revoke with
   ``terminate`` kills the process running it (prefork pool: the worker's main process
   kills that child with SIGKILL and starts another; the worker serves on). Pools that
   cannot kill one task (``solo``, ``threads``) leave the function running to its end,
   told to stop as a cancel tells it; the record and the free slot are the same.

Every record is conditional on the run's status, so a finish that comes late never
overwrites *cancelled* or *terminated*, and two workers' checks never record one twice.
"""

import datetime as dt
import logging
import signal

from celery import states
from celery.exceptions import TaskRevokedError
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from scheduling import conf, stats
from scheduling.models import (
    IN_PROGRESS_STATUSES,
    ExecutionStatus,
    JobExecution,
)
from scheduling.runs.events import announce
from scheduling.runs.finish import job_last_update
from scheduling.runs.lease import db_now
from scheduling.task_results import TaskMessage, task_result_record

logger = logging.getLogger(__name__)

#: The signal a terminated run's process is killed with: it cannot be caught or ignored.
TERMINATE_SIGNAL = signal.Signals.SIGKILL.name


def stop_request(
    *, execution: JobExecution, terminate: bool, actor: str, reason: str
) -> tuple[JobExecution, bool]:
    """Ask ``execution`` to stop, inside the caller's transaction, under its row lock;
    return the run (as recorded now) and whether this request changed it.

    A run that is not in progress is refused (``ValidationError`` on ``execution``); a
    second cancel of a cancelling run changes nothing; a terminate of a cancelling run
    terminates it.
    """
    row = (
        JobExecution.objects.select_for_update(of=("self",))
        .select_related("job")
        .filter(pk=execution.pk)
        .first()
    )
    if row is None:
        raise ValidationError({"execution": _("There is no run %(id)s.") % {"id": execution.pk}})
    if row.status not in IN_PROGRESS_STATUSES:
        raise ValidationError(
            {
                "execution": _("Run %(id)s of %(job)s is not running: it is %(status)s.")
                % {"id": row.pk, "job": row.job_name, "status": row.get_status_display()}
            }
        )
    if row.status == ExecutionStatus.CANCELLING and not terminate:
        return row, False
    said = f"{'Terminated' if terminate else 'Cancelled'} by {actor or 'the API'}"
    text = f"{said}: {reason}" if reason else f"{said}."
    row.cancelled_by = actor[:150]
    row.cancel_requested_at = row.cancel_requested_at or db_now()
    if terminate:
        record_stopped(
            execution=row,
            status=ExecutionStatus.TERMINATED,
            reason=text,
            finished_at=timezone.now(),
            from_statuses=IN_PROGRESS_STATUSES,
        )
        if row.task_result_id:
            task_id = row.task_result_id
            transaction.on_commit(lambda: revoke_terminate(task_id=task_id))
        return row, True
    row.status, row.reason = ExecutionStatus.CANCELLING, text[:500]
    row.save(update_fields=["status", "reason", "cancelled_by", "cancel_requested_at"])
    logger.info("Job %s: run %s %s", row.job_name, row.pk, text)
    return row, True


def record_stopped(
    *,
    execution: JobExecution,
    status: str,
    reason: str,
    finished_at: dt.datetime,
    from_statuses: frozenset[str],
) -> bool:
    """Record ``execution`` as ``status`` (cancelled, terminated) if it is still in one of
    ``from_statuses``, with its task result (``REVOKED``), its day's statistics and the
    job's last run, inside the caller's transaction; return whether it was recorded."""
    duration = max((finished_at - execution.started_at).total_seconds(), 0.0)
    claimed = JobExecution.objects.filter(pk=execution.pk, status__in=from_statuses).update(
        status=status,
        reason=reason[:500],
        finished_at=finished_at,
        duration=duration,
        lease_until=None,
        cancelled_by=execution.cancelled_by,
        cancel_requested_at=execution.cancel_requested_at,
    )
    if not claimed:
        return False
    execution.status, execution.reason = status, reason[:500]
    execution.finished_at, execution.duration, execution.lease_until = finished_at, duration, None
    if execution.task_result_id:
        task_result_record(
            message=TaskMessage(
                task_id=execution.task_result_id,
                worker=execution.worker,
                periodic_task_name=execution.job_name,
            ),
            state=states.REVOKED,
            error=TaskRevokedError(execution.reason),
            started_at=execution.started_at,
        )
    stats.stats_record(execution=execution)
    if execution.job_id is not None:
        job_last_update(execution)
    logger.info("Job %s: run %s %s", execution.job_name, execution.pk, reason)
    announce(execution)
    if execution.job_id is not None:
        # Its slot is free now: a run waiting for it goes (once this commits).
        transaction.on_commit(lambda: _promote(execution))
    return True


def _promote(execution: JobExecution) -> None:
    from scheduling.runs.finish import promote_after

    promote_after(execution)


def revoke_terminate(*, task_id: str) -> None:
    """Have the worker running the message ``task_id`` kill its process (Celery's revoke
    with ``terminate``, a broadcast: whichever worker has it acts)."""
    from celery import current_app

    try:
        current_app.control.revoke(task_id, terminate=True, signal=TERMINATE_SIGNAL)
    except Exception as exc:  # the run is recorded: it only keeps its process longer
        logger.warning("Could not send the terminate of message %s: %s", task_id, exc)


def execution_terminate_overdue() -> int:
    """Terminate the runs still *cancelling* ``CANCEL_GRACE_SECONDS`` after their cancel
    was asked for (a periodic check of every worker); record as cancelled those whose
    worker stopped renewing their lease meanwhile. Return how many were recorded."""
    now = db_now()
    grace = conf.get("CANCEL_GRACE_SECONDS")
    overdue = JobExecution.objects.filter(status=ExecutionStatus.CANCELLING).filter(
        Q(cancel_requested_at__lte=now - dt.timedelta(seconds=grace)) | Q(lease_until__lt=now)
    )
    recorded = 0
    for row in overdue.select_related("job"):
        dead = row.lease_until is not None and row.lease_until < now
        with transaction.atomic():
            if dead:
                done = record_stopped(
                    execution=row,
                    status=ExecutionStatus.CANCELLED,
                    reason=f"{row.reason} Its worker stopped renewing the run's lease "
                    "before the function stopped.",
                    finished_at=row.lease_until,
                    from_statuses=frozenset({ExecutionStatus.CANCELLING}),
                )
            else:
                done = record_stopped(
                    execution=row,
                    status=ExecutionStatus.TERMINATED,
                    reason=f"{row.reason} It did not stop within the {grace:g}s grace: terminated.",
                    finished_at=timezone.now(),
                    from_statuses=frozenset({ExecutionStatus.CANCELLING}),
                )
                if done and row.task_result_id:
                    task_id = row.task_result_id
                    transaction.on_commit(lambda task_id=task_id: revoke_terminate(task_id=task_id))
        recorded += done
    return recorded
