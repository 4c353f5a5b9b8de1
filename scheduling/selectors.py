"""Reads: job lists, one job's status, upcoming fire times and executions."""

import datetime as dt
import hmac
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from scheduling import masking, schedules
from scheduling.models import (
    EXECUTED_STATUSES,
    FAILED_STATUSES,
    IN_PROGRESS_STATUSES,
    UNFINISHED_STATUSES,
    ApiKey,
    ExecutionStatus,
    Job,
    JobExecution,
    JobGroup,
)


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
    if "\x00" in text:  # no name holds one, and PostgreSQL cannot compare it
        raise Job.DoesNotExist(f"No job with id or name {text!r}.")
    job = Job.objects.filter(name=text).first()
    if job is None and text.isdigit():
        job = Job.objects.filter(pk=int(text)).first()
    if job is None:
        raise Job.DoesNotExist(f"No job with id or name {text!r}.")
    return job


def job_upcoming_runs(*, job: Job, count: int = 5, after: dt.datetime | None = None):
    """The next ``count`` fire times of ``job`` (empty when paused or finished): within its
    validity window, and no more than the runs it has left."""
    try:
        trigger = job.trigger()
    except ValueError:
        return []
    if not job.enabled:
        return []
    if job.runs_remaining is not None:
        count = min(count, job.runs_remaining)
    if count < 1:
        return []
    first = job.next_run_at or trigger.next_after(after or timezone.now())
    if first is None:
        return []
    return [first, *schedules.upcoming(trigger, after=first, count=count - 1)]


def job_status(*, job: Job) -> dict[str, Any]:
    """One job's status (the seed design's ``get_task_status``): id, name, next run time,
    trigger, task, arguments."""
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
        "kwargs": masking.mask(job.kwargs),
        "timezone": job.timezone,
        "coalesce": job.coalesce,
        "max_instances": job.max_instances,
        "overlap": job.overlap,
        "misfire_grace_time": job.misfire_grace_time,
        "queue": job_queue(job=job),
        "priority": job.priority,
        "exchange": job.exchange or None,
        "routing_key": job.routing_key or None,
        "last_run_at": job.last_run_at.isoformat() if job.last_run_at else None,
        "last_status": job.last_status or None,
        "last_duration": job.last_duration,
        "total_run_count": job.total_run_count,
        "pause_reason": job.pause_reason or None,
        "paused_by": job.paused_by or None,
        "paused_at": _iso(job.paused_at),
        "resume_at": _iso(job.resume_at),
        "pause_after_failures": job.pause_after_failures,
        "consecutive_failures": job.consecutive_failures,
        "start_at": _iso(job.start_at),
        "end_at": _iso(job.end_at),
        "max_runs": job.max_runs,
        "scheduled_run_count": job.scheduled_run_count,
        "runs_remaining": job.runs_remaining,
    }


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def execution_waiting_list(*, job: Job) -> QuerySet[JobExecution]:
    """The runs of ``job`` that wait for a free slot (overlap policy buffer one or buffer
    all), or were sent after waiting and have not started, oldest fire time first."""
    return JobExecution.objects.filter(
        job=job, status__in=[ExecutionStatus.WAITING, ExecutionStatus.QUEUED]
    ).order_by("scheduled_at", "pk")


def job_group(*, job: Job) -> JobGroup | None:
    """The row of ``job``'s group (``None``: the group has none)."""
    return JobGroup.objects.filter(name=job.group).first()


#: The attribute of a job read with :func:`with_group_queue`: its group's queue.
GROUP_QUEUE = "group_queue"


def with_group_queue(jobs: QuerySet[Job]) -> QuerySet[Job]:
    """``jobs`` read with their group's queue (:func:`job_routed_queue` then asks no
    query more: beat, which builds many messages a pass)."""
    from django.db.models import OuterRef, Subquery, Value
    from django.db.models.functions import Coalesce

    queue = JobGroup.objects.filter(name=OuterRef("group")).values("queue")[:1]
    return jobs.annotate(**{GROUP_QUEUE: Coalesce(Subquery(queue), Value(""))})


def job_routed_queue(*, job: Job) -> str:
    """The queue a run of ``job`` is sent to: the job's own, else its group's (empty:
    Celery's default queue). Beat, run now, re-run, backfill and a waiting run sent on
    all route through this."""
    if job.queue:
        return job.queue
    if not hasattr(job, GROUP_QUEUE):
        found = JobGroup.objects.filter(name=job.group).values_list("queue", flat=True).first()
        setattr(job, GROUP_QUEUE, found or "")
    return getattr(job, GROUP_QUEUE)


def job_queue(*, job: Job) -> str:
    """The queue ``job``'s runs are sent to, by name (:func:`job_routed_queue`, else
    Celery's default queue)."""
    from celery import current_app

    return job_routed_queue(job=job) or current_app.conf.task_default_queue


def job_list_with_alert_recipients() -> QuerySet[Job]:
    """The enabled jobs whose alerts go somewhere (:func:`job_alert_recipients`): their
    own recipients, or their group's."""
    from django.db.models import Q

    groups = JobGroup.objects.exclude(alert_emails="", alert_webhooks="").values("name")
    own = ~Q(alert_emails="", alert_webhooks="")
    return Job.objects.filter(own | Q(group__in=groups), enabled=True)


def job_alert_recipients(*, job: Job) -> tuple[list[str], list[str]]:
    """Who ``job``'s alerts go to, as (e-mail addresses, webhook URLs): its own
    recipients, or, when it has none (neither e-mail nor webhook), its group's."""
    own = job.alert_recipients
    if any(own):
        return own
    group = job_group(job=job)
    return group.alert_recipients if group is not None else ([], [])


def _trigger_ok(job: Job) -> bool:
    try:
        job.trigger()
    except ValueError:
        return False
    return True


def job_status_list(*, group: str | None = None) -> list[dict[str, Any]]:
    """Every job's status (the seed design's ``get_all_tasks``)."""
    return [job_status(job=job) for job in job_list(group=group)]


def execution_list(*, job: Job | None = None) -> QuerySet[JobExecution]:
    executions = JobExecution.objects.all()
    if job is not None:
        executions = executions.filter(job=job)
    return executions.order_by("-started_at")


def config_export(
    *, history_days: int | None = None, include_secrets: bool = False
) -> dict[str, Any]:
    """All job definitions in the config format; with ``history_days``, recent runs too.

    Sensitive keyword arguments are masked unless ``include_secrets``; importing a masked
    file keeps the stored secrets. The document holds no timestamp of its own, so
    exporting the same jobs twice gives the same file.
    """
    from scheduling.config import FORMAT, calendar_to_entry, group_to_entry, job_to_entry
    from scheduling.models import Calendar

    entries = [
        job_to_entry(job) for job in Job.objects.order_by("name").prefetch_related("calendars")
    ]
    if not include_secrets:
        for entry in entries:
            entry["kwargs"] = masking.mask(entry["kwargs"])
    document: dict[str, Any] = {"format": FORMAT, "jobs": entries}
    calendars = [
        calendar_to_entry(calendar) for calendar in Calendar.objects.prefetch_related("rules")
    ]
    if calendars:  # only when there are some: a file of jobs alone stays as it was
        document["calendars"] = calendars
    groups = [group_to_entry(group) for group in JobGroup.objects.order_by("name")]
    if groups:  # likewise
        document["groups"] = groups
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


# --- statistics ------------------------------------------------------------------------------

WINDOWS = {
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
    "week": dt.timedelta(days=7),
    "month": dt.timedelta(days=30),
}


def window_bounds(
    *, window: str = "day", since: dt.datetime | None = None, until: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """``(since, until)`` for a named window (hour, day, week, month) or custom bounds."""
    until = until or timezone.now()
    if since is None:
        if window not in WINDOWS:
            raise ValidationError(
                {
                    "window": f"Unknown window {window!r}; use one of {', '.join(WINDOWS)} "
                    "or give since."
                }
            )
        since = until - WINDOWS[window]
    if since >= until:
        raise ValidationError({"since": "The window must start before it ends."})
    return since, until


def window_moment_parse(*, name: str, value: str | None) -> dt.datetime | None:
    """The ``since``/``until`` parameter ``name`` as an aware date-time (``None`` if empty).

    ``ValidationError`` naming the parameter for anything else: not ISO 8601, no timezone
    offset (a bare date or a naive time could be any of several instants, so it is
    refused rather than guessed), or out of the range a database can store.
    """
    if not value:
        return None
    example = "2026-11-01T00:00:00+08:00"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            {
                name: _("%(value)r is not an ISO 8601 date-time, e.g. %(example)s.")
                % {"value": value, "example": example}
            }
        ) from None
    if timezone.is_naive(moment):
        raise ValidationError(
            {
                name: _("%(value)r needs a timezone offset, e.g. %(example)s.")
                % {"value": value, "example": example}
            }
        )
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ValidationError({name: _("%(value)r is out of range.") % {"value": value}}) from None


def _percentiles(durations_qs, fractions: tuple[float, ...]) -> list[float | None]:
    from django.db import connection

    if connection.vendor == "postgresql":
        from django.db.models import Aggregate, FloatField

        class PercentileCont(Aggregate):
            """PostgreSQL's ``percentile_cont`` ordered-set aggregate."""

            function = "percentile_cont"
            template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
            output_field = FloatField()

        return list(
            durations_qs.aggregate(
                **{f"p{i}": PercentileCont("duration", fraction=f) for i, f in enumerate(fractions)}
            ).values()
        )
    values = sorted(durations_qs.values_list("duration", flat=True))
    if not values:
        return [None] * len(fractions)
    result = []
    for fraction in fractions:  # linear interpolation, as percentile_cont
        position = fraction * (len(values) - 1)
        low = int(position)
        high = min(low + 1, len(values) - 1)
        result.append(values[low] + (values[high] - values[low]) * (position - low))
    return result


def job_statistics(*, job: Job, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    """Runs, success rate, min/avg/max and p50/p95/p99 duration of ``job`` in a window."""
    from django.db.models import Avg, Count, Max, Min, Q, Sum
    from django.db.models.functions import Coalesce

    rows = JobExecution.objects.filter(job=job, started_at__gte=since, started_at__lt=until)
    executed = rows.filter(status__in=EXECUTED_STATUSES, duration__isnull=False)
    totals = rows.aggregate(
        runs=Count("pk", filter=Q(status__in=EXECUTED_STATUSES)),
        successes=Count("pk", filter=Q(status=ExecutionStatus.SUCCESS)),
        failures=Count("pk", filter=Q(status__in=FAILED_STATUSES)),
        # A summary of fire times beat did not send counts each of them.
        missed=Coalesce(
            Sum(Coalesce("missed_count", 1), filter=Q(status=ExecutionStatus.MISSED)), 0
        ),
        skipped=Count("pk", filter=Q(status=ExecutionStatus.SKIPPED)),
        cancelled=Count("pk", filter=Q(status=ExecutionStatus.CANCELLED)),
        terminated=Count("pk", filter=Q(status=ExecutionStatus.TERMINATED)),
    )
    durations = executed.aggregate(min=Min("duration"), avg=Avg("duration"), max=Max("duration"))
    p50, p95, p99 = _percentiles(executed, (0.5, 0.95, 0.99))
    last = rows.exclude(status__in=UNFINISHED_STATUSES).order_by("-started_at").first()
    runs = totals["runs"]
    return {
        "job": job.name,
        "since": since.isoformat(),
        "until": until.isoformat(),
        **totals,
        "success_rate": round(totals["successes"] / runs, 4) if runs else None,
        **durations,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "last_run_at": last.started_at.isoformat() if last else None,
        "last_status": last.status if last else None,
    }


def slow_jobs(
    *, since: dt.datetime, until: dt.datetime, threshold: float | None = None
) -> list[dict[str, Any]]:
    """Jobs whose average duration in the window is over their threshold, slowest first.

    The threshold is ``threshold`` if given, else the job's own, else the global setting.
    """
    from django.db.models import Avg, Count, Max

    rows = (
        JobExecution.objects.filter(
            started_at__gte=since,
            started_at__lt=until,
            status__in=EXECUTED_STATUSES,
            duration__isnull=False,
            job__isnull=False,
        )
        .values("job_id")
        .annotate(avg=Avg("duration"), max=Max("duration"), runs=Count("pk"))
    )
    jobs = {job.pk: job for job in Job.objects.filter(pk__in=[row["job_id"] for row in rows])}
    report = []
    for row in rows:
        job = jobs.get(row["job_id"])
        if job is None:
            continue
        limit = threshold if threshold is not None else job.slow_after
        if row["avg"] > limit:
            report.append(
                {
                    "job": job.name,
                    "avg": row["avg"],
                    "max": row["max"],
                    "runs": row["runs"],
                    "threshold": limit,
                }
            )
    return sorted(report, key=lambda item: item["avg"], reverse=True)


def outcomes_per_day(*, days: int = 14) -> list[dict[str, Any]]:
    """Runs per UTC day and outcome, from the daily rollup (no scan of executions)."""
    from django.db.models import Sum

    from scheduling.models import JobDailyStats

    first = (timezone.now() - dt.timedelta(days=days - 1)).astimezone(dt.UTC).date()
    rows = (
        JobDailyStats.objects.filter(day__gte=first)
        .values("day", "status")
        .annotate(runs=Sum("count"))
        .order_by("day", "status")
    )
    return [
        {"day": row["day"].isoformat(), "status": row["status"], "runs": row["runs"]}
        for row in rows
    ]


def duration_series(*, job: Job, limit: int = 200) -> list[dict[str, Any]]:
    """The last ``limit`` executed runs of ``job``: start time, duration, outcome."""
    rows = (
        JobExecution.objects.filter(job=job, status__in=EXECUTED_STATUSES, duration__isnull=False)
        .order_by("-started_at")
        .values("started_at", "duration", "status")[:limit]
    )
    return [
        {"at": row["started_at"].isoformat(), "duration": row["duration"], "status": row["status"]}
        for row in reversed(list(rows))
    ]


def upcoming_runs(*, limit: int = 15, jobs: QuerySet[Job] | None = None) -> list[Job]:
    """The ``limit`` enabled jobs (of ``jobs``, default all) that fire next, soonest first."""
    jobs = Job.objects.all() if jobs is None else jobs
    return list(
        jobs.filter(enabled=True, next_run_at__isnull=False).order_by("next_run_at")[:limit]
    )


def execution_in_progress_list(*, job: Job | None = None) -> QuerySet[JobExecution]:
    """The runs in progress (running, or asked to stop), of ``job`` or of every job, oldest
    first."""
    runs = JobExecution.objects.filter(status__in=IN_PROGRESS_STATUSES).select_related("job")
    if job is not None:
        runs = runs.filter(job=job)
    return runs.order_by("started_at", "pk")


def fire_time_heat_map(*, since: dt.datetime, until: dt.datetime) -> list[list[int]]:
    """Fire times in the window by hour of the day (rows, the operator's zone) and minute
    of the hour (columns): where runs pile up (the top of the hour). An outage's summary
    row counts once, at its first fire time."""
    from django.db.models import Count
    from django.db.models.functions import ExtractHour, ExtractMinute

    grid = [[0] * 60 for _hour in range(24)]
    rows = (
        JobExecution.objects.filter(scheduled_at__gte=since, scheduled_at__lt=until)
        .annotate(
            hour=ExtractHour("scheduled_at", tzinfo=timezone.get_current_timezone()),
            minute=ExtractMinute("scheduled_at", tzinfo=timezone.get_current_timezone()),
        )
        .values("hour", "minute")
        .annotate(runs=Count("pk"))
    )
    for row in rows:
        grid[row["hour"]][row["minute"]] += row["runs"]
    return grid


def failures_per_job(
    *, since: dt.datetime, until: dt.datetime, limit: int = 15
) -> list[dict[str, Any]]:
    """The jobs with the most failed runs (failure, timeout, lost) in the window."""
    from django.db.models import Count

    rows = (
        JobExecution.objects.filter(
            started_at__gte=since, started_at__lt=until, status__in=FAILED_STATUSES
        )
        .values("job_name")
        .annotate(failures=Count("pk"))
        .order_by("-failures", "job_name")[:limit]
    )
    return [{"job": row["job_name"], "failures": row["failures"]} for row in rows]


def missed_by_cause(*, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """Missed fire times in the window grouped by cause (the reason recorded): one line per
    cause, however many rows and jobs it touched, so that a stopped runner is one event."""
    from django.db.models import Count, Max, Min, Sum
    from django.db.models.functions import Coalesce

    rows = (
        JobExecution.objects.filter(
            status=ExecutionStatus.MISSED, scheduled_at__gte=since, scheduled_at__lt=until
        )
        .values("reason")
        .annotate(
            fire_times=Sum(Coalesce("missed_count", 1)),
            jobs=Count("job_name", distinct=True),
            first=Min("scheduled_at"),
            last=Max(Coalesce("missed_until", "scheduled_at")),
        )
        .order_by("-last")
    )
    return list(rows)


def api_key_find(*, raw: str) -> ApiKey | None:
    """The key row whose key is ``raw`` (``sj_<prefix>_<secret>``), active or not; ``None``
    when no key is ``raw``. The hash is compared in constant time."""
    marker, _sep, rest = raw.partition("_")
    prefix, _sep, secret = rest.partition("_")
    if marker != ApiKey.PREFIX or not prefix or not secret or "\x00" in raw:
        return None  # PostgreSQL cannot even compare text holding NUL
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is None:
        return None
    expected = ApiKey.hash_secret(salt=key.salt, secret=secret)
    return key if hmac.compare_digest(expected.encode(), key.key_hash.encode()) else None


def group_rows(*, names: Iterable[str] | None = None) -> list[JobGroup]:
    """Every job group (a group name some job has, or a group on record; ``names``: only
    those), by name: its row (unsaved for a group only its jobs name), with ``jobs`` and
    ``enabled``, how many jobs it has and how many of them are enabled."""
    from django.db.models import Count, Q

    jobs = Job.objects.exclude(group="")
    groups = JobGroup.objects.all()
    if names is not None:
        names = [name for name in names if "\x00" not in name]  # PostgreSQL cannot compare it
        jobs, groups = jobs.filter(group__in=names), groups.filter(name__in=names)
    counts = {
        row["group"]: row
        for row in jobs.values("group").annotate(
            jobs=Count("pk"), enabled=Count("pk", filter=Q(enabled=True))
        )
    }
    stored = {group.name: group for group in groups}
    rows = []
    for name in sorted(set(counts) | set(stored)):
        group = stored.get(name) or JobGroup(name=name)
        group.jobs = counts.get(name, {}).get("jobs", 0)
        group.enabled = counts.get(name, {}).get("enabled", 0)
        rows.append(group)
    return rows


def group_list() -> list[dict[str, Any]]:
    """Every job group (:func:`group_rows`): how many jobs, how many enabled, who paused
    it, when and why (``None``: not paused), its cap on runs at once (``None``: none) and
    its jobs' default queue and alert recipients."""
    return [
        {
            "name": group.name,
            "jobs": group.jobs,
            "enabled": group.enabled,
            "paused": group.job_pause_reason() if group.paused else None,
            "paused_at": group.paused_at.isoformat() if group.paused else None,
            "max_instances": group.max_instances,
            "queue": group.queue,
            "alert_emails": group.alert_recipients[0],
            "alert_webhooks": group.alert_recipients[1],
        }
        for group in group_rows()
    ]
