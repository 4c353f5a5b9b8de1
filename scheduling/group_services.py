"""Writes of job groups: pause and resume every job of a group at once, and set its cap
and the defaults of its jobs.

A group is the jobs whose ``group`` field holds its name. Pausing it pauses each of its
enabled jobs (through :func:`scheduling.services.job_pause`, so each has its audit entry)
with a reason naming the group; a job that joins it while it is paused (created in it,
or moved into it) is paused with the same reason (:func:`scheduling.services.job_save`);
resuming it resumes exactly those, so a job an operator had paused on its own before
stays paused.
"""

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from scheduling import audit
from scheduling.models import Job, JobGroup


def _group(name: str) -> JobGroup:
    name = (name or "").strip()
    if (
        not Job.objects.filter(group=name).exists()
        and not JobGroup.objects.filter(name=name).exists()
    ):
        raise ValidationError({"group": _("No job is in group %(name)r.") % {"name": name}})
    group, _created = JobGroup.objects.select_for_update().get_or_create(name=name)
    return group


#: What :func:`group_update` sets: the cap on the group's runs at once, and the queue and
#: alert recipients of its jobs that have none of their own.
GROUP_FIELDS = frozenset({"max_instances", "queue", "alert_emails", "alert_webhooks"})


@transaction.atomic
def group_save(*, group: JobGroup) -> JobGroup:
    """Validate and save ``group`` (``ValidationError`` naming the field; nothing is
    saved then). Beat and the workers read a group as it is at each message and start,
    so nothing is told."""
    group.full_clean()
    group.save()
    return group


@transaction.atomic
def group_update(*, name: str, **fields) -> JobGroup:
    """Set :data:`GROUP_FIELDS` of group ``name`` (a group on record, or the group of
    some job)."""
    unknown = set(fields) - GROUP_FIELDS
    if unknown:
        raise TypeError(f"Unknown group fields: {', '.join(sorted(unknown))}")
    group = _group(name)
    for field, value in fields.items():
        setattr(group, field, value)
    return group_save(group=group)


def hold_group(*, name: str) -> None:
    """Hold group ``name`` until this transaction ends, row on record or not (PostgreSQL:
    an advisory lock on its name; SQLite runs one writer at a time): a pause or resume of
    the group and a job joining it wait for each other, so neither misses the other."""
    if not name or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"scheduling.group:{name}"])


def paused_group(*, name: str) -> JobGroup | None:
    """Group ``name`` if it is paused (a job that joins it is paused with it)."""
    return JobGroup.objects.filter(name=name, paused_at__isnull=False).first()


def pause_reason_problem(group: JobGroup) -> str | None:
    """What is wrong with the pause reason of ``group`` (``None``: nothing): longer than
    the group keeps, or making its jobs' pause reason (:meth:`JobGroup.job_pause_reason`,
    after the group's name and who paused it) longer than a job keeps."""
    reason = group.pause_reason
    limit = JobGroup._meta.get_field("pause_reason").max_length
    if len(reason) > limit:
        return _("The pause reason is %(length)d characters; keep it to %(limit)d.") % {
            "length": len(reason),
            "limit": limit,
        }
    job_limit = Job._meta.get_field("pause_reason").max_length
    length = len(group.job_pause_reason())
    if length > job_limit:
        return _(
            "The pause reason would make its jobs' pause reason %(length)d "
            "characters (the group's name and who paused it come first); a job "
            "keeps %(limit)d: shorten it."
        ) % {"length": length, "limit": job_limit}
    return None


@transaction.atomic
def group_pause(
    *, name: str, reason: str = "", by: str | None = None, at: dt.datetime | None = None
) -> list[Job]:
    """Pause every enabled job of group ``name``; return them. A group paused already
    is refused (resume it first), so the reason on record is never overwritten.

    ``by`` and ``at`` (default: the audit context's actor, now) say who paused it and
    when: an import restores them from its file."""
    from scheduling.services import job_pause

    hold_group(name=name)
    group = _group(name)
    if group.paused:
        raise ValidationError(
            {"group": _("Group %(name)s is paused already.") % {"name": group.name}}
        )
    group.paused_at = at or timezone.now()
    group.paused_by = audit.current().actor if by is None else by
    group.pause_reason = (reason or "").strip()
    problem = pause_reason_problem(group)
    if problem:
        raise ValidationError({"pause_reason": problem})
    group.save()
    words = group.job_pause_reason()
    return [
        job_pause(job=job, reason=words)
        for job in Job.objects.filter(group=group.name, enabled=True).order_by("name")
    ]


@transaction.atomic
def group_resume(*, name: str) -> list[Job]:
    """Resume the jobs the pause of group ``name`` paused (each from its next fire time);
    return them. A job that cannot resume (say, its task is no longer registered) is
    named and nothing is resumed."""
    from scheduling.services import job_resume

    hold_group(name=name)
    group = _group(name)
    if not group.paused:
        raise ValidationError({"group": _("Group %(name)s is not paused.") % {"name": group.name}})
    held = list(
        Job.objects.filter(
            group=group.name, enabled=False, pause_reason=group.job_pause_reason()
        ).order_by("name")
    )
    resumed = [job_resume(job=job) for job in held]
    group.paused_at, group.paused_by, group.pause_reason = None, "", ""
    group.save()
    return resumed


def group_import_changes(*, spec: Any) -> tuple[dict[str, tuple[Any, Any]], str]:
    """What importing ``spec`` (:class:`scheduling.config.GroupSpec`) would change in
    group ``spec.name``: its settings (``{field: (old, new)}``; all of them for a group not
    on record), and its pause: ``"pause"``, ``"resume"``, ``"repause"`` (paused for another
    reason, or by someone else) or ``""``."""
    group = JobGroup.objects.filter(name=spec.name).first() or JobGroup(name=spec.name)
    settings = {
        key: (getattr(group, key), value)
        for key, value in spec.fields.items()
        if group.pk is None or getattr(group, key) != value
    }
    wanted = spec.pause
    if not group.paused:
        pause = "pause" if wanted is not None else ""
    elif wanted is None:
        pause = "resume"
    elif wanted["reason"] != group.pause_reason or wanted["by"] not in (None, group.paused_by):
        pause = "repause"
    else:
        pause = ""
    return settings, pause


@transaction.atomic
def group_import(*, spec: Any, only_missing: bool = False) -> list[str]:
    """Make group ``spec.name`` what a config file says: its settings, and paused (by
    :func:`group_pause`, with the file's reason, who and when) or resumed (by
    :func:`group_resume`) as the file says. Return the lines of the import's diff.
    ``only_missing`` leaves a group on record as it is."""
    exists = JobGroup.objects.select_for_update().filter(name=spec.name).exists()
    if exists and only_missing:
        return []
    settings, pause = group_import_changes(spec=spec)
    lines = [] if exists else [f"+ group {spec.name}"]
    if settings:
        group = JobGroup.objects.filter(name=spec.name).first() or JobGroup(name=spec.name)
        for key, (_old, new) in settings.items():
            setattr(group, key, new)
        group_save(group=group)
        if exists:
            lines += [
                f"~ group {spec.name}: {key}: {old!r} -> {new!r}"
                for key, (old, new) in sorted(settings.items())
            ]
    if pause in {"resume", "repause"}:
        resumed = group_resume(name=spec.name)
        lines.append(
            f"~ group {spec.name}: " + _("resumed (%(count)d job(s))") % {"count": len(resumed)}
        )
    if pause in {"pause", "repause"}:
        wanted = spec.pause
        paused = group_pause(
            name=spec.name, reason=wanted["reason"], by=wanted["by"], at=wanted["at"]
        )
        lines.append(
            f"~ group {spec.name}: "
            + _("paused: %(reason)r (%(count)d job(s))")
            % {"reason": wanted["reason"], "count": len(paused)}
        )
    return lines
