"""Writes of job groups: pause and resume every job of a group at once.

A group is the jobs whose ``group`` field holds its name. Pausing it pauses each of its
enabled jobs (through :func:`scheduling.services.job_pause`, so each has its audit entry)
with a reason naming the group; resuming it resumes exactly those, so a job an operator
had paused on its own before stays paused.
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
    group.pause_reason = (reason or "").strip()[:300]
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
