"""Why did (or didn't) a job run? Each recent and upcoming fire time with its fate.

A read (a selector): it lists what is on record and does not guess. For a past fire time
that is the run recorded for it (ran, with its outcome; missed or skipped, with the
reason), the ledger of sent messages (sent, no worker has started it yet), the audit trail
(the job was paused then, by whom and why), or, when none of those holds, that nothing is
on record. Upcoming fire times are the job's schedule from its next fire time on, or the
pause that holds them back.
"""

import collections
import dataclasses
import datetime as dt
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from scheduling import calendars, schedules
from scheduling.models import (
    IN_PROGRESS_STATUSES,
    STOPPED_STATUSES,
    BeatHeartbeat,
    ExecutionStatus,
    ExecutionTrigger,
    Job,
    JobChange,
    JobExecution,
    SentFireTime,
)

#: The fates a fire time can have, as ``jobs explain --json`` names them.
RAN, MISSED, SKIPPED, RUNNING, WAITING, STOPPED, SENT, NOT_SENT, PAUSED, NO_RECORD, DUE = (
    "ran",
    "missed",
    "skipped",
    "running",
    "waiting",
    "stopped",
    "sent",
    "not_sent",
    "paused",
    "no_record",
    "due",
)
#: A fire time an exclusion calendar (or a skip next run) removed.
EXCLUDED = "excluded"
#: How the admin names each fate.
FATE_LABELS = {
    RAN: gettext_lazy("ran"),
    MISSED: gettext_lazy("missed"),
    SKIPPED: gettext_lazy("skipped"),
    RUNNING: gettext_lazy("running"),
    WAITING: gettext_lazy("waiting for a free slot"),
    STOPPED: gettext_lazy("cancelled or terminated"),
    SENT: gettext_lazy("sent, waiting for a worker"),
    NOT_SENT: gettext_lazy("not sent yet"),
    PAUSED: gettext_lazy("paused"),
    NO_RECORD: gettext_lazy("no record"),
    DUE: gettext_lazy("due"),
    EXCLUDED: gettext_lazy("excluded"),
}
#: At most this many fire times of the schedule are walked to list the recent ones.
WALK_LIMIT = 10_000


@dataclasses.dataclass(frozen=True)
class Fate:
    """What became (or will become) of one fire time of a job."""

    scheduled_at: dt.datetime
    fate: str
    detail: str = ""
    status: str | None = None
    execution_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scheduled_at": self.scheduled_at.isoformat(),
            "fate": self.fate,
            "detail": self.detail,
            "status": self.status,
            "execution_id": self.execution_id,
        }


def job_explain(
    *,
    job: Job,
    recent: int = 20,
    upcoming: int = 5,
    since: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The fates of ``job``'s last ``recent`` fire times (since ``since``, by default the
    last day) and of its next ``upcoming`` ones."""
    now = now or timezone.now()
    since = since or now - dt.timedelta(days=1)
    return {
        "job": job.name,
        "now": now.isoformat(),
        "paused": None if job.enabled else _pause_words(job),
        "recent": [fate.as_dict() for fate in _recent(job, recent, since, now)],
        "upcoming": [fate.as_dict() for fate in _upcoming(job, upcoming, now)],
    }


def _scheduled_times(job: Job, since: dt.datetime, now: dt.datetime, count: int) -> list:
    """The last ``count`` fire times of the job's current schedule between ``since`` (or
    its last change of trigger, if later) and ``now``."""
    try:
        trigger = job.trigger()
    except ValueError:
        return []
    start = max(since, job.schedule_anchor) if job.schedule_anchor else since
    kept: collections.deque = collections.deque(maxlen=count)
    moment = trigger.next_after(start - dt.timedelta(microseconds=1))
    for _step in range(WALK_LIMIT):
        if moment is None or moment > now:
            break
        kept.append(moment)
        moment = trigger.next_after(moment)
    return list(kept)


def _recent(job: Job, count: int, since: dt.datetime, now: dt.datetime) -> list[Fate]:
    runs = {}
    # The last attempt of each fire time is its fate (an earlier attempt was retried); a
    # fire time backfilled later has the backfill's run as its fate.
    for run in (
        JobExecution.objects.filter(
            job=job,
            scheduled_at__gte=since,
            scheduled_at__lte=now,
            trigger__in=[ExecutionTrigger.SCHEDULE, ExecutionTrigger.BACKFILL],
        )
        .order_by("-scheduled_at", "-pk")
        .only(
            "pk",
            "scheduled_at",
            "status",
            "reason",
            "exception",
            "attempt",
            "excluded_by",
            "missed_count",
            "missed_until",
        )[: count * 4]
    ):
        runs.setdefault(run.scheduled_at, run)
    times = set(_scheduled_times(job, since, now, count)) | set(runs)
    times = sorted(times)[-count:]
    sent = set(
        SentFireTime.objects.filter(job=job, scheduled_at__in=times).values_list(
            "scheduled_at", flat=True
        )
    )
    summaries = list(
        JobExecution.objects.filter(
            job=job, missed_until__isnull=False, missed_until__gte=since, scheduled_at__lte=now
        ).only(
            "pk",
            "scheduled_at",
            "missed_until",
            "missed_count",
            "status",
            "reason",
            "excluded_by",
        )
    )
    pauses = _pause_periods(job, since, now)
    not_sent = None
    fates = []
    for moment in times:
        run = runs.get(moment)
        summary = next((row for row in summaries if row.covers(moment)), None)
        if run is not None:
            fates.append(_run_fate(moment, run))
        elif summary is not None and summary.excluded_by:
            fates.append(Fate(moment, EXCLUDED, summary.reason, summary.status, summary.pk))
        elif summary is not None:
            detail = _("one of %(count)d fire times missed from %(first)s to %(last)s: %(why)s") % {
                "count": summary.missed_count,
                "first": summary.scheduled_at.isoformat(),
                "last": summary.missed_until.isoformat(),
                "why": summary.reason,
            }
            fates.append(Fate(moment, MISSED, detail, summary.status, summary.pk))
        elif moment in sent:
            fates.append(Fate(moment, SENT, _("Sent to the broker; no worker has started it yet.")))
        elif (pause := _paused_at(pauses, moment)) is not None:
            fates.append(Fate(moment, PAUSED, pause))
        elif job.enabled and job.next_run_at is not None and moment >= job.next_run_at:
            not_sent = not_sent or _not_sent_words()
            fates.append(Fate(moment, NOT_SENT, not_sent))
        else:
            fates.append(Fate(moment, NO_RECORD, _("Nothing is on record for this fire time.")))
    return fates


def _not_sent_words() -> str:
    """Why a due fire time is not sent yet, with the last sign of life of any beat."""
    words = _("Due, but beat has not sent it yet: no beat is leading, or it is behind.")
    last = BeatHeartbeat.objects.order_by("-last_tick_at").first()
    if last is None:
        return words + " " + _("No beat has ever run.")
    return (
        words
        + " "
        + _("Last beat pass: %(when)s (%(name)s).")
        % {
            "when": last.last_tick_at.isoformat(),
            "name": last.name,
        }
    )


def _run_fate(moment: dt.datetime, run: JobExecution) -> Fate:
    if run.status in IN_PROGRESS_STATUSES:
        return Fate(moment, RUNNING, run.reason, run.status, run.pk)
    if run.status in (ExecutionStatus.WAITING, ExecutionStatus.QUEUED):
        return Fate(moment, WAITING, run.reason, run.status, run.pk)
    if run.status in STOPPED_STATUSES:
        return Fate(moment, STOPPED, run.reason, run.status, run.pk)
    if run.excluded_by:
        detail = run.reason
        if run.missed_count:
            detail = _("%(count)d fire times to %(last)s: %(why)s") % {
                "count": run.missed_count,
                "last": run.missed_until.isoformat(),
                "why": run.reason,
            }
        return Fate(moment, EXCLUDED, detail, run.status, run.pk)
    if run.status in ("missed", "skipped"):
        fate = MISSED if run.status == "missed" else SKIPPED
        return Fate(moment, fate, run.reason, run.status, run.pk)
    detail = run.exception.strip().splitlines()[0] if run.exception.strip() else run.reason
    if run.attempt:
        detail = _("attempt %(n)d") % {"n": run.attempt + 1} + (f": {detail}" if detail else "")
    return Fate(moment, RAN, detail, run.status, run.pk)


def _pause_periods(job: Job, since: dt.datetime, now: dt.datetime) -> list[tuple]:
    """The job's pauses that overlap ``since``..``now``, from the audit trail:
    ``(start, end or None, words)``."""
    changes = list(
        JobChange.objects.filter(job=job, action__in=("paused", "resumed", "added"))
        .filter(at__lte=now)
        .order_by("at", "pk")
    )
    periods = []
    start = words = None
    for change in changes:
        paused = change.action == "paused" or (
            change.action == "added" and change.changes.get("enabled", [None, True])[1] is False
        )
        if paused and start is None:
            start = change.at
            reason = (change.changes.get("pause_reason") or [None, ""])[1]
            who = change.actor or change.source
            words = _("Paused by %(who)s") % {"who": who} + (f": {reason}" if reason else "")
        elif change.action == "resumed" and start is not None:
            periods.append((start, change.at, words))
            start = None
    if start is not None:
        periods.append((start, None, words))
    return [p for p in periods if p[1] is None or p[1] >= since]


def _paused_at(periods: list[tuple], moment: dt.datetime) -> str | None:
    for start, end, words in periods:
        if start <= moment and (end is None or moment < end):
            return words
    return None


def _pause_words(job: Job) -> str:
    words = _("Paused by %(who)s") % {"who": job.paused_by or _("an operator")}
    if job.paused_at:
        words += " " + _("at %(when)s") % {"when": job.paused_at.isoformat()}
    if job.pause_reason:
        words += f": {job.pause_reason}"
    if job.resume_at:
        words += "; " + _("resumes at %(when)s") % {"when": job.resume_at.isoformat()}
    return words


def _upcoming(job: Job, count: int, now: dt.datetime) -> list[Fate]:
    try:
        trigger = job.trigger()
    except ValueError as exc:
        return [Fate(now, NO_RECORD, _("Cannot be scheduled: %(error)s") % {"error": exc})]
    if not job.enabled and job.resume_at is None:
        return []
    after = job.resume_at if not job.enabled else None
    moment = trigger.next_after(max(after or now, now))
    fates = []
    while moment is not None and len(fates) < count:
        detail = _("After the resume at %(when)s.") % {"when": after.isoformat()} if after else ""
        fates.append(Fate(moment, DUE, detail))
        moment = trigger.next_after(moment)
    inner = trigger.trigger if isinstance(trigger, schedules.Window) else trigger
    if fates and isinstance(inner, calendars.Excluding):
        # The excluded windows among them: the first fire time of each, and how many.
        start = max(after or now, now)
        for why, first, last, number in inner.excluded_spans(start, fates[-1].scheduled_at):
            words = why.words()
            if number > 1:
                words = _("%(count)d fire times to %(last)s: %(why)s") % {
                    "count": number,
                    "last": last.isoformat(),
                    "why": words,
                }
            fates.append(Fate(first, EXCLUDED, words))
        fates.sort(key=lambda fate: fate.scheduled_at)
    return fates
