"""Runs that wait for a free slot (overlap policies buffer one and buffer all).

A fire time that finds every slot of its job taken and whose policy buffers it is
recorded as *waiting* (:func:`record_waiting`) and its message acknowledged: a waiting
run holds no worker process. Once a slot is free its message is sent again, under the
same task id, and the run is *queued* (:func:`execution_promote_waiting`); the worker
that receives it starts it in the slot kept for it
(:func:`scheduling.runs.start.execution_start`).

1. A slot frees when a run of the job ends (:mod:`scheduling.runs.finish`, at once), is
   dropped, or is recorded as lost; every worker's housekeeping also looks for waiting
   runs with a free slot (:func:`executions_promote_due`), in case the worker that ended
   the run died before it sent the next one.
2. Promotion holds the job's row lock (as every start does) and claims each run with a
   conditional update (waiting → queued), so no run is sent by two promoters, and the
   slots a start counts include the queued runs.
3. The message goes out once the promotion has committed. A queued run not started
   ``QUEUED_RESEND_SECONDS`` later is sent again (the message may have been lost with
   the process that was to send it, or with the broker); the copy that comes second
   finds the run started and is dropped, so a run still starts once.
4. The wait does not count against the misfire grace: the rules were applied when the
   fire time arrived (it was within its grace, or it would be missed), and the policy
   asked it to wait. A queued run's message does not expire in the broker.
"""

import datetime as dt
import logging
import uuid

from django.db import transaction
from django.utils import timezone

from scheduling import conf, sql
from scheduling.models import ExecutionStatus, Job, JobExecution
from scheduling.runs import groups, rules
from scheduling.runs.events import announce
from scheduling.runs.lease import db_now
from scheduling.runs.records import fire_time_row

logger = logging.getLogger(__name__)


def record_waiting(job: Job, reason: str, **fields) -> JobExecution:
    """Record a fire time that waits for a free slot; inside the caller's transaction.
    Its task result is written once it has run."""
    now = timezone.now()
    execution = sql.row_insert(
        fire_time_row(job, ExecutionStatus.WAITING, reason, now, waiting_since=now, **fields)
    )
    logger.info("Job %s: run of %s waits: %s", job.name, execution.scheduled_at, reason)
    announce(execution)
    return execution


def _resend_after() -> dt.datetime:
    return db_now() + dt.timedelta(seconds=conf.get("QUEUED_RESEND_SECONDS"))


@transaction.atomic
def execution_promote_waiting(*, job_id: int) -> int:
    """Send the oldest waiting runs of the job, as many as it has free slots
    (:func:`rules.promotable`: no more than its group, if it caps its runs, has free);
    return how many were sent."""
    group = groups.lock_group(job_id)
    job = Job.objects.select_for_update().filter(pk=job_id).first()
    if job is None:
        return 0
    runs = JobExecution.objects.filter(job=job)
    waiting = runs.filter(status=ExecutionStatus.WAITING)
    # Cancel other (the job's policy or a run's override) starts the waiting run once the
    # runs it cancelled have stopped, not merely once their slot is free.
    live = (
        runs.filter(rules.slot_at(db_now())).count()
        + runs.filter(
            status=ExecutionStatus.CANCELLING, cancelled_by=rules.CANCEL_OTHER_ACTOR
        ).count()
    )
    free = rules.promotable(job, live=live, waiting=waiting.count(), group=group)
    promoted = []
    for execution in waiting.order_by("scheduled_at", "pk")[:free]:
        task_id = execution.task_result_id or str(uuid.uuid4())
        claimed = JobExecution.objects.filter(
            pk=execution.pk, status=ExecutionStatus.WAITING
        ).update(status=ExecutionStatus.QUEUED, lease_until=_resend_after(), task_result=task_id)
        if claimed:
            execution.task_result_id = task_id
            promoted.append(execution)
    if promoted:
        logger.info("Job %s: %d waiting run(s) sent to the workers", job.name, len(promoted))
        transaction.on_commit(lambda: _send(job, promoted))
    return len(promoted)


def _send(job: Job, executions: list[JobExecution]) -> None:
    """Publish the message of each queued run, as beat and run now build it (a
    backfilled one below its job's priority); one that cannot be sent is sent again by
    the housekeeping."""
    from scheduling.backfills import backfill_priority
    from scheduling.services import job_dispatch

    for execution in executions:
        try:
            job_dispatch(
                job=job,
                trigger=execution.trigger,
                scheduled_at=execution.scheduled_at or execution.started_at,
                task_id=execution.task_result_id,
                jitter=execution.jitter or 0.0,
                expires=False,
                # Its own arguments are on its row: shown, never sent.
                display_kwargs=execution.kwargs,
                priority=backfill_priority(job) if execution.backfill_id else None,
            )
        except Exception:
            logger.exception(
                "Job %s: could not send waiting run %s; it is sent again later",
                job.name,
                execution.pk,
            )


def executions_promote_due() -> int:
    """A worker's housekeeping: send the waiting runs of every job with a free slot, and
    again the queued runs not started in time; return how many messages were sent."""
    sent = 0
    job_ids = (
        JobExecution.objects.filter(status=ExecutionStatus.WAITING, job__isnull=False)
        .values_list("job_id", flat=True)
        .distinct()
    )
    for job_id in list(job_ids):
        sent += execution_promote_waiting(job_id=job_id)
    now = db_now()
    overdue = JobExecution.objects.filter(
        status=ExecutionStatus.QUEUED, lease_until__lt=now, job__isnull=False
    ).select_related("job")
    for execution in overdue:
        # Claimed by its deadline, so that of the workers looking at once one sends it.
        claimed = JobExecution.objects.filter(
            pk=execution.pk, status=ExecutionStatus.QUEUED, lease_until=execution.lease_until
        ).update(lease_until=_resend_after())
        if claimed:
            logger.warning(
                "Job %s: queued run %s not started in time; sent again",
                execution.job_name,
                execution.pk,
            )
            _send(execution.job, [execution])
            sent += 1
    return sent
