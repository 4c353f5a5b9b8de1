"""Reads: job lists, one job's status, upcoming fire times and executions."""

import datetime as dt
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from scheduling import schedules
from scheduling.models import Job, JobExecution


def job_list(*, group: str | None = None, enabled: bool | None = None) -> QuerySet[Job]:
    jobs = Job.objects.all()
    if group is not None:
        jobs = jobs.filter(group=group)
    if enabled is not None:
        jobs = jobs.filter(enabled=enabled)
    return jobs.order_by("name")


def job_get(*, ident: str | int) -> Job:
    """Return the job with this id or name; ``Job.DoesNotExist`` names it when missing."""
    text = str(ident)
    job = Job.objects.filter(name=text).first()
    if job is None and text.isdigit():
        job = Job.objects.filter(pk=int(text)).first()
    if job is None:
        raise Job.DoesNotExist(f"No job with id or name {text!r}.")
    return job


def job_upcoming_runs(*, job: Job, count: int = 5, after: dt.datetime | None = None):
    """The next ``count`` fire times of ``job`` (empty when paused or finished)."""
    try:
        trigger = job.trigger()
    except ValueError:
        return []
    if not job.enabled:
        return []
    first = job.next_run_at or trigger.next_after(after or timezone.now())
    if first is None:
        return []
    return [first, *schedules.upcoming(trigger, after=first, count=count - 1)]


def job_status(*, job: Job) -> dict[str, Any]:
    """The guide's ``get_task_status``: id, name, next run time, trigger, task, arguments."""
    return {
        "id": job.pk,
        "name": job.name,
        "group": job.group,
        "enabled": job.enabled,
        "next_run_time": job.next_run_at.isoformat() if job.next_run_at else None,
        "trigger": str(job.trigger()) if _trigger_ok(job) else job.trigger_type,
        "trigger_description": job.describe_trigger(),
        "task": job.task,
        "args": job.args,
        "kwargs": job.kwargs,
        "timezone": job.timezone,
        "coalesce": job.coalesce,
        "max_instances": job.max_instances,
        "misfire_grace_time": job.misfire_grace_time,
        "last_run_at": job.last_run_at.isoformat() if job.last_run_at else None,
        "last_status": job.last_status or None,
        "last_duration": job.last_duration,
        "total_run_count": job.total_run_count,
    }


def _trigger_ok(job: Job) -> bool:
    try:
        job.trigger()
    except ValueError:
        return False
    return True


def job_status_list(*, group: str | None = None) -> list[dict[str, Any]]:
    """The guide's ``get_all_tasks``."""
    return [job_status(job=job) for job in job_list(group=group)]


def execution_list(*, job: Job | None = None) -> QuerySet[JobExecution]:
    executions = JobExecution.objects.all()
    if job is not None:
        executions = executions.filter(job=job)
    return executions.order_by("-started_at")


def config_export(*, history_days: int | None = None) -> dict[str, Any]:
    """All job definitions in the config format; with ``history_days``, recent runs too.

    The document holds no timestamp of its own, so exporting the same jobs twice gives
    the same file.
    """
    from scheduling.config import FORMAT, job_to_entry

    document: dict[str, Any] = {
        "format": FORMAT,
        "jobs": [job_to_entry(job) for job in Job.objects.order_by("name")],
    }
    if history_days is not None:
        since = timezone.now() - dt.timedelta(days=history_days)
        document["executions"] = [
            {
                "job": run.job_name,
                "task": run.task,
                "trigger": run.trigger,
                "status": run.status,
                "scheduled_at": run.scheduled_at.isoformat() if run.scheduled_at else None,
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "duration": run.duration,
                "result": run.result,
                "exception": run.exception,
                "worker": run.worker,
            }
            for run in JobExecution.objects.filter(started_at__gte=since).order_by("started_at")
        ]
    return document
