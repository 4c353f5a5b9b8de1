"""Records of runs that end without the worker finishing them: fire times that did not
run (missed, coalesced, skipped) and runs whose worker died (lost).

Each record is written with its day's statistics (:func:`scheduling.stats.stats_record`)
in one transaction, and its run event goes out once that commits.
"""

import datetime as dt
import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from scheduling import sql, stats
from scheduling.models import ExecutionStatus, ExecutionTrigger, Job, JobExecution
from scheduling.runs import rules
from scheduling.runs.events import announce
from scheduling.runs.lease import db_now
from scheduling.task_results import TaskMessage, task_result_record

logger = logging.getLogger(__name__)

#: What the task of a message that did not run returns.
NOT_RUN = {"ran": False}


def fire_time_row(job: Job, status: str, reason: str, now: dt.datetime, **fields) -> JobExecution:
    """The row of a run a worker received and did not start now, recorded at ``now``."""
    return JobExecution(
        job=job,
        job_name=job.name,
        task=job.task,
        status=status,
        reason=reason[:500],
        started_at=now,
        **fields,
    )


def record_not_run(
    job: Job, status: str, reason: str, message: TaskMessage | None, **fields
) -> JobExecution:
    """Record a fire time a worker received but did not run (missed, skipped), and the
    task result of its message; inside the caller's transaction."""
    now = timezone.now()
    execution = sql.row_insert(fire_time_row(job, status, reason, now, finished_at=now, **fields))
    if message is not None:
        task_result_record(message=message, result=NOT_RUN, started_at=now)
    stats.stats_record(execution=execution)
    logger.info("Job %s %s: %s", job.name, status, reason)
    announce(execution)
    return execution


LOST_REASON = "The worker stopped renewing the run's lease (killed or cut off)."


@transaction.atomic
def execution_reap_lost(*, job: Job | None = None) -> int:
    """Mark running rows whose lease expired as lost (their worker died); return how many.

    Each row is claimed by a conditional update, so that of two processes reaping at
    once (a worker's periodic check, another's start of the job) one records it.
    """
    now = db_now()
    stale = JobExecution.objects.filter(rules.expired_at(now))
    if job is not None:
        stale = stale.filter(job=job)
    reaped = 0
    for execution in stale.select_related("job"):
        claimed = JobExecution.objects.filter(rules.expired_at(now), pk=execution.pk).update(
            status=ExecutionStatus.LOST, finished_at=F("lease_until"), reason=LOST_REASON
        )
        if not claimed:
            continue
        execution.status = ExecutionStatus.LOST
        execution.finished_at = execution.lease_until
        execution.reason = LOST_REASON
        stats.stats_record(execution=execution)
        announce(execution)
        reaped += 1
    return reaped


def execution_record_missed(*, job: Job, fire_times: list[dt.datetime], reason: str) -> int:
    """Record fire times beat did not send (it was down, or they were coalesced); a fire
    time already on record is left as it is. Return how many were recorded."""
    if not fire_times:
        return 0
    now = timezone.now()
    recorded = set(
        JobExecution.objects.filter(
            job=job,
            trigger=ExecutionTrigger.SCHEDULE,
            attempt=0,
            scheduled_at__in=fire_times,
        ).values_list("scheduled_at", flat=True)
    )
    new = [
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
        if fire_time not in recorded
    ]
    with transaction.atomic():
        JobExecution.objects.bulk_create(new, ignore_conflicts=True)
        for execution in new:
            stats.stats_record(execution=execution)
            announce(execution)
    logger.warning("Job %s: %d fire time(s) missed: %s", job.name, len(fire_times), reason)
    return len(new)
