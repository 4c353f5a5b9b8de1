"""Writes and reads of exclusion calendars: create one and add its exclusions (dates,
ranges, weekly windows, yearly dates, an iCalendar file), remove one, attach calendars to
a job, skip a job's next run; and the preview of which upcoming fire times they remove.

Every change reschedules the jobs it touches in the same transaction, so beat (which only
reads each job's stored next fire time) follows it within a second.
"""

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from scheduling import calendars, schedules, signals
from scheduling.models import Calendar, CalendarRule, Job


def _reschedule(jobs: Iterable[Job]) -> None:
    """Recompute the next fire time of each enabled job (its exclusions changed)."""
    from scheduling.services import job_schedule_next

    now = timezone.now()
    for job in jobs:
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if not locked.enabled:
            continue
        job_schedule_next(job=locked, now=now)
        locked.save(update_fields=["next_run_at", "dispatch_at", "excluded_from", "updated_at"])
        job.next_run_at, job.dispatch_at = locked.next_run_at, locked.dispatch_at
        job.excluded_from = locked.excluded_from


def _parse_date(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            {option: _("%(value)r is not a date (YYYY-MM-DD).") % {"value": text}}
        ) from None


def _parse_time(text: str, option: str) -> dt.time:
    if text.strip() == "24:00":
        return None
    try:
        return dt.time.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            {option: _("%(value)r is not a time of day (HH:MM).") % {"value": text}}
        ) from None


def weekly_rule(text: str) -> CalendarRule:
    """``"SAT,SUN"`` or ``"MON 00:00-06:00"`` as an unsaved weekly rule."""
    days, _sep, window = text.strip().partition(" ")
    rule = CalendarRule(kind="weekly", weekdays=days)
    if window.strip():
        begin, dash, end = window.strip().partition("-")
        if not dash:
            raise ValidationError(
                {"weekly": _("%(value)r: give the window as HH:MM-HH:MM.") % {"value": text}}
            )
        rule.start_time = _parse_time(begin, "weekly")
        rule.end_time = _parse_time(end, "weekly")
    return rule


def rules_parse(
    *,
    dates: Iterable[str] = (),
    ranges: Iterable[str] = (),
    weekly: Iterable[str] = (),
    yearly: Iterable[str] = (),
    ics: bytes | None = None,
) -> list[CalendarRule]:
    """Unsaved, validated rules from the command line's forms: dates ``YYYY-MM-DD``, ranges
    ``A..B``, weekly ``DAYS [HH:MM-HH:MM]``, yearly ``MM-DD`` and an iCalendar file.
    ``ValidationError`` names the option and the value."""
    rules = [CalendarRule(kind="date", start_date=_parse_date(d, "date")) for d in dates]
    for text in ranges:
        first, dots, last = text.partition("..")
        if not dots:
            raise ValidationError(
                {"range": _("%(value)r: give a range as A..B.") % {"value": text}}
            )
        rules.append(
            CalendarRule(
                kind="range",
                start_date=_parse_date(first, "range"),
                end_date=_parse_date(last, "range"),
            )
        )
    rules.extend(weekly_rule(text) for text in weekly)
    for text in yearly:
        month, dash, day = text.strip().partition("-")
        if not dash or not month.isdigit() or not day.isdigit():
            raise ValidationError({"yearly": _("%(value)r is not MM-DD.") % {"value": text}})
        rules.append(CalendarRule(kind="yearly", month=int(month), day=int(day)))
    if ics is not None:
        try:
            parsed = calendars.rules_from_ics(ics, calendar="")
        except ValueError as exc:
            raise ValidationError({"ics": str(exc)}) from None
        if not parsed:
            raise ValidationError({"ics": _("The iCalendar file has no events.")})
        rules.extend(
            CalendarRule(
                kind=rule.kind,
                start_date=rule.start,
                end_date=rule.end,
                month=rule.month,
                day=rule.day,
                label=rule.label,
            )
            for rule in parsed
        )
    for rule in rules:
        rule.full_clean(exclude=["calendar"])
    return rules


@transaction.atomic
def calendar_add(
    *, name: str, description: str | None = None, rules: Iterable[CalendarRule] = ()
) -> Calendar:
    """Create the calendar ``name`` (or take the existing one) and add ``rules`` to it;
    reschedule the jobs that use it. Nothing is saved if anything is invalid."""
    calendar = Calendar.objects.filter(name=name).first() or Calendar(name=name)
    if description is not None:
        calendar.description = description
    calendar.full_clean()
    calendar.save()
    rules = list(rules)
    for rule in rules:
        rule.calendar = calendar
        rule.full_clean()
    CalendarRule.objects.bulk_create(rules)
    calendar_changed(calendar=calendar)
    return calendar


def job_calendars_changed(*, job: Job) -> None:
    """Reschedule ``job``, whose calendars were just set (the admin's form)."""
    job.has_calendars = job.calendars.exists()
    Job.objects.filter(pk=job.pk).update(has_calendars=job.has_calendars)
    _reschedule([job])


@transaction.atomic
def calendar_import(*, spec: Any) -> str:
    """Make the calendar of a config file's ``spec`` (:class:`scheduling.config.
    CalendarSpec`) what the file says: created (``"+"``), its exclusions replaced when
    they differ (``"~"``), or left as it is (``""``)."""
    from scheduling.config import rule_to_entry

    calendar = Calendar.objects.filter(name=spec.name).first()
    if calendar is None:
        calendar_add(name=spec.name, description=spec.description, rules=spec.rules)
        return "+"
    wanted = [rule_to_entry(rule) for rule in spec.rules]
    stored = [rule_to_entry(rule) for rule in calendar.rules.all()]
    if calendar.description == spec.description and sorted(map(repr, wanted)) == sorted(
        map(repr, stored)
    ):
        return ""
    calendar.rules.all().delete()
    calendar_add(name=spec.name, description=spec.description, rules=spec.rules)
    return "~"


def calendar_changed(*, calendar: Calendar) -> None:
    """Reschedule the jobs that use ``calendar`` (its exclusions changed)."""
    _reschedule(calendar.jobs.filter(enabled=True))


@transaction.atomic
def calendar_remove(*, calendar: Calendar) -> None:
    """Remove ``calendar``; the jobs that used it run on their plain schedule again."""
    jobs = list(calendar.jobs.all())
    calendar.delete()
    for job in jobs:
        job.has_calendars = job.calendars.exists()
        Job.objects.filter(pk=job.pk).update(has_calendars=job.has_calendars)
    _reschedule(jobs)


@transaction.atomic
def job_set_calendars(*, job: Job, names: Iterable[str]) -> Job:
    """Make ``names`` the calendars of ``job`` (``ValidationError`` naming any unknown
    one) and reschedule it; the change is in its audit trail."""
    names = sorted({name for name in names if name})
    found = {calendar.name: calendar for calendar in Calendar.objects.filter(name__in=names)}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise ValidationError(
            {"calendars": _("No calendar named %(names)s.") % {"names": ", ".join(unknown)}}
        )
    before = sorted(job.calendars.values_list("name", flat=True))
    if before == names:
        return job
    job.calendars.set(found.values())
    Job.objects.filter(pk=job.pk).update(has_calendars=bool(found))
    job.has_calendars = bool(found)
    _reschedule([job])
    job.refresh_from_db()
    _emit_change(job, {"calendars": [before, names]})
    return job


def _emit_change(job: Job, changes: dict[str, Any]) -> None:
    from scheduling import audit

    context = audit.current()
    signals.job_changed.send_robust(
        sender=Job, job=job, source=context.source, actor=context.actor, changes=changes
    )


@transaction.atomic
def job_skip_next(*, job: Job) -> dt.datetime:
    """Exclude the job's next fire time, once (a one-off exclusion that beat removes
    when it has passed); return that fire time. ``ValidationError`` when nothing is due."""
    locked = Job.objects.select_for_update().get(pk=job.pk)
    if not locked.enabled or locked.next_run_at is None:
        raise ValidationError(
            {"job": _("Job %(name)s has no next run to skip.") % {"name": job.name}}
        )
    if locked.skip_at is not None:
        raise ValidationError(
            {
                "job": _(
                    "Job %(name)s already skips its run at %(when)s; skip the next one once "
                    "that has passed."
                )
                % {"name": job.name, "when": locked.skip_at.isoformat()}
            }
        )
    skipped = locked.next_run_at
    locked.skip_at = skipped
    locked.excluded_from = None
    locked.set_next_run(locked.compute_next_run(skipped))
    locked.excluded_from = skipped
    locked.save(update_fields=["skip_at", "next_run_at", "dispatch_at", "excluded_from"])
    job.skip_at, job.next_run_at, job.dispatch_at = skipped, locked.next_run_at, locked.dispatch_at
    job.excluded_from = skipped
    _emit_change(job, {"skip_next": [None, skipped.isoformat()]})
    return skipped


def job_excluded_upcoming(*, job: Job, count: int = 5) -> list[dict[str, Any]]:
    """The fire times the job's exclusions remove before its next ``count`` runs: one
    entry per excluded window ``{"from", "until", "count", "calendar", "label"}`` (times
    in the job's timezone), for the preview."""
    try:
        trigger = job.trigger()
    except ValueError:
        return []
    inner = trigger.trigger if isinstance(trigger, schedules.Window) else trigger
    if not job.enabled or not isinstance(inner, calendars.Excluding):
        return []
    start = job.excluded_from or job.next_run_at or timezone.now()
    upcoming = schedules.upcoming(trigger, after=start - dt.timedelta(microseconds=1), count=count)
    if not upcoming:
        return []
    tz = schedules.get_timezone(job.timezone)
    end = upcoming[-1]
    return [
        {
            "from": first.astimezone(tz).isoformat(),
            "until": last.astimezone(tz).isoformat(),
            "count": number,
            "calendar": why.calendar,
            "label": why.label,
        }
        for why, first, last, number in inner.excluded_spans(start, end)
    ]
