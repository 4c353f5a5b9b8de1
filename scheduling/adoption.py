"""Writes: adopt a django-celery-beat schedule (its ``PeriodicTask`` rows) as jobs.

A project that ran django-celery-beat's ``DatabaseScheduler`` keeps its periodic tasks in
that app's tables. :func:`beat_schedule_adopt` creates one job per row it can express
with the same fire times, through :func:`scheduling.services.job_create` (so every rule of
a job is checked as for any other), and lists each row it leaves with the reason. The
rows stay as they are unless the caller asks to disable them, which happens in the same
transaction, so the two schedulers never both fire one schedule.

How a row maps (the fire times stay those django-celery-beat computes):

- crontab: a 5-field cron expression (second 0), read in the crontab's timezone. Each
  field is written as the set of values Celery parses from it, so Celery's syntax
  (``mon-fri``, ``*/15``, ``1-10/3``) means the same here. Celery fires a day only when
  it matches both the day of month and the day of week; cron here (classic cron) fires
  when either matches once both are restricted, so such a row is not adopted.
- interval: the same length, on the original's grid: counted from its last run (from
  when it was last changed if it never ran), so the next fire time is the one it would
  have had; a start time still ahead is the first fire time. Microsecond intervals
  (not whole seconds) are not adopted.
- clocked: once, at its clocked time (one still ahead).
- solar: not adopted (there are no sunrise triggers here).
- ``one_off`` on a crontab or interval: at most one run (max runs 1); ``expires``: no run
  after it (end at); ``expire_seconds``: the misfire grace; ``start_time`` ahead: no run
  before it (start at); enabled, args and kwargs (JSON text there), queue, exchange,
  routing key, priority and description are kept. Celery's priority is the broker's
  number (0 to 255; on Redis 0 is the most urgent); a job's is 0 to 9 with 9 the most
  urgent on every broker, so it is turned into the number that sends the same value.
- The task must be registered (``@job_task``); the reason says how to register it.

A row whose name is already a job's is left alone (counted as *existing*): adopting twice
changes nothing the second time. ``dry_run`` does every step and rolls it back.
"""

import dataclasses
import datetime as dt
import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from scheduling import errors, registry, selectors, services
from scheduling.models import MAX_PRIORITY, Job, TriggerType

#: Celery's interval periods that are whole seconds, and how many each is.
_PERIOD_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


class NotAdoptable(Exception):
    """A ``PeriodicTask`` row cannot become a job; the message says why (translated)."""


@dataclasses.dataclass
class AdoptReport:
    """What an adoption did (or, in a dry run, would do), row by row."""

    adopted: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    existing: list[str] = dataclasses.field(default_factory=list)
    refused: list[dict[str, str]] = dataclasses.field(default_factory=list)
    disabled_originals: list[str] = dataclasses.field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _cron_field(values: set[int], low: int, high: int) -> str:
    """One cron field for the set of ``values`` Celery parsed (``*`` for all of them)."""
    if set(values) >= set(range(low, high + 1)):
        return "*"
    ranges: list[list[int]] = []
    for value in sorted(values):
        if ranges and value == ranges[-1][1] + 1:
            ranges[-1][1] = value
        else:
            ranges.append([value, value])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _crontab_fields(task: PeriodicTask) -> dict[str, Any]:
    crontab = task.crontab
    try:
        parsed = crontab.schedule  # Celery's own parse of the five fields
    except (ValueError, TypeError) as exc:
        raise NotAdoptable(
            _("its crontab is not valid for Celery: %(error)s") % {"error": exc}
        ) from None
    day_of_month = _cron_field(parsed.day_of_month, 1, 31)
    day_of_week = _cron_field(parsed.day_of_week, 0, 6)
    if day_of_month != "*" and day_of_week != "*":
        raise NotAdoptable(
            _(
                "its crontab restricts both the day of month (%(dom)s) and the day of week "
                "(%(dow)s): Celery fires only on days matching both, cron here on days "
                "matching either; split it into jobs by hand"
            )
            % {"dom": crontab.day_of_month, "dow": crontab.day_of_week}
        )
    expression = " ".join(
        [
            _cron_field(parsed.minute, 0, 59),
            _cron_field(parsed.hour, 0, 23),
            day_of_month,
            _cron_field(parsed.month_of_year, 1, 12),
            day_of_week,
        ]
    )
    return {
        "trigger_type": TriggerType.CRON,
        "cron_expression": expression,
        "timezone": str(crontab.timezone),
    }


def _interval_fields(task: PeriodicTask, now: dt.datetime) -> dict[str, Any]:
    interval = task.interval
    if interval.period not in _PERIOD_SECONDS:
        raise NotAdoptable(
            _("its interval is in %(period)s; only whole seconds and longer are adopted")
            % {"period": interval.period}
        )
    every = dt.timedelta(seconds=interval.every * _PERIOD_SECONDS[interval.period])
    if every.total_seconds() < 1:
        raise NotAdoptable(_("its interval is shorter than one second"))
    if task.start_time is not None and task.start_time > now:
        first = task.start_time
    else:
        # The original's grid: its last run (or last change) plus whole intervals.
        base = task.last_run_at or task.date_changed or now
        steps = max((now - base) // every + 1, 1)
        first = base + steps * every
    return {
        "trigger_type": TriggerType.INTERVAL,
        "interval_every": interval.every,
        "interval_period": interval.period,
        "start_at": first,
    }


def _clocked_fields(task: PeriodicTask, now: dt.datetime) -> dict[str, Any]:
    run_at = task.clocked.clocked_time
    if run_at <= now:
        raise NotAdoptable(
            _("its clocked time %(at)s has passed: nothing is left to run")
            % {"at": run_at.isoformat()}
        )
    return {"trigger_type": TriggerType.DATE, "run_at": run_at}


def _json_text(text: str | None, kind: type, option: str) -> Any:
    try:
        value = json.loads(text) if text and text.strip() else kind()
    except json.JSONDecodeError as exc:
        raise NotAdoptable(
            _("its %(option)s are not valid JSON: %(error)s") % {"option": option, "error": exc}
        ) from None
    if not isinstance(value, kind):
        raise NotAdoptable(
            _("its %(option)s are not a JSON %(kind)s")
            % {"option": option, "kind": "list" if kind is list else "object"}
        )
    return value


def job_priority(celery_priority: int | None, *, redis: bool) -> int:
    """The job priority whose messages carry ``celery_priority`` (clamped to 0-9, as the
    brokers clamp it): a job's 9 is sent as 0 on Redis (there 0 goes first)."""
    if celery_priority is None:
        return 0
    sent = min(max(celery_priority, 0), MAX_PRIORITY)
    return MAX_PRIORITY - sent if redis else sent


def _unregistered_reason(name: str) -> str:
    from celery import current_app

    if name in current_app.tasks:
        how = _(
            "it is a Celery task: put @job_task() above its @shared_task (or @app.task) decorator"
        )
    else:
        how = _('decorate its function with @job_task("%(name)s")') % {"name": name}
    return _(
        "its task %(name)r is not registered: %(how)s, in an installed app's jobs.py or "
        "a module named in SCHEDULING_EXTRA_JOB_MODULES, then adopt again"
    ) % {"name": name, "how": how}


def job_fields(task: PeriodicTask, *, now: dt.datetime, redis: bool) -> dict[str, Any]:
    """The :func:`~scheduling.services.job_create` arguments that give ``task``'s fire
    times; :class:`NotAdoptable` says why there are none."""
    if task.solar_id is not None:
        raise NotAdoptable(_("it has a solar schedule, which has no equivalent here"))
    if not registry.is_registered(task.task):
        raise NotAdoptable(_unregistered_reason(task.task))
    if task.expires is not None and task.expires <= now:
        raise NotAdoptable(
            _("it expired at %(at)s: django-celery-beat fires it no more")
            % {"at": task.expires.isoformat()}
        )
    if task.crontab_id is not None:
        fields = _crontab_fields(task)
    elif task.interval_id is not None:
        fields = _interval_fields(task, now)
    elif task.clocked_id is not None:
        fields = _clocked_fields(task, now)
    else:
        raise NotAdoptable(_("it has no schedule"))
    if fields["trigger_type"] == TriggerType.CRON and task.start_time and task.start_time > now:
        fields["start_at"] = task.start_time
    if task.one_off and fields["trigger_type"] != TriggerType.DATE:
        fields["max_runs"] = 1
    if task.expires is not None:
        fields["end_at"] = task.expires
    if task.expire_seconds:
        fields["misfire_grace_time"] = task.expire_seconds
    fields.update(
        name=task.name,
        task=task.task,
        args=_json_text(task.args, list, "args"),
        kwargs=_json_text(task.kwargs, dict, "kwargs"),
        enabled=task.enabled,
        description=task.description or "",
        queue=task.queue or "",
        exchange=task.exchange or "",
        routing_key=task.routing_key or "",
        priority=job_priority(task.priority, redis=redis),
    )
    return fields


def beat_schedule_adopt(*, dry_run: bool = False, disable_originals: bool = False) -> AdoptReport:
    """Create a job for each django-celery-beat ``PeriodicTask`` that can be one.

    Rows are read in name order; Celery's own entries (``celery.backend_cleanup``) are
    rows like any other. With ``disable_originals`` the rows adopted now, and those adopted
    before (a job of the same name and task exists), are disabled in the same transaction
    (and django-celery-beat told of the change, as ``update()`` sends no signal), so a
    django-celery-beat scheduler still running stops firing them. ``dry_run`` rolls
    everything back and reports what would happen.
    """
    from celery import current_app

    report = AdoptReport(dry_run=dry_run)
    now = timezone.now()
    redis = services.broker_is_redis(current_app.conf.broker_url or "")
    rows = list(
        PeriodicTask.objects.select_related("crontab", "interval", "clocked").order_by("name")
    )
    existing = {
        job.name: job.task for job in Job.objects.filter(name__in=[row.name for row in rows])
    }
    to_disable: list[int] = []
    with transaction.atomic():
        for row in rows:
            if row.name in existing:
                report.existing.append(row.name)
                if existing[row.name] == row.task and row.enabled:
                    to_disable.append(row.pk)
                continue
            try:
                fields = job_fields(row, now=now, redis=redis)
                with transaction.atomic():
                    job = services.job_create(**fields)
            except NotAdoptable as exc:
                report.refused.append({"name": row.name, "task": row.task, "reason": str(exc)})
                continue
            except ValidationError as exc:
                report.refused.append(
                    {"name": row.name, "task": row.task, "reason": errors.one_line(exc)}
                )
                continue
            status = selectors.job_status(job=job)
            report.adopted.append(
                {
                    "name": job.name,
                    "task": job.task,
                    "trigger": status["trigger_description"],
                    "timezone": job.timezone,
                    "enabled": job.enabled,
                    "next_run_time": status["next_run_time"],
                    "original_id": row.pk,
                }
            )
            if row.enabled:
                to_disable.append(row.pk)
        if disable_originals and to_disable:
            disabled = PeriodicTask.objects.filter(pk__in=to_disable, enabled=True)
            report.disabled_originals = sorted(disabled.values_list("name", flat=True))
            disabled.update(enabled=False)
            PeriodicTasks.update_changed()
        if dry_run:
            transaction.set_rollback(True)
    return report
