"""Records of runs that end without the worker finishing them: fire times that did not
run (missed, coalesced, skipped) and runs whose worker died (lost).

Each record is written with its day's statistics (:func:`scheduling.stats.stats_record`)
in one transaction, and its run event goes out once that commits.
"""

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from scheduling import sql, stats
from scheduling.calendars import Excluding
from scheduling.models import ExecutionStatus, ExecutionTrigger, Job, JobExecution
from scheduling.runs import rules
from scheduling.runs.events import announce
from scheduling.runs.lease import db_now
from scheduling.runs.rules import Missed, missed_span
from scheduling.schedules import Window
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
        fire_time_row(
            job,
            ExecutionStatus.MISSED,
            reason,
            now,
            trigger=ExecutionTrigger.SCHEDULE,
            scheduled_at=fire_time,
            finished_at=now,
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


def execution_record_missed_summaries(
    *, missed: list[tuple[Job, Any, Missed]], reason: str
) -> list[JobExecution]:
    """Record each job's fire times beat did not send as **one summary** (``missed``:
    the job, its trigger and the span): a missed row whose fire time is the first, with
    ``missed_until`` the last and ``missed_count`` how many; with its day's statistics,
    counting each of them, and its event once committed. A few statements whatever the
    number of jobs, in the caller's transaction.

    ``reason`` may name ``{grace}``, the job's misfire grace time. A fire time of the span
    already on record (a beat sent it and died before storing what followed, and a worker
    recorded it) keeps its own row: the summary starts after it if it was the first, and
    does not count it.
    """
    if not missed:
        return []
    recorded: dict[int, list[dt.datetime]] = {}
    for job_id, fire_time in JobExecution.objects.filter(
        job_id__in={job.pk for job, _, _ in missed},
        trigger=ExecutionTrigger.SCHEDULE,
        attempt=0,
        missed_until__isnull=True,
        scheduled_at__gte=min(span.first for _, _, span in missed),
        scheduled_at__lt=max(span.before for _, _, span in missed),
    ).values_list("job_id", "scheduled_at"):
        recorded.setdefault(job_id, []).append(fire_time)
    now = timezone.now()
    new = []
    for job, trigger, span in missed:
        first = span.first
        on_record = set(recorded.get(job.pk, ()))
        while first in on_record:
            first = trigger.next_after(first)
            if first is None or first >= span.before:
                break
        if first is None or first >= span.before:
            continue
        last, count = missed_span(trigger, Missed(first=first, before=span.before))
        count -= sum(1 for fire_time in on_record if first < fire_time <= last)
        new.append(
            fire_time_row(
                job,
                ExecutionStatus.MISSED,
                reason.format(grace=job.misfire_grace_time),
                now,
                trigger=ExecutionTrigger.SCHEDULE,
                scheduled_at=first,
                missed_until=last,
                missed_count=count,
                finished_at=now,
            )
        )
    with transaction.atomic():
        # No ignore_conflicts: a row written meanwhile for a first fire time (a late
        # message) fails the transaction, which the next try does again, seeing it.
        JobExecution.objects.bulk_create(new)
        stats.stats_record_many(executions=new)
        for execution in new:
            announce(execution)
    if new:
        # One line for the batch: a line per job would cost as much as the records.
        logger.warning(
            "%d job(s) missed %d fire time(s) (%s …): %s",
            len(new),
            sum(execution.missed_count for execution in new),
            new[0].job_name,
            reason.format(grace=new[0].job.misfire_grace_time),
        )
    return new


def execution_record_excluded(
    *, job: Job, first: dt.datetime, before: dt.datetime
) -> list[JobExecution]:
    """Record the fire times of ``job`` its exclusions removed, from ``first`` up to (not
    including) ``before``, as **skipped**, naming the calendar (``excluded_by``): one row
    per excluded window, a summary (``missed_until``, ``missed_count``) when it holds more
    than one fire time, so a job firing every second excluded all weekend writes one row,
    not 172,800. A fire time already on record keeps its row. In the caller's transaction."""
    try:
        trigger = job.trigger()
    except ValueError:
        return []
    inner = trigger.trigger if isinstance(trigger, Window) else trigger
    if not isinstance(inner, Excluding):
        return []
    now = timezone.now()
    new = [
        fire_time_row(
            job,
            ExecutionStatus.SKIPPED,
            why.words(),
            now,
            trigger=ExecutionTrigger.SCHEDULE,
            scheduled_at=fire,
            missed_until=last if count > 1 else None,
            missed_count=count if count > 1 else None,
            excluded_by=why.calendar,
            finished_at=now,
        )
        for why, fire, last, count in inner.excluded_spans(first, before)
    ]
    if not new:
        return []
    with transaction.atomic():
        JobExecution.objects.bulk_create(new, ignore_conflicts=True)
        stats.stats_record_many(executions=new)
        for execution in new:
            announce(execution)
    logger.info(
        "Job %s: %d fire time(s) excluded (%s)",
        job.name,
        sum(row.missed_count or 1 for row in new),
        ", ".join(sorted({row.excluded_by for row in new})),
    )
    return new


def covered_by_summary(*, job_id: int, fire_time: dt.datetime) -> bool:
    """Whether a summary of missed fire times (:func:`execution_record_missed_summaries`)
    explains ``fire_time`` of the job already."""
    return JobExecution.objects.filter(
        job_id=job_id,
        missed_until__gte=fire_time,
        scheduled_at__lte=fire_time,
        trigger=ExecutionTrigger.SCHEDULE,
        attempt=0,
    ).exists()
