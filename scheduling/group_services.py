"""Writes of job groups: pause and resume every job of a group at once, and set its cap
and the defaults of its jobs.

A group is the jobs whose ``group`` field holds its name. Pausing it pauses each of its
enabled jobs (through :func:`scheduling.services.job_pause`, so each has its audit entry)
with a reason naming the group; a job that joins it while it is paused (created in it,
or moved into it) is paused with the same reason (:func:`scheduling.services.job_save`);
resuming it resumes exactly those, so a job an operator had paused on its own before
stays paused.
"""

from django.core.exceptions import ValidationError
from django.db import transaction
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


def paused_group(*, name: str) -> JobGroup | None:
    """Group ``name`` if it is paused (a job that joins it is paused with it)."""
    return JobGroup.objects.filter(name=name, paused_at__isnull=False).first()


def _pause_reason_check(group: JobGroup, reason: str) -> None:
    """Refuse a reason longer than the group keeps, or one that would make its jobs'
    pause reason (:meth:`JobGroup.job_pause_reason`) longer than a job keeps."""
    limit = JobGroup._meta.get_field("pause_reason").max_length
    if len(reason) > limit:
        raise ValidationError(
            {
                "pause_reason": _(
                    "The pause reason is %(length)d characters; keep it to %(limit)d."
                )
                % {"length": len(reason), "limit": limit}
            }
        )
    job_limit = Job._meta.get_field("pause_reason").max_length
    length = len(group.job_pause_reason())
    if length > job_limit:
        raise ValidationError(
            {
                "pause_reason": _(
                    "The pause reason would make its jobs' pause reason %(length)d "
                    "characters (the group's name and who paused it come first); a job "
                    "keeps %(limit)d: shorten it."
                )
                % {"length": length, "limit": job_limit}
            }
        )


@transaction.atomic
def group_pause(*, name: str, reason: str = "") -> list[Job]:
    """Pause every enabled job of group ``name``; return them. A group paused already
    is refused (resume it first), so the reason on record is never overwritten."""
    from scheduling.services import job_pause

    group = _group(name)
    if group.paused:
        raise ValidationError(
            {"group": _("Group %(name)s is paused already.") % {"name": group.name}}
        )
    group.paused_at = timezone.now()
    group.paused_by = audit.current().actor
    group.pause_reason = (reason or "").strip()
    _pause_reason_check(group, group.pause_reason)
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
