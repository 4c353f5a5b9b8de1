"""Writes: create, change, pause, stop and run jobs; cancel, terminate, drop and re-run runs;
backfill a range; import job definitions.

Every function here is keyword-only and named ``<entity>_<action>``. Services that change
a schedule store the job's next fire time (``next_run_at``, and ``dispatch_at`` with its
jitter) in the same transaction; beat asks the database for due jobs on every pass, so an
edit, a pause, a deletion or a whole import takes effect within a second, with nothing to
restart and nothing to reload.
"""

import collections
import dataclasses
import datetime as dt
import functools
import json
import logging
import secrets
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from celery.utils.saferepr import saferepr
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import OperationalError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from scheduling import (
    alerts,
    audit,
    calendar_services,
    chain_services,
    errors,
    group_services,
    masking,
    registry,
    selectors,
    signals,
)
from scheduling.config import (
    DEFAULT_JOBS,
    ConfigError,
    GroupSpec,
    JobSpec,
    calendars_parse,
    config_parse,
    groups_parse,
    spec_differences,
)
from scheduling.models import (
    FAILED_STATUSES,
    MAX_PRIORITY,
    UNFINISHED_STATUSES,
    AlertKind,
    ApiKey,
    AuditSource,
    Calendar,
    ExecutionStatus,
    ExecutionTrigger,
    InstalledDefault,
    Job,
    JobExecution,
    JobGroup,
    RunOverride,
    TriggerType,
    kwargs_problem,
    overlap_problem,
)
from scheduling.runs.cancel import stop_request
from scheduling.runs.lease import db_now

logger = logging.getLogger(__name__)

#: How many times a job's removal is tried when PostgreSQL fails it to break a deadlock.
REMOVE_TRIES = 3

# What each permission lets an import do, for its refusal message.
IMPORT_ACTIONS = {
    "add_job": gettext_lazy("create"),
    "change_job": gettext_lazy("update"),
    "pause_job": gettext_lazy("pause or resume"),
    "delete_job": gettext_lazy("remove"),
}

SCHEDULE_FIELDS = frozenset(Job.SCHEDULE_FIELDS)
TRIGGER_FIELDS = frozenset(Job.TRIGGER_FIELDS)
EDITABLE_FIELDS = frozenset(Job.EDITABLE_FIELDS)


def _held_by_group(job: Job) -> bool:
    """Whether ``job`` (as on record) is paused by its group's pause, not on its own."""
    group = group_services.paused_group(name=job.group) if job.group else None
    return not job.enabled and group is not None and job.pause_reason == group.job_pause_reason()


@transaction.atomic
def job_save(*, job: Job, changed: Iterable[str] | None = None) -> Job:
    """Validate and save ``job``; recompute its next run when its schedule changed.

    ``changed`` names the fields that changed (``None``: a new job, or treat all as
    changed). Raises ``ValidationError`` naming the field; nothing is saved then. An
    enabled job that joins a paused group (created in it, or moved into it) is paused as
    the group's pause paused its jobs, so the group's resume resumes it.
    """
    creating = job.pk is None
    changed_set = set(EDITABLE_FIELDS if changed is None or creating else changed)
    # The group it is in after the save, held before the job's row is locked: a pause of
    # that group meanwhile is either committed, and seen here, or waits for this save and
    # then finds the job in the group.
    group_services.hold_group(name=job.group)
    group = JobGroup.objects.filter(name=job.group).first() if job.group else None
    # Under the row lock from here on, so two concurrent edits never share a version
    # number, beat's version guard always sees the newer one, and what beat wrote
    # meanwhile (the runs it counted, a job it finished) is what the edit is validated and
    # scheduled against.
    before = None if creating else Job.objects.select_for_update().get(pk=job.pk)
    if before is not None:
        job.scheduled_run_count = before.scheduled_run_count
        if "enabled" not in changed_set:
            job.enabled = before.enabled
            # A job its group's pause holds that leaves the group leaves the pause too
            # (the new group's, if that one is paused, holds it below).
            if not job.enabled and before.group != job.group and _held_by_group(before):
                job.enabled = True
                changed_set.add("enabled")
    job.full_clean()
    held_by = None
    if (creating or before.group != job.group) and group is not None and group.paused:
        if job.enabled:
            held_by = group
            job.enabled = False
            changed_set.add("enabled")
        elif before is not None and _held_by_group(before):
            held_by = group  # from one paused group's hold to the other's
    now = timezone.now()
    if creating or changed_set & TRIGGER_FIELDS:
        job.schedule_anchor = now
    reschedule = creating or bool(changed_set & SCHEDULE_FIELDS) or job.next_run_at is None
    if reschedule:
        job_schedule_next(job=job, now=now)
    if creating:
        if held_by is not None:
            _set_pause_state(job, paused=True, reason=held_by.job_pause_reason())
        elif not job.enabled:
            _set_pause_state(job, paused=True, reason=job.pause_reason, until=job.resume_at)
        job.save()
        _emit(
            signals.job_added,
            job,
            {f: [None, _jsonable(getattr(job, f))] for f in sorted(EDITABLE_FIELDS)},
        )
    else:
        job.version = before.version + 1
        fields = (changed_set & EDITABLE_FIELDS) | {"version", "updated_at", "schedule_anchor"}
        if reschedule:
            fields |= {"next_run_at", "dispatch_at", "excluded_from"}
        if before.enabled != job.enabled or held_by is not None:
            reason = held_by.job_pause_reason() if held_by is not None else ""
            _set_pause_state(job, paused=not job.enabled, reason=reason)
            fields |= {*Job.PAUSE_FIELDS, "consecutive_failures"}
        job.save(update_fields=sorted(fields))
        diff = {
            f: [_jsonable(getattr(before, f)), _jsonable(getattr(job, f))]
            for f in sorted(changed_set & EDITABLE_FIELDS)
            if getattr(before, f) != getattr(job, f)
        }
        # One event per change: a pure pause or resume, or else "changed" (with
        # ``enabled`` among the changes when the edit also paused or resumed the job).
        if set(diff) == {"enabled"}:
            _emit(signals.job_resumed if job.enabled else signals.job_paused, job, diff)
        elif diff:
            _emit(signals.job_changed, job, diff)
    return job


def job_schedule_next(*, job: Job, now: dt.datetime) -> None:
    """Give ``job`` its first fire time after ``now`` (none while paused), its calendars'
    exclusions applied; excluded fire times before it are noted for beat to record."""
    job.excluded_from = None
    if job.enabled:
        job.set_next_run_after(now)
    else:
        job.set_next_run(None)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return masking.mask(value)


def _emit(signal, job: Job, changes: dict[str, Any]) -> None:
    context = audit.current()
    signal.send_robust(
        sender=Job, job=job, source=context.source, actor=context.actor, changes=changes
    )


def job_create(*, name: str, task: str, trigger_type: str, **fields: Any) -> Job:
    """Create a job of any trigger type from model field values."""
    unknown = set(fields) - EDITABLE_FIELDS - {"schedule_anchor"}
    if unknown:
        raise TypeError(f"Unknown job fields: {', '.join(sorted(unknown))}")
    job = Job(name=name, task=task, trigger_type=trigger_type, **fields)
    return job_save(job=job)


@transaction.atomic
def job_bulk_create(*, jobs: list[Job], batch_size: int = 1000) -> list[Job]:
    """Validate and insert many new jobs at once (benchmarks, provisioning scripts).

    Each job is validated like in :func:`job_save` (``ValidationError`` names the job and
    the field; nothing is inserted then) and gets its next fire time; one created in a
    paused group is paused with it, as :func:`job_save` does. No per-job events are
    sent: one ``job_added`` per job would dominate the cost.
    """
    now = timezone.now()
    counts = collections.Counter(job.name for job in jobs)
    repeated = {name for name, count in counts.items() if count > 1}
    names = list(counts)
    taken = set()
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        taken |= set(Job.objects.filter(name__in=chunk).values_list("name", flat=True))
    if taken or repeated:
        raise ValidationError(
            {"name": f"Job names already used: {', '.join(sorted(taken | repeated))}"}
        )
    paused = {
        group.name: group
        for group in JobGroup.objects.filter(
            name__in={job.group for job in jobs}, paused_at__isnull=False
        )
    }
    for job in jobs:
        try:
            job.full_clean(validate_unique=False)
        except ValidationError as exc:
            raise ValidationError(
                {
                    field: [f"Job {job.name!r}: {message}" for message in messages]
                    for field, messages in exc.message_dict.items()
                }
            ) from exc
        held_by = paused.get(job.group)
        if job.enabled and held_by is not None:
            job.enabled = False
            _set_pause_state(job, paused=True, reason=held_by.job_pause_reason())
        job.schedule_anchor = now
        job.set_next_run(job.compute_next_run(now) if job.enabled else None)
    return Job.objects.bulk_create(jobs, batch_size=batch_size)


def job_register_cron(*, name: str, task: str, expression: str, **fields: Any) -> Job:
    """Register a cron job; ``expression`` has 6 fields (seconds first) or 5."""
    return job_create(
        name=name, task=task, trigger_type=TriggerType.CRON, cron_expression=expression, **fields
    )


def job_register_interval(
    *, name: str, task: str, every: int, period: str = "minutes", **fields: Any
) -> Job:
    """Register a job that runs every ``every`` ``period`` (seconds ... weeks)."""
    return job_create(
        name=name,
        task=task,
        trigger_type=TriggerType.INTERVAL,
        interval_every=every,
        interval_period=period,
        **fields,
    )


def job_register_date(*, name: str, task: str, run_at: dt.datetime, **fields: Any) -> Job:
    """Register a job that runs once at ``run_at``."""
    return job_create(name=name, task=task, trigger_type=TriggerType.DATE, run_at=run_at, **fields)


def job_schedule_delay(
    *, task: str, delay_seconds: float, name: str | None = None, **fields: Any
) -> Job:
    """Run ``task`` once, ``delay_seconds`` from now (the guide's delayed task)."""
    if delay_seconds < 0:
        raise ValidationError({"delay_seconds": _("The delay must not be negative.")})
    run_at = timezone.now() + dt.timedelta(seconds=delay_seconds)
    name = name or f"delayed:{task}:{run_at:%Y%m%d%H%M%S}:{uuid.uuid4().hex[:6]}"
    return job_register_date(name=name, task=task, run_at=run_at, **fields)


def job_update(*, job: Job, **fields: Any) -> Job:
    """Change any editable fields of ``job`` (arguments, trigger, options)."""
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise TypeError(f"Unknown job fields: {', '.join(sorted(unknown))}")
    for field, value in fields.items():
        setattr(job, field, value)
    return job_save(job=job, changed=fields)


def job_reschedule(*, job: Job, trigger_type: str | None = None, **trigger: Any) -> Job:
    """Give ``job`` a new trigger (the guide's ``modify_task``)."""
    fields = dict(trigger)
    if trigger_type is not None:
        fields["trigger_type"] = trigger_type
    unknown = set(fields) - SCHEDULE_FIELDS
    if unknown:
        raise TypeError(f"Not trigger fields: {', '.join(sorted(unknown))}")
    return job_update(job=job, **fields)


def _set_pause_state(
    job: Job, *, paused: bool, reason: str = "", until: dt.datetime | None = None
) -> None:
    """Record who paused ``job``, when, why and until when; a resume clears it all and
    starts the count of failures in a row again (a pause keeps it, to be read)."""
    job.pause_reason = reason if paused else ""
    job.paused_by = audit.current().actor if paused else ""
    job.paused_at = timezone.now() if paused else None
    job.resume_at = until if paused else None
    if not paused:
        job.consecutive_failures = 0


def _pause_until_check(until: dt.datetime | None) -> None:
    if until is None:
        return
    if timezone.is_naive(until):
        raise ValidationError({"resume_at": _("Give the resume time with its timezone.")})
    if until <= timezone.now():
        raise ValidationError(
            {"resume_at": _("The resume time %(until)s has already passed.") % {"until": until}}
        )


@transaction.atomic
def job_pause(*, job: Job, reason: str = "", until: dt.datetime | None = None) -> Job:
    """Stop firing ``job``, saying why and, with ``until``, when it resumes by itself;
    its definition stays. Pausing a paused job gives it the new reason and resume time.

    Only the pause changes, without validating the rest, so an operator can pause
    exactly the job that is broken (a bad cron, a task no longer registered).
    """
    reason = (reason or "").strip()
    max_length = Job._meta.get_field("pause_reason").max_length
    if len(reason) > max_length:
        raise ValidationError(
            {
                "pause_reason": _("Keep the reason under %(limit)d characters.")
                % {"limit": max_length}
            }
        )
    _pause_until_check(until)
    before = Job.objects.select_for_update().get(pk=job.pk)
    job.version = before.version + 1
    job.enabled = False
    job.set_next_run(None)
    if before.enabled:
        _set_pause_state(job, paused=True, reason=reason, until=until)
    else:
        job.pause_reason, job.resume_at = reason, until
    job.save(
        update_fields=[
            "enabled",
            "next_run_at",
            "dispatch_at",
            "version",
            "updated_at",
            *Job.PAUSE_FIELDS,
            "consecutive_failures",
        ]
    )
    diff = {
        field: [_jsonable(getattr(before, field)), _jsonable(getattr(job, field))]
        for field in ("enabled", "pause_reason", "resume_at")
        if getattr(before, field) != getattr(job, field)
    }
    if diff:
        _emit(signals.job_paused, job, diff)
    return job


@transaction.atomic
def job_stop(*, job: Job, reason: str) -> Job:
    """Stop scheduling ``job`` (no next fire time) because its fire times cannot be
    computed; it stays enabled, and saving a fixed definition restarts it."""
    job.set_next_run(None)
    Job.objects.filter(pk=job.pk).update(next_run_at=None, dispatch_at=None)
    _emit(signals.job_stopped, job, {"error": reason})
    return job


@transaction.atomic
def job_finish(*, job: Job, reason: str) -> Job:
    """Disable ``job`` because its validity window is over (its end time passed or its
    max runs were sent); ``reason`` goes to its audit trail. Beat calls it in the pass
    that sent the last allowed fire time, under that pass's row lock.

    Like :func:`job_pause`, only the enabled flag and the next fire time change; resuming
    it needs a later end time or more max runs (:meth:`Job.clean` says so).
    """
    job.enabled = False
    job.set_next_run(None)
    Job.objects.filter(pk=job.pk).update(
        enabled=False,
        next_run_at=None,
        dispatch_at=None,
        version=F("version") + 1,
        updated_at=timezone.now(),
    )
    _emit(signals.job_finished, job, {"enabled": [True, False], "reason": reason})
    return job


def job_resume(*, job: Job) -> Job:
    """Fire ``job`` again, from its next fire time after now (validated like any edit)."""
    return job_update(job=job, enabled=True)


def jobs_resume_due(*, now: dt.datetime | None = None) -> list[Job]:
    """Resume the paused jobs whose resume time has come; return them.

    A job that can no longer be resumed (its task was unregistered, say) stays paused
    without a resume time, and the reason is recorded as a stop.
    """
    resumed = []
    due = Job.objects.filter(enabled=False, resume_at__lte=now or timezone.now())
    for job in due.order_by("resume_at")[:100]:
        try:
            resumed.append(job_resume(job=job))
        except ValidationError as exc:
            Job.objects.filter(pk=job.pk).update(resume_at=None)
            _emit(
                signals.job_stopped,
                job,
                {
                    "error": f"Could not resume at {job.resume_at.isoformat()}: {errors.one_line(exc)}"
                },
            )
    return resumed


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


@transaction.atomic
def job_track_failures(*, execution: JobExecution, retrying: bool = False) -> Job | None:
    """Count ``execution``'s outcome towards its job's failures in a row, and pause the
    job once they reach its ``pause_after_failures`` (with a failure alert saying so);
    return the job when this paused it.

    A failed attempt that is retried does not count (its last attempt does); a success
    starts the count again; other outcomes (missed, skipped, cancelled) leave it.

    An outcome recorded while the job is paused leaves the count too: the count is then
    the one that paused it (the reason quotes it), and runs already in progress when it
    paused itself (beat may have sent several fire times at once) are recorded as
    failures without counting again. The order is that of this row lock, so of two runs
    ending together, exactly the one that reaches the threshold pauses the job.
    """
    job = Job.objects.select_for_update().filter(pk=execution.job_id).first()
    if job is None or job.pause_after_failures is None or not job.enabled:
        return None
    if execution.status == ExecutionStatus.SUCCESS:
        if job.consecutive_failures:
            Job.objects.filter(pk=job.pk).update(consecutive_failures=0)
        return None
    if execution.status not in FAILED_STATUSES or retrying:
        return None
    job.consecutive_failures += 1
    Job.objects.filter(pk=job.pk).update(consecutive_failures=job.consecutive_failures)
    if job.consecutive_failures < job.pause_after_failures:
        return None
    reason = _("Paused by itself after %(count)d failed runs in a row; the last: %(detail)s") % {
        "count": job.consecutive_failures,
        "detail": _first_line(execution.exception or execution.reason or execution.status),
    }
    with audit.audit_context(source=AuditSource.SYSTEM, actor="pause_after_failures"):
        job_pause(job=job, reason=reason[: Job._meta.get_field("pause_reason").max_length])
    alerts.alert_set(job=job, kind=AlertKind.PAUSED, firing=True, message=reason)
    return job


@transaction.atomic
def job_remove(*, job: Job) -> None:
    """Delete ``job``; its executions stay on record under its name.

    The job's row is locked first, as a worker's start locks it: a run that starts at
    the same moment either is recorded before the delete (and kept, like the others) or
    finds the job gone, never in between.
    """
    pk = job.pk
    for attempt in range(1, REMOVE_TRIES + 1):
        try:
            # A savepoint: a deadlock given up here leaves a caller's transaction usable.
            with transaction.atomic():
                list(Job.objects.select_for_update().filter(pk=pk).values_list("pk", flat=True))
                job.delete()
            break
        except OperationalError as exc:
            # A worker's finish locks its run's row, then the job's; the delete takes the
            # job's, then its runs' (to keep them without their job). PostgreSQL breaks the
            # deadlock by failing one side: when it is this one, its locks are gone, the
            # finish goes on, and the delete is tried again.
            if attempt == REMOVE_TRIES or getattr(exc.__cause__, "sqlstate", None) != "40P01":
                raise
            logger.info("Job %s: removal met a run being recorded; trying again", job.name)
    job.pk = pk  # receivers see which job it was
    _emit(signals.job_removed, job, {})


@transaction.atomic
def job_run_now(
    *,
    job: Job,
    overlap: str | None = None,
    kwargs: dict[str, Any] | None = None,
    logical_at: dt.datetime | None = None,
    user: Any = None,
    started_by: JobExecution | None = None,
) -> str:
    """Send one manual run of ``job`` to the workers now; return the Celery task id.
    ``started_by``: the finished run of a chain that starts this one (trigger chain, that
    run its ``parent``; :mod:`scheduling.chain_services`).

    The run follows the job's overlap policy (with every slot taken it is skipped, waits
    or starts anyway, as a fire time would), unless ``overlap`` names another policy for
    this run alone. ``kwargs``: keyword arguments for this run only, over the job's (a
    key given replaces the job's, the others keep the job's values; a masked secret sent
    back keeps the job's), stored on the run and used by a re-run of it; validated like
    the job's own. As in an edit of the job, a secret of the job is kept for a run whose
    other keyword arguments differ only if ``user`` may keep secrets
    (``scheduling.keep_secrets``; ``None``: a trusted caller such as the console): else
    whoever changes where the run points could send it a secret they never saw. ``logical_at``: the scheduled time the run sees (its run context's
    ``scheduled_at``; default now), aware. Whatever the logical time, the run's misfire
    grace counts from when it is sent.

    The task is checked against the registry first, so an unknown task is refused here
    (a ``ValidationError`` on ``task``) as well as on the worker; an unknown policy is
    refused on ``overlap``, bad arguments on ``kwargs``, a naive time on ``logical_at``.
    """
    _runnable_check(job)
    if overlap is not None and (problem := overlap_problem(overlap)):
        raise ValidationError({"overlap": problem})
    run_kwargs = None
    if kwargs is not None:
        if problem := kwargs_problem(kwargs):
            raise ValidationError({"kwargs": problem})
        own = job.kwargs or {}
        run_kwargs = masking.unmask_checked(
            new={**masking.mask(own), **kwargs},
            old=own,
            may_keep=user is None or user.has_perm("scheduling.keep_secrets"),
            job=job.name,
        )
        if run_kwargs == own:
            run_kwargs = None  # the job's own: nothing to store
    if logical_at is not None and timezone.is_naive(logical_at):
        raise ValidationError({"logical_at": _("Give the logical time with its timezone.")})
    return _send_one(
        job=job,
        trigger=ExecutionTrigger.MANUAL if started_by is None else ExecutionTrigger.CHAIN,
        scheduled_at=logical_at or timezone.now(),
        kwargs=run_kwargs,
        overlap=overlap,
        parent_id=None if started_by is None else started_by.pk,
    )


def _runnable_check(job: Job) -> None:
    if not registry.is_registered(job.task):
        raise ValidationError({"task": str(registry.UnknownTaskError(job.task))})


def _send_one(
    *,
    job: Job,
    trigger: str,
    scheduled_at: dt.datetime,
    kwargs: dict[str, Any] | None = None,
    overlap: str | None = None,
    parent_id: int | None = None,
) -> str:
    """Send one run not sent by the schedule once the caller's transaction commits; its
    own keyword arguments (``kwargs``) wait for its worker under its task id."""
    task_id = str(uuid.uuid4())
    if kwargs is not None:
        RunOverride.objects.create(task_id=task_id, kwargs=kwargs)
    transaction.on_commit(
        lambda: job_dispatch(
            job=job,
            trigger=trigger,
            scheduled_at=scheduled_at,
            task_id=task_id,
            overlap=overlap,
            kwargs=kwargs,
            parent_id=parent_id,
        )
    )
    return task_id


@transaction.atomic
def execution_rerun(*, execution: JobExecution, by: Any = None) -> str:
    """Send a new run of ``execution``'s job with the same arguments (its own keyword
    arguments if it had them, else the job's as they are now) and the original's
    scheduled time as its logical time; trigger ``rerun``, linked to the original
    (``parent``). Return the Celery task id.

    It follows the job's overlap policy, as run now does; it is not late by its logical
    time (its misfire grace counts from when it is sent). Refused (``ValidationError`` on
    ``execution``) for a run whose job was removed, a run not over yet (running or
    waiting), or a summary of missed fire times (backfill those); an unregistered task on
    ``task``. ``by``: who asks (a user, a name; ``None``: the current audit context).
    """
    if execution.job_id is None or execution.job is None:
        raise ValidationError(
            {"execution": _("Run %(id)s: its job was removed.") % {"id": execution.pk}}
        )
    if execution.status in UNFINISHED_STATUSES:
        raise ValidationError(
            {
                "execution": _("Run %(id)s is %(status)s: only a run that is over can be re-run.")
                % {"id": execution.pk, "status": execution.get_status_display()}
            }
        )
    if execution.missed_count:
        raise ValidationError(
            {
                "execution": _(
                    "Run %(id)s stands for %(count)d missed fire times: backfill their range "
                    "instead."
                )
                % {"id": execution.pk, "count": execution.missed_count}
            }
        )
    job = execution.job
    _runnable_check(job)
    task_id = _send_one(
        job=job,
        trigger=ExecutionTrigger.RERUN,
        scheduled_at=execution.scheduled_at or execution.started_at,
        kwargs=execution.kwargs,
        parent_id=execution.pk,
    )
    context = audit.current()
    signals.run_rerun_requested.send_robust(
        sender=Job,
        job=job,
        source=context.source,
        actor=_actor(by),
        changes={"execution": [None, execution.pk], "task_id": [None, task_id]},
    )
    return task_id


def _actor(by: Any) -> str:
    """Who acts: ``by`` (a user or a name), else the current audit context's actor."""
    context = audit.current()
    if by is None:
        return context.actor or context.source
    if hasattr(by, "get_username"):
        return by.get_username()
    return str(by)


def job_backfill(
    *,
    job: Job,
    start: dt.datetime,
    end: dt.datetime,
    reprocess: str = "missing",
    overlap: str | None = None,
    dry_run: bool = False,
    by: Any = None,
    tz_name: str | None = None,
):
    """Backfill ``job``'s fire times from ``start`` (inclusive) to ``end`` (exclusive):
    see :mod:`scheduling.backfills`. Return the :class:`Backfill` (unsaved with
    ``dry_run``: nothing is written); its ``plan`` lists each fire time with what is on
    record for it and whether it is sent. ``by``: who asks; ``tz_name``: the timezone the
    range was given in (default the job's), kept with the backfill."""
    from scheduling import backfills

    return backfills.backfill_create(
        job=job,
        start=start,
        end=end,
        reprocess=reprocess,
        overlap=overlap,
        dry_run=dry_run,
        actor=_actor(by),
        tz_name=tz_name,
    )


def backfill_cancel(*, backfill, by: Any = None):
    """Cancel ``backfill``: its fire times not sent yet are recorded cancelled and never
    sent; the runs already sent go on. Return it as recorded (a backfill already over is
    refused, a ``ValidationError`` on ``backfill``)."""
    from scheduling import backfills

    return backfills.backfill_cancel(backfill=backfill, actor=_actor(by))


def execution_cancel(
    *, execution: JobExecution, terminate: bool = False, by: Any = None, reason: str = ""
) -> JobExecution:
    """Stop a run in progress: cancel it (its function is told, and has
    ``CANCEL_GRACE_SECONDS`` to stop before it is terminated) or, with ``terminate``,
    kill its process now (:mod:`scheduling.runs.cancel`). Either way the run stops
    holding its max-instances slot at once, and the request goes to the job's audit
    trail. Return the run as recorded.

    ``by`` is who asks: a Django user, a name, or ``None`` for the current audit context
    (the admin's or a command's user, else the API); ``reason`` is kept with the run. A
    run that is not in progress is refused (``ValidationError`` on ``execution``); a
    second cancel of a run being cancelled changes nothing.
    """
    context = audit.current()
    actor = _actor(by)
    reason = str(reason or "").replace("\x00", "").strip()[:300]
    with transaction.atomic():
        row, changed = stop_request(
            execution=execution, terminate=terminate, actor=actor, reason=reason
        )
        if changed and row.job is not None:
            signal = signals.run_terminate_requested if terminate else signals.run_cancel_requested
            signal.send_robust(
                sender=Job,
                job=row.job,
                source=context.source,
                actor=actor,
                changes={"execution": [None, row.pk], "reason": [None, reason]},
            )
    return row


@transaction.atomic
def execution_drop(*, execution: JobExecution, by: str = "", reason: str = "") -> JobExecution:
    """Drop a run that waits for a free slot (or was sent after waiting and has not
    started): it is recorded as skipped, naming ``by`` (who) and ``reason`` (why), and
    never runs; the job's audit trail records it too (``run_dropped``). A run in any
    other state is refused (``ValidationError`` on ``execution``)."""
    from scheduling import stats
    from scheduling.runs import events, waiting

    who = by or audit.current().actor or audit.current().source
    text = f"Dropped while waiting by {who}" + (f": {reason}" if reason else ".")
    now = timezone.now()
    dropped = JobExecution.objects.filter(
        pk=execution.pk, status__in=[ExecutionStatus.WAITING, ExecutionStatus.QUEUED]
    ).update(status=ExecutionStatus.SKIPPED, reason=text[:500], finished_at=now, lease_until=None)
    execution.refresh_from_db()
    if not dropped:
        raise ValidationError(
            {
                "execution": _(
                    "Run %(id)s is %(status)s: only a run waiting for a free slot can be dropped."
                )
                % {"id": execution.pk, "status": execution.get_status_display()}
            }
        )
    stats.stats_record(execution=execution)
    events.announce(execution)
    if execution.job is not None:
        _emit(
            signals.run_dropped,
            execution.job,
            {
                "execution": [execution.pk, ExecutionStatus.SKIPPED],
                "scheduled_at": [None, _jsonable(execution.scheduled_at)],
                "reason": [None, reason],
            },
        )
        # A queued run held a slot: another waiting one may go now.
        transaction.on_commit(lambda: waiting.execution_promote_waiting(job_id=execution.job_id))
    return execution


def job_dispatch(
    *,
    job: Job,
    trigger: str,
    scheduled_at: dt.datetime,
    task_id: str | None = None,
    jitter: float = 0.0,
    producer: Any = None,
    retry_policy: dict[str, Any] | None = None,
    expires: bool = True,
    overlap: str | None = None,
    kwargs: dict[str, Any] | None = None,
    parent_id: int | None = None,
    backfill_id: int | None = None,
    priority: int | None = None,
    display_kwargs: dict[str, Any] | None = None,
) -> str:
    """Publish one run of ``job`` to the broker; used by beat, by run-now, re-run and
    backfill, and to send a run that waited for a free slot (``expires`` off: its wait
    does not count against its grace, :mod:`scheduling.runs.waiting`). ``overlap``: the
    run's override of the job's overlap policy; ``kwargs``: its own keyword arguments
    (stored under its task id, shown masked); ``parent_id``: the run it re-runs;
    ``backfill_id``: its backfill; ``priority``: instead of the job's;
    ``display_kwargs``: the keyword arguments shown for a run whose own are on its row
    already (a waiting run sent on).

    The message carries the job id, the fire time and the jitter applied; the worker
    reads everything else from the job row. The options of the message:

    - time limits: the hard limit always, the soft one only for sync functions (an
      ``async def`` job gets its soft limit inside its event loop, see
      :mod:`scheduling.runs.call`);
    - routing: the job's queue (else Celery's default), priority, exchange, routing key;
    - a scheduled run expires in the broker at its fire time + jitter + misfire grace:
      the worker would record it missed from then on anyway (:mod:`scheduling.runs.rules`),
      so it need not wait for one (the worker records an expired message as missed,
      :func:`scheduling.tasks.record_expired`);
    - what Flower, Celery's log and ``celery inspect`` show: the job's task name
      (``shadow``) and its own arguments, secrets masked (``argsrepr``/``kwargsrepr``).
    """
    from scheduling.tasks import run_job

    run_kwargs, options = run_message(
        job=job,
        trigger=trigger,
        scheduled_at=scheduled_at,
        jitter=jitter,
        app=run_job.app,
        expires=expires,
        overlap=overlap,
        kwargs=kwargs,
        parent_id=parent_id,
        backfill_id=backfill_id,
        priority=priority,
        display_kwargs=display_kwargs,
    )
    if retry_policy is not None:
        # Beat bounds how long a publish may retry (Celery's default: 3 more tries).
        options["retry_policy"] = retry_policy
    result = run_job.apply_async(kwargs=run_kwargs, task_id=task_id, producer=producer, **options)
    return result.id


def run_message(
    *,
    job: Job,
    trigger: str,
    scheduled_at: dt.datetime,
    jitter: float,
    app: Any,
    expires: bool = True,
    overlap: str | None = None,
    kwargs: dict[str, Any] | None = None,
    parent_id: int | None = None,
    backfill_id: int | None = None,
    priority: int | None = None,
    display_kwargs: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keyword arguments and the Celery options of the message of one run of ``job``
    (see :func:`job_dispatch`); beat's batches build the same (:mod:`scheduling.publish`).

    A run carries when it was sent (``sent_at``: the execution's timeline shows it; for a
    run not sent by the schedule its misfire grace counts from then), a run not sent by the
    schedule where it came from; never its keyword arguments, which wait for its worker in
    the database (``override``)."""
    options: dict[str, Any] = {
        "headers": {"periodic_task_name": job.name},
        **message_display(job, kwargs if kwargs is not None else display_kwargs),
        **message_routing(job, app, priority),
    }
    if job.time_limit:
        options["time_limit"] = job.time_limit
    is_async = registry.is_registered(job.task) and registry.get_task(job.task).is_async
    if job.soft_time_limit and not is_async:
        options["soft_time_limit"] = job.soft_time_limit
    if trigger == ExecutionTrigger.SCHEDULE and expires:
        options["expires"] = scheduled_at + dt.timedelta(seconds=jitter + job.misfire_grace_time)
        # What a worker that drops the expired message records it by (Celery's signal of
        # an expired message carries the headers, not the arguments).
        options["headers"].update(
            {EXPIRED_JOB_HEADER: job.pk, EXPIRED_FIRE_TIME_HEADER: scheduled_at.isoformat()}
        )
    run_kwargs: dict[str, Any] = {
        "job_id": job.pk,
        "trigger": str(trigger),
        "scheduled_at": scheduled_at.isoformat(),
        "jitter": round(jitter, 3),
    }
    if overlap is not None:
        run_kwargs["overlap"] = overlap
    if expires:  # a first send (a waiting run sent on keeps its own)
        run_kwargs["sent_at"] = db_now().isoformat()  # lateness is read on its clock
    for name, value in (("parent_id", parent_id), ("backfill_id", backfill_id)):
        if value is not None:
            run_kwargs[name] = value
    if kwargs is not None:
        run_kwargs["override"] = True
    return run_kwargs, options


def message_display(job: Job, kwargs: dict[str, Any] | None = None) -> dict[str, str]:
    """How Celery shows a run of ``job`` (worker log, task events, Flower, ``inspect``):
    under the job's task name, with the job's arguments, secrets masked as in the admin.

    The task name rather than the job's name: it names what runs (the function), as
    Celery's name does for any task, and there are as many as there are registered tasks,
    not as many as jobs (one-off jobs each have their own name), so Flower's task-type
    filter and its metrics stay small. The job's name travels as ``periodic_task_name``.
    ``kwargs``: the run's own keyword arguments, shown instead of the job's.
    """
    shown = (job.kwargs or {}) if kwargs is None else kwargs
    return {
        "shadow": job.task,
        **_arguments_display(
            # The key of the cache; most jobs have no arguments (a storm of them: two
            # encodings saved a message).
            json.dumps(job.args, sort_keys=True) if job.args else "[]",
            json.dumps(shown, sort_keys=True) if shown else "{}",
        ),
    }


@functools.lru_cache(maxsize=4096)
def _arguments_display(args: str, kwargs: str) -> dict[str, str]:
    """``argsrepr`` and ``kwargsrepr`` of the arguments (as JSON), masked; kept, as
    masking and Celery's ``saferepr`` cost three quarters of building a message, and
    most jobs share a few argument lists."""
    return {
        "argsrepr": saferepr(tuple(masking.mask(json.loads(args))), ARGS_REPR_MAX),
        "kwargsrepr": saferepr(masking.mask(json.loads(kwargs)), ARGS_REPR_MAX),
    }


ARGS_REPR_MAX = 1024
EXPIRED_JOB_HEADER = "scheduling_job_id"
EXPIRED_FIRE_TIME_HEADER = "scheduling_fire_time"  # Celery's own limit for argsrepr and kwargsrepr


def message_routing(job: Job, app: Any, priority: int | None = None) -> dict[str, Any]:
    """The queue (:func:`scheduling.selectors.job_routed_queue`: the job's, else its
    group's), priority (``priority``: instead of the job's), exchange and routing key of
    a run of ``job``.

    A job's priority means the same on every broker: 9 is the most urgent. RabbitMQ takes
    higher numbers first; kombu's Redis transport takes its lowest step first, so there
    the number is turned around. The embedded filesystem broker ignores it.
    """
    priority = job.priority if priority is None else priority
    options: dict[str, Any] = {"priority": priority}
    if broker_is_redis(app.conf.broker_url or ""):
        options["priority"] = MAX_PRIORITY - priority
    queue = selectors.job_routed_queue(job=job)
    if queue:
        options["queue"] = queue
    if job.exchange:
        options["exchange"] = job.exchange
    if job.routing_key:
        options["routing_key"] = job.routing_key
    return options


@functools.cache
def broker_is_redis(url: str) -> bool:
    return urlsplit(url.split(";")[0]).scheme in {"redis", "rediss", "sentinel"}


@dataclasses.dataclass
class ImportReport:
    """What an import did (or, in a dry run, would do)."""

    created: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    diff: list[str] = dataclasses.field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "diff": self.diff,
            "dry_run": self.dry_run,
        }


def config_import(
    *,
    data: Any,
    dry_run: bool = False,
    prune: bool = False,
    only_missing: bool = False,
    user: Any = None,
) -> ImportReport:
    """Create or update jobs from a config document, all or nothing.

    The whole document is validated before anything is written (``ConfigError`` lists
    every problem). Importing the same document twice changes nothing. ``prune`` removes
    jobs that are not in the document; ``only_missing`` never touches existing jobs;
    ``dry_run`` reports the changes without making them.

    ``user`` (a Django user; ``None``: a trusted caller such as the console operator)
    must hold the permission for every part of the import, checked before anything is
    written (``PermissionDenied`` naming each missing one and its jobs): add for the jobs
    it creates, change for those it updates, pause for those it pauses or resumes, delete
    for those ``prune`` removes. A masked secret sent back is kept only while the job's
    other kwargs stay the same, unless ``user`` may keep secrets (``keep_secrets``).
    """
    specs = config_parse(data)
    calendar_specs = calendars_parse(data)
    group_specs = groups_parse(data)
    known = {spec.name for spec in calendar_specs} | set(
        Calendar.objects.values_list("name", flat=True)
    )
    unknown = [
        f"job {spec.name!r}: options.calendars: no calendar named {name!r}"
        for spec in specs
        for name in spec.calendars
        if name not in known
    ]
    if unknown:
        raise ConfigError(unknown)
    chain_problems = _import_chain_problems(specs=specs, prune=prune)
    if chain_problems:
        raise ConfigError(chain_problems)
    report = ImportReport(dry_run=dry_run)
    outer = audit.current()
    source = outer.source if outer.source == "system" else "import"
    may_keep = user is None or user.has_perm("scheduling.keep_secrets")
    with transaction.atomic(), audit.audit_context(source=source, actor=outer.actor):
        existing = {job.name: job for job in Job.objects.filter(name__in=[s.name for s in specs])}
        for spec in specs:
            if spec.name in existing:
                spec.fields["kwargs"] = masking.unmask_checked(
                    new=spec.fields["kwargs"],
                    old=existing[spec.name].kwargs,
                    may_keep=may_keep,
                    job=spec.name,
                )
        names = {spec.name for spec in specs}
        pruned = list(Job.objects.exclude(name__in=names).order_by("name")) if prune else []
        if user is not None:
            _import_permissions_check(
                user=user,
                specs=specs,
                existing=existing,
                pruned=pruned,
                only_missing=only_missing,
                group_specs=group_specs,
            )
        if user is not None and calendar_specs and not user.has_perm("scheduling.change_calendar"):
            raise PermissionDenied(
                _("User %(user)r lacks the permission %(perm)r to import calendars.")
                % {"user": user.get_username(), "perm": "scheduling.change_calendar"}
            )
        for calendar_spec in calendar_specs:
            change = calendar_services.calendar_import(spec=calendar_spec)
            if change:
                report.diff.append(f"{change} calendar {calendar_spec.name}")
        # Groups before jobs: a job the file says is enabled joins its group as the file
        # leaves the group (paused or not), see _import_one.
        for group_spec in group_specs:
            report.diff += group_services.group_import(spec=group_spec, only_missing=only_missing)
        for spec in specs:
            _import_one(
                spec=spec, job=existing.get(spec.name), report=report, only_missing=only_missing
            )
        _import_chains(specs=specs, report=report, only_missing=only_missing, existing=existing)
        for job in pruned:
            report.removed.append(job.name)
            report.diff.append(f"- {job.name}")
            job_remove(job=job)
        if dry_run:
            transaction.set_rollback(True)
    return report


def _import_chain_problems(*, specs: list[JobSpec], prune: bool) -> list[str]:
    """The chain problems of a document (next jobs neither in it nor saved, a cycle
    named), over the links saved for the jobs it leaves alone, as a save checks them."""
    names = {spec.name for spec in specs}
    known = names if prune else names | set(Job.objects.values_list("name", flat=True))
    graph = chain_services.stored_graph(exclude=names)
    if prune:
        graph = {}
    return [
        f"options.then: {problem}"
        for problem in chain_services.links_problems(
            {spec.name: spec.then for spec in specs}, known, graph
        )
    ]


def _links_differ(job: Job, spec: JobSpec) -> bool:
    before = [link.as_entry() for link in chain_services.job_links(job)]
    return before != [link.as_entry() for link in sorted(spec.then, key=lambda link: link.job)]


def _import_chains(
    *, specs: list[JobSpec], report: ImportReport, only_missing: bool, existing: dict[str, Job]
) -> None:
    """Give each job of the document its links: first clear those that change, then set
    them, so no state in between holds a cycle the document does not."""
    changing = []
    for spec in specs:
        if only_missing and spec.name in existing:
            continue
        job = Job.objects.get(name=spec.name)
        if _links_differ(job, spec):
            before = [link.as_entry() for link in chain_services.job_links(job)]
            after = [link.as_entry() for link in sorted(spec.then, key=lambda link: link.job)]
            changing.append((job, spec, before, after))
    for job, _spec, _before, _after in changing:
        chain_services.job_set_links(job=job, links=[])
    for job, spec, before, after in changing:
        chain_services.job_set_links(job=job, links=spec.then)
        if spec.name in existing:
            report.diff.append(f"~ {spec.name}: then: {before!r} -> {after!r}")
            if spec.name in report.unchanged:
                report.unchanged.remove(spec.name)
                report.updated.append(spec.name)


def _import_permissions_check(
    *,
    user: Any,
    specs: list[JobSpec],
    existing: dict[str, Job],
    pruned: list[Job],
    only_missing: bool,
    group_specs: list[GroupSpec] = (),
) -> None:
    """Refuse the whole import when ``user`` lacks a permission one of its parts needs
    (for a group: change to set its settings, pause to pause or resume it)."""
    needs: dict[str, list[str]] = collections.defaultdict(list)
    stored_groups = set(JobGroup.objects.values_list("name", flat=True))
    for group_spec in group_specs:
        if only_missing and group_spec.name in stored_groups:
            continue
        settings, pause = group_services.group_import_changes(spec=group_spec)
        if settings:
            needs["change_job"].append(f"group {group_spec.name}")
        if pause:
            needs["pause_job"].append(f"group {group_spec.name}")
    for spec in specs:
        job = existing.get(spec.name)
        if job is None:
            needs["add_job"].append(spec.name)
            continue
        changes = {} if only_missing else spec_differences(job, spec)
        if not only_missing and _links_differ(job, spec):
            changes["then"] = None  # its chain links change: an edit of the job
        if "enabled" in changes or (not only_missing and _pause_differs(job, spec)):
            needs["pause_job"].append(spec.name)
        if set(changes) - {"enabled"}:
            needs["change_job"].append(spec.name)
    needs["delete_job"] = [job.name for job in pruned]
    missing = [
        _("the permission %(perm)r to %(action)s %(jobs)s")
        % {
            "perm": f"scheduling.{codename}",
            "action": IMPORT_ACTIONS[codename],
            "jobs": ", ".join(names),
        }
        for codename, names in needs.items()
        if names and not user.has_perm(f"scheduling.{codename}")
    ]
    if missing:
        raise PermissionDenied(
            _("User %(user)r lacks %(missing)s; nothing was imported.")
            % {"user": user.get_username(), "missing": "; ".join(missing)}
        )


def _pause_differs(job: Job, spec: JobSpec) -> bool:
    """Whether the file gives a paused job another reason or resume time than its own."""
    if spec.pause is None or job.enabled or spec.fields.get("enabled"):
        return False
    return (job.pause_reason, job.resume_at) != (spec.pause["reason"], spec.pause["until"])


def _import_pause(*, job: Job, spec: JobSpec, report: ImportReport) -> None:
    """Give a job imported paused the file's reason and resume time (a resume time that
    has passed is left out: the job stays paused, and the report says so)."""
    if not _pause_differs(job, spec):
        return
    until = spec.pause["until"]
    if until is not None and until <= timezone.now():
        report.diff.append(
            f"~ {spec.name}: resume_at {until.isoformat()} has passed: it stays paused"
        )
        until = None
    job_pause(job=job, reason=spec.pause["reason"], until=until)


def _held_words(group: JobGroup) -> str:
    return _("stays paused: its group %(group)s is paused (the group's resume resumes it)") % {
        "group": group.name
    }


def _import_one(
    *, spec: JobSpec, job: Job | None, report: ImportReport, only_missing: bool
) -> None:
    if job is None:
        job = job_create(name=spec.name, **spec.fields)
        if spec.calendars:
            calendar_services.job_set_calendars(job=job, names=spec.calendars)
        _import_pause(job=job, spec=spec, report=report)
        report.created.append(spec.name)
        report.diff.append(f"+ {spec.name}")
        if spec.fields["enabled"] and not job.enabled:  # created in a paused group
            report.diff.append(
                f"~ {spec.name}: " + _held_words(group_services.paused_group(name=job.group))
            )
        return
    changes = {} if only_missing else spec_differences(job, spec)
    if changes.get("enabled", (None, False))[1]:
        group = changes["group"][1] if "group" in changes else job.group
        if group_services.paused_group(name=group) is not None:
            del changes["enabled"]  # held by its group: see below
    touched = bool(changes)
    calendars_before = sorted(job.calendars.values_list("name", flat=True))
    if not only_missing and calendars_before != spec.calendars:
        calendar_services.job_set_calendars(job=job, names=spec.calendars)
        report.diff.append(f"~ {spec.name}: calendars: {calendars_before!r} -> {spec.calendars!r}")
        touched = True
    if changes:
        job = job_update(job=job, **{name: new for name, (_old, new) in changes.items()})
    # Enabled in the file, but its group is paused (and the file leaves it paused): the
    # job stays paused, held by the group as its pause holds its jobs, so the group's
    # resume resumes it; a job paused on its own before is handed over to the group.
    held_by = None
    if not only_missing and spec.fields["enabled"] and not job.enabled:
        held_by = group_services.paused_group(name=job.group)
    if held_by is not None:
        report.diff.append(f"~ {spec.name}: " + _held_words(held_by))
        if job.pause_reason != held_by.job_pause_reason():
            job_pause(job=job, reason=held_by.job_pause_reason())
            touched = True
    for name, (old, new) in sorted(changes.items()):
        # Secrets are masked on both sides; a change to a secret alone still shows as one.
        shown_old, shown_new = masking.mask(old), masking.mask(new)
        note = _(" (a secret changed)") if shown_old == shown_new else ""
        report.diff.append(f"~ {spec.name}: {name}: {shown_old!r} -> {shown_new!r}{note}")
    if not only_missing and _pause_differs(job, spec):
        _import_pause(job=job, spec=spec, report=report)
        report.diff.append(f"~ {spec.name}: pause_reason: {spec.pause['reason']!r}")
        touched = True
    (report.updated if touched else report.unchanged).append(spec.name)


@transaction.atomic
def defaults_install() -> list[str]:
    """Install the default maintenance jobs that were never installed; return their names.

    An operator's edits are never overwritten, and a default job the operator removed is
    not brought back.
    """
    installed = set(InstalledDefault.objects.values_list("name", flat=True))
    wanted = [entry for entry in DEFAULT_JOBS if entry["task_id"] not in installed]
    with audit.audit_context(source="system", actor="default jobs"):
        report = config_import(data=wanted, only_missing=True)
    for entry in wanted:
        InstalledDefault.objects.get_or_create(name=entry["task_id"])
    return report.created


@transaction.atomic
def api_key_create(
    *,
    name: str,
    privileges: list[str],
    jobs: str = "*",
    expires_days: float | None = None,
    expires_at: dt.datetime | None = None,
    by: str = "",
) -> tuple[ApiKey, str]:
    """Create an API key; return it and the key itself (``sj_<prefix>_<secret>``), which
    is shown this once and never stored. It expires ``expires_days`` from now or at
    ``expires_at`` (neither: never). ``ValidationError`` names a bad field."""
    if expires_days is not None and expires_days <= 0:
        raise ValidationError({"expires_at": _("Give the days until it expires as more than 0.")})
    if expires_days is not None:
        expires_at = timezone.now() + dt.timedelta(days=expires_days)
    prefix, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(8)
    key = ApiKey(
        name=(name or "").strip(),
        prefix=prefix,
        salt=salt,
        key_hash=ApiKey.hash_secret(salt=salt, secret=secret),
        privileges=list(dict.fromkeys(privileges)),
        jobs=(jobs or "*").strip(),
        expires_at=expires_at,
        created_by=str(by or audit.current().actor),
    )
    key.full_clean()
    key.save()
    return key, f"{ApiKey.PREFIX}_{prefix}_{secret}"


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke ``key``: it is refused (401) from now on; revoking twice changes nothing."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=key.revoked_at)
    return key


def api_key_touch(*, key: ApiKey, now: dt.datetime | None = None) -> None:
    """Record that ``key`` was used: at most once a minute a write, so a busy key does not
    write a row on every request."""
    now = now or timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= dt.timedelta(minutes=1):
        key.last_used_at = now
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
