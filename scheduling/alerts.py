"""Alerts: on failure, missed run, slow run and no successful run in time (dead man's
switch), with a recovery notice; sent by e-mail and webhook to the job's recipients by a
task on the alerts queue (:mod:`scheduling.deliveries`).

An alert is sent when a job's state *changes* (ok → failing, failing → recovered), not on
every failed run. Every alert and notice is kept, with how each delivery went.
"""

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from scheduling import deliveries, selectors, sql
from scheduling.models import (
    FAILED_STATUSES,
    Alert,
    AlertKind,
    AlertState,
    ExecutionStatus,
    Job,
    JobAlertStatus,
    JobExecution,
    TriggerType,
)

logger = logging.getLogger(__name__)


def alert_set(*, job: Job, kind: str, firing: bool, message: str) -> Alert | None:
    """Move the job's ``kind`` alert to firing or resolved; notify only on a change."""
    now = timezone.now()
    with transaction.atomic():
        status, _created = JobAlertStatus.objects.select_for_update().get_or_create(
            job=job, kind=kind, defaults={"firing": False, "since": now}
        )
        if status.firing == firing:
            return None
        status.firing, status.since = firing, now
        status.save(update_fields=["firing", "since"])
        alert = Alert.objects.create(
            job=job,
            job_name=job.name,
            kind=kind,
            state=AlertState.FIRING if firing else AlertState.RESOLVED,
            message=message,
            created_at=now,
        )
    if any(selectors.job_alert_recipients(job=job)):
        # Delivered by the alerts queue's task: a slow or dead receiver never holds up
        # the run (or check) that raised the alert.
        deliveries.alert_deliver_later(alert=alert)
    return alert


def pause_resolve(*, job: Job) -> Alert | None:
    """Resolve the alert of a job that paused itself after failures, once resumed."""
    if not JobAlertStatus.objects.filter(job=job, kind=AlertKind.PAUSED, firing=True).exists():
        return None
    return alert_set(
        job=job, kind=AlertKind.PAUSED, firing=False, message=f"{job.name} was resumed."
    )


def payload(alert: Alert) -> dict[str, Any]:
    return {
        "job": alert.job_name,
        "kind": alert.kind,
        "state": alert.state,
        "message": alert.message,
        "at": alert.created_at.isoformat(),
    }


_FIRING_SQL = f"SELECT kind FROM {JobAlertStatus._meta.db_table} WHERE job_id = %s AND firing = %s"


def firing_query(job_id: int) -> tuple[str, list[Any]]:
    """The statement (and its parameters) that reads which of the job's alerts are firing:
    a worker sends it along with a run's outcome (:mod:`scheduling.runs.finish`)."""
    return _FIRING_SQL, [job_id, True]


def firing_read(cursor) -> set[str]:
    """The kinds of alert firing, from a cursor that ran :func:`firing_query`."""
    return {kind for (kind,) in cursor.fetchall()}


def on_run(execution: JobExecution, firing: set[str] | None = None) -> None:
    """Update the job's alert states after a run event.

    ``firing`` is which of the job's alerts are firing (:func:`firing_read`), when the
    event comes with it; otherwise one statement reads it (plain SQL: this runs after
    every run, see :mod:`scheduling.sql`). :func:`alert_set` (a locked transaction each)
    runs only for a state this run changes. A healthy job's run, the common case, costs
    that one read at most, not a transaction per alert kind.
    """
    if execution.job_id is None:
        return
    if firing is None:
        with sql.cursor() as cursor:
            cursor.execute(*firing_query(execution.job_id))
            firing = firing_read(cursor)
    job = execution.job
    when = (execution.scheduled_at or execution.started_at).isoformat()
    if execution.status == ExecutionStatus.SUCCESS:
        for kind in (AlertKind.FAILURE, AlertKind.MISSED, AlertKind.DEADMAN):
            if kind in firing:
                alert_set(
                    job=job,
                    kind=kind,
                    firing=False,
                    message=f"{job.name} recovered: run at {when} succeeded.",
                )
        threshold = job.slow_after
        if threshold is not None and execution.duration is not None:
            slow = execution.duration > threshold
            if slow != (AlertKind.SLOW in firing):
                alert_set(
                    job=job,
                    kind=AlertKind.SLOW,
                    firing=slow,
                    message=(
                        f"{job.name} ran {execution.duration:.2f}s at {when}, over its "
                        f"{threshold:g}s threshold."
                        if slow
                        else f"{job.name} is back under its {threshold:g}s threshold "
                        f"({execution.duration:.2f}s)."
                    ),
                )
    elif execution.status in FAILED_STATUSES and AlertKind.FAILURE not in firing:
        detail = execution.exception or execution.reason
        alert_set(
            job=job,
            kind=AlertKind.FAILURE,
            firing=True,
            message=f"{job.name} {execution.status} at {when}: {detail}",
        )
    elif execution.status == ExecutionStatus.MISSED and AlertKind.MISSED not in firing:
        alert_set(
            job=job,
            kind=AlertKind.MISSED,
            firing=True,
            message=(
                f"{job.name} missed {execution.missed_count} fire times, from {when} to "
                f"{execution.missed_until.isoformat()}: {execution.reason}"
                if execution.missed_count is not None
                else f"{job.name} missed its run at {when}: {execution.reason}"
            ),
        )


def expected_period(job: Job) -> float | None:
    """Seconds between two fire times of the job around now (None for one-off jobs)."""
    if job.trigger_type == TriggerType.DATE:
        return None
    try:
        trigger = job.trigger()
    except ValueError:
        return None
    first = trigger.next_after(timezone.now())
    second = trigger.next_after(first) if first else None
    return (second - first).total_seconds() if first and second else None


def deadman_check(*, now: dt.datetime | None = None) -> list[str]:
    """Alert for every enabled job with no successful run within its period + grace.

    Runs outside beat (in workers and on demand), so it also catches a beat that died.
    Returns the names of the jobs now overdue.
    """
    now = now or timezone.now()
    overdue = []
    for job in selectors.job_list_with_alert_recipients():
        period = expected_period(job)
        if period is None:
            continue
        last_success = (
            JobExecution.objects.filter(job=job, status=ExecutionStatus.SUCCESS)
            .order_by("-started_at")
            .values_list("started_at", flat=True)
            .first()
        )
        if job.excluded_from is not None and job.excluded_from <= now:
            continue  # inside a window its calendars exclude: no run is due
        # A job whose validity window starts later is not overdue before it starts.
        reference = last_success or max(job.created_at, job.start_at or job.created_at)
        # Nor is one counted silent over the fire times its calendars excluded.
        excluded = (
            JobExecution.objects.filter(job=job, status=ExecutionStatus.SKIPPED)
            .exclude(excluded_by="")
            .order_by("-scheduled_at")
            .values_list("scheduled_at", "missed_until")
            .first()
        )
        if excluded is not None:
            reference = max(reference, excluded[1] or excluded[0])
        silence = (now - reference).total_seconds()
        if silence > period + job.alert_grace:
            overdue.append(job.name)
            alert_set(
                job=job,
                kind=AlertKind.DEADMAN,
                firing=True,
                message=f"{job.name} has not succeeded for {silence:.0f}s (period "
                f"{period:.0f}s + grace {job.alert_grace}s). Is beat or every worker down?",
            )
    return overdue
