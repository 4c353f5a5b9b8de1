"""Backfill: runs of a job for the fire times of a past range, throttled, below the job's
priority, within its overlap policy, and cancellable.

1. **Plan** (:func:`backfill_plan`): the job's own fire times (its trigger within its
   validity window, the same computation beat uses, daylight saving included) from the
   start (inclusive) to the end (exclusive), each with the outcome on record for it (its
   last row, or an outage's summary that covers it) and whether ``reprocess`` sends it:
   ``missing`` those that never ran (nothing on record, missed or skipped), ``failed``
   also those whose last run failed, timed out, was lost, cancelled or terminated,
   ``all`` every one. A fire time whose run is still going or waiting is never sent.
   The fire times the job's calendars exclude (as beat excludes them) are not sent,
   and each excluded window is in the plan (not sent, the calendar as the reason), so a
   dry run shows why those times are left out rather than omitting them.
2. **Create** (:func:`backfill_create`): a :class:`Backfill` row and one
   :class:`BackfillRun` per fire time, in one transaction (nothing with a dry run).
3. **Send** (:func:`backfills_send_due`, every worker's housekeeping each
   ``BACKFILL_CHECK_INTERVAL``): under the backfill's row lock (one sender at a time,
   whatever the number of workers), at most ``BACKFILL_RATE`` runs a second, oldest fire
   time first, and only while the job has a free slot (max instances, counting the
   backfill's runs sent and not over; no limit under *allow all*), so that a backfilled
   run does not take the place of a scheduled one nor get skipped for want of one. Each
   goes as trigger ``backfill`` with its fire time as scheduled (logical) time, one
   priority step below the job's (a job at 0, the lowest, keeps 0), and the backfill's
   overlap policy (else the job's): the worker applies the rules to it as to any run.
4. **Cancel** (:func:`backfill_cancel`): the fire times not sent yet are recorded
   cancelled; the runs already sent go on.

Every fire time ends up explained: its :class:`BackfillRun` says it was left (what is
on record), cancelled, or sent, and then its run's record says how it went.
"""

import datetime as dt
import logging
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from scheduling import calendars, conf, registry, schedules, signals
from scheduling.models import (
    FAILED_STATUSES,
    NOT_RUN_STATUSES,
    STOPPED_STATUSES,
    UNFINISHED_STATUSES,
    Backfill,
    BackfillReprocess,
    BackfillRun,
    BackfillRunState,
    BackfillState,
    ExecutionTrigger,
    Job,
    JobExecution,
    JobGroup,
    OverlapPolicy,
    overlap_problem,
)
from scheduling.runs import rules
from scheduling.runs.lease import db_now

logger = logging.getLogger(__name__)

#: The outcomes on record that each ``reprocess`` choice sends again (``None``: nothing).
REPROCESSED = {
    BackfillReprocess.MISSING: {None, *NOT_RUN_STATUSES},
    BackfillReprocess.FAILED: {None, *NOT_RUN_STATUSES, *FAILED_STATUSES, *STOPPED_STATUSES},
}


def fire_times(job: Job, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The fire times of ``job`` at or after ``start`` and before ``end``, by its own
    trigger; more than ``BACKFILL_MAX_RUNS`` is refused (``ValidationError`` on ``end``)."""
    limit = conf.get("BACKFILL_MAX_RUNS")
    try:
        trigger = job.trigger()
    except ValueError as exc:
        raise ValidationError({"job": str(exc)}) from None
    times: list[dt.datetime] = []
    moment = trigger.next_after(start - dt.timedelta(microseconds=1))
    while moment is not None and moment < end:
        if len(times) == limit:
            raise ValidationError(
                {
                    "end": _(
                        "The range holds more than %(limit)d fire times (BACKFILL_MAX_RUNS); "
                        "backfill a shorter one."
                    )
                    % {"limit": limit}
                }
            )
        times.append(moment)
        moment = trigger.next_after(moment)
    return times


def excluded_windows(job: Job, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """The windows of the range that the job's calendars (or its skip next run) exclude,
    inside its validity window: one entry each, its first fire time and why (how many
    fire times when more than one), as :func:`scheduling.explain.job_explain` shows them."""
    trigger = job.trigger()
    inner = trigger.trigger if isinstance(trigger, schedules.Window) else trigger
    if not isinstance(inner, calendars.Excluding):
        return []
    low = max(start, job.start_at) if job.start_at else start
    high = min(end, job.end_at + dt.timedelta(microseconds=1)) if job.end_at else end
    windows = []
    for why, first, last, count in inner.excluded_spans(low, high) if low < high else []:
        words = why.words()
        if count > 1:
            words = _("%(count)d fire times to %(last)s: %(why)s") % {
                "count": count,
                "last": last.isoformat(),
                "why": words,
            }
        windows.append({"scheduled_at": first, "reason": words})
    return windows


def on_record(
    job: Job, start: dt.datetime, end: dt.datetime
) -> tuple[dict[dt.datetime, str], list[JobExecution]]:
    """What is on record for the fire times of ``job`` in the range: the outcome of each
    one's last row (any trigger: a scheduled run, a re-run, an earlier backfill), and the
    outage summaries that cover some of them (missed)."""
    found: dict[dt.datetime, str] = {}
    summaries = list(
        JobExecution.objects.filter(
            job=job, missed_until__isnull=False, scheduled_at__lt=end, missed_until__gte=start
        )
    )
    rows = (
        JobExecution.objects.filter(
            job=job, scheduled_at__gte=start, scheduled_at__lt=end, missed_until__isnull=True
        )
        .order_by("pk")
        .values_list("scheduled_at", "status")
    )
    for moment, status in rows:
        found[moment] = status
    return found, summaries


def backfill_plan(
    *, job: Job, start: dt.datetime, end: dt.datetime, reprocess: str
) -> list[dict[str, Any]]:
    """Each fire time of the range: ``scheduled_at``, ``existing`` (the outcome on record,
    or ``None``), ``send`` (whether the backfill sends it) and ``reason`` (why not); and
    each excluded window (:func:`excluded_windows`), never sent."""
    record, summaries = on_record(job, start, end)
    plan = []
    for moment in fire_times(job, start, end):
        existing = record.get(moment)
        if existing is None and any(summary.covers(moment) for summary in summaries):
            existing = "missed"
        if existing in UNFINISHED_STATUSES:
            send, reason = False, _("A run of it is still going or waiting.")
        elif reprocess == BackfillReprocess.ALL or existing in REPROCESSED[reprocess]:
            send, reason = True, ""
        else:
            send, reason = (
                False,
                _("On record as %(status)s (reprocess %(reprocess)s).")
                % {
                    "status": existing,
                    "reprocess": reprocess,
                },
            )
        plan.append({"scheduled_at": moment, "existing": existing, "send": send, "reason": reason})
    for window in excluded_windows(job, start, end):
        existing = record.get(window["scheduled_at"])
        plan.append({**window, "existing": existing, "send": False})
    plan.sort(key=lambda item: item["scheduled_at"])
    return plan


def _check(
    *, job: Job, start: dt.datetime, end: dt.datetime, reprocess: str, overlap: str | None
) -> None:
    if not registry.is_registered(job.task):
        raise ValidationError({"task": str(registry.UnknownTaskError(job.task))})
    for name, moment in (("start", start), ("end", end)):
        if moment is None or timezone.is_naive(moment):
            raise ValidationError({name: _("Give the time with its timezone.")})
    if start >= end:
        raise ValidationError({"end": _("The end must be after the start.")})
    if end > timezone.now():
        raise ValidationError(
            {"end": _("The end must not be later than now: the schedule runs what is to come.")}
        )
    if reprocess not in BackfillReprocess.values:
        raise ValidationError(
            {
                "reprocess": _("%(value)s is not one of %(choices)s.")
                % {"value": repr(reprocess), "choices": ", ".join(BackfillReprocess.values)}
            }
        )
    if overlap and (problem := overlap_problem(overlap)):
        raise ValidationError({"overlap": problem})


def backfill_create(
    *,
    job: Job,
    start: dt.datetime,
    end: dt.datetime,
    reprocess: str = BackfillReprocess.MISSING,
    overlap: str | None = None,
    dry_run: bool = False,
    actor: str = "",
    tz_name: str | None = None,
) -> Backfill:
    """Plan a backfill of ``job`` from ``start`` to ``end`` and, unless ``dry_run``, store
    it to be sent (:func:`backfills_send_due`, the first runs as soon as this commits).
    Return the backfill (unsaved with ``dry_run``) with its ``plan``. Bad input is refused
    with a ``ValidationError`` naming the field; nothing is written then."""
    _check(job=job, start=start, end=end, reprocess=reprocess, overlap=overlap)
    plan = backfill_plan(job=job, start=start, end=end, reprocess=reprocess)
    to_send = sum(1 for item in plan if item["send"])
    backfill = Backfill(
        job=job,
        job_name=job.name,
        start=start,
        end=end,
        timezone=tz_name or job.timezone,
        reprocess=reprocess,
        overlap=overlap or "",
        state=BackfillState.RUNNING if to_send else BackfillState.DONE,
        created_by=actor,
        total_count=len(plan),
        skipped_count=len(plan) - to_send,
        next_send_at=timezone.now(),
    )
    backfill.plan = plan
    if dry_run:
        return backfill
    with transaction.atomic():
        if not to_send:
            backfill.finished_at = timezone.now()
        backfill.save()
        BackfillRun.objects.bulk_create(
            [
                BackfillRun(
                    backfill=backfill,
                    scheduled_at=item["scheduled_at"],
                    existing=item["existing"] or "",
                    state=BackfillRunState.PENDING if item["send"] else BackfillRunState.SKIPPED,
                    reason=item["reason"][:300],
                )
                for item in plan
            ],
            batch_size=1000,
        )
        _emit(signals.backfill_started, backfill, actor)
        if to_send:
            transaction.on_commit(lambda: backfills_send_due(backfill_id=backfill.pk))
    return backfill


def _emit(signal, backfill: Backfill, actor: str) -> None:
    from scheduling import audit

    if backfill.job is None:
        return
    signal.send_robust(
        sender=Job,
        job=backfill.job,
        source=audit.current().source,
        actor=actor,
        changes={
            "backfill": [None, backfill.pk],
            "range": [None, f"{backfill.start.isoformat()} to {backfill.end.isoformat()}"],
            "counts": [None, backfill_counts(backfill)],
        },
    )


def backfill_counts(backfill: Backfill) -> dict[str, int]:
    """A backfill's fire times by what became of them."""
    return {
        "total": backfill.total_count,
        "not_sent_on_record": backfill.skipped_count,
        "sent": backfill.sent_count,
        "cancelled": backfill.cancelled_count,
        "pending": backfill.pending_count,
    }


@transaction.atomic
def backfill_cancel(*, backfill: Backfill, actor: str = "") -> Backfill:
    """Stop sending ``backfill``: its fire times not sent yet are recorded cancelled
    (who, when); the runs already sent go on. A backfill that is over is refused."""
    locked = Backfill.objects.select_for_update().get(pk=backfill.pk)
    if locked.state != BackfillState.RUNNING:
        raise ValidationError(
            {
                "backfill": _(
                    "Backfill %(id)s is %(state)s: only one still sending can be cancelled."
                )
                % {"id": locked.pk, "state": locked.get_state_display()}
            }
        )
    reason = _("Cancelled by %(who)s before it was sent.") % {"who": actor or "?"}
    count = BackfillRun.objects.filter(backfill=locked, state=BackfillRunState.PENDING).update(
        state=BackfillRunState.CANCELLED, reason=reason[:300]
    )
    locked.state, locked.cancelled_by = BackfillState.CANCELLED, actor[:150]
    locked.finished_at = timezone.now()
    locked.cancelled_count = F("cancelled_count") + count
    locked.save(update_fields=["state", "cancelled_by", "finished_at", "cancelled_count"])
    locked.refresh_from_db()
    _emit(signals.backfill_cancelled, locked, actor)
    return locked


def _free_slots(backfill: Backfill, job: Job) -> int | None:
    """How many more of the backfill's runs may go now (``None``: no limit, *allow all*
    in a group without a cap): the job's free slots, and its group's if the group caps
    its runs, counting its backfill's runs sent and not over."""
    sent = backfill.sent_count
    going = (
        sent
        - JobExecution.objects.filter(backfill=backfill)
        .exclude(status__in=UNFINISHED_STATUSES)
        .count()
    )
    holding = JobExecution.objects.filter(rules.slot_at(db_now())).exclude(backfill=backfill)
    cap = (
        JobGroup.objects.filter(name=job.group, max_instances__isnull=False)
        .values_list("max_instances", flat=True)
        .first()
    )
    group_free = None if cap is None else cap - holding.filter(job__group=job.group).count() - going
    if (backfill.overlap or job.overlap) == OverlapPolicy.ALLOW_ALL:
        return None if group_free is None else max(0, group_free)
    free = job.max_instances - holding.filter(job=job).count() - going
    return max(0, free if group_free is None else min(free, group_free))


def backfill_priority(job: Job) -> int:
    """The priority of a backfilled run: one step below its job's (0 stays 0)."""
    return max(job.priority - 1, 0)


def _send_some(backfill: Backfill, now: dt.datetime) -> int:
    """Send the runs of ``backfill`` due by ``now`` (rate and free slots); inside the
    caller's transaction, holding the backfill's row lock."""
    job = Job.objects.filter(pk=backfill.job_id).first()
    if job is None:
        _finish(backfill, _("Cancelled: the job was removed."), cancelled=True)
        return 0
    rate = float(conf.get("BACKFILL_RATE"))
    start = backfill.next_send_at or now
    if start > now:
        return 0
    due = int((now - start).total_seconds() * rate) + 1
    free = _free_slots(backfill, job)
    budget = due if free is None else min(due, free)
    pending = list(
        BackfillRun.objects.filter(backfill=backfill, state=BackfillRunState.PENDING).order_by(
            "scheduled_at"
        )[: max(budget, 0)]
    )
    sent = []
    for item in pending:
        item.task_id, item.sent_at = str(uuid.uuid4()), now
        if BackfillRun.objects.filter(pk=item.pk, state=BackfillRunState.PENDING).update(
            state=BackfillRunState.SENT, task_id=item.task_id, sent_at=now
        ):
            sent.append(item)
    if sent:
        # No burst after an idle spell (a full job, a stopped worker): the rate counts on.
        backfill.next_send_at = max(start, now - dt.timedelta(seconds=1 / rate)) + dt.timedelta(
            seconds=len(sent) / rate
        )
        backfill.sent_count += len(sent)
        backfill.save(update_fields=["next_send_at", "sent_count"])
        transaction.on_commit(lambda: _publish(job, backfill, sent))
    if not BackfillRun.objects.filter(backfill=backfill, state=BackfillRunState.PENDING).exists():
        _finish(backfill)
    return len(sent)


def _finish(backfill: Backfill, reason: str = "", *, cancelled: bool = False) -> None:
    if cancelled:
        count = BackfillRun.objects.filter(
            backfill=backfill, state=BackfillRunState.PENDING
        ).update(state=BackfillRunState.CANCELLED, reason=reason[:300])
        backfill.cancelled_count += count
    backfill.state = BackfillState.CANCELLED if cancelled else BackfillState.DONE
    backfill.finished_at = timezone.now()
    backfill.save(update_fields=["state", "finished_at", "cancelled_count"])


def _publish(job: Job, backfill: Backfill, items: list[BackfillRun]) -> None:
    """Send the messages of the claimed fire times; one that cannot be sent is recorded
    on its fire time (its run never comes)."""
    from scheduling.services import job_dispatch

    for item in items:
        try:
            job_dispatch(
                job=job,
                trigger=ExecutionTrigger.BACKFILL,
                scheduled_at=item.scheduled_at,
                task_id=item.task_id,
                overlap=backfill.overlap or None,
                backfill_id=backfill.pk,
                priority=backfill_priority(job),
            )
        except Exception as exc:
            logger.exception("Backfill %s: could not send %s", backfill.pk, item.scheduled_at)
            BackfillRun.objects.filter(pk=item.pk).update(reason=f"Could not be sent: {exc}"[:300])


def backfills_send_due(*, backfill_id: int | None = None) -> int:
    """Send what is due of every backfill still sending (or of ``backfill_id``); return
    how many runs were sent. Each backfill under its row lock, skipped when another
    worker holds it."""
    sent = 0
    ids = Backfill.objects.filter(state=BackfillState.RUNNING)
    if backfill_id is not None:
        ids = ids.filter(pk=backfill_id)
    for pk in list(ids.values_list("pk", flat=True)):
        with transaction.atomic():
            backfill = (
                Backfill.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, state=BackfillState.RUNNING)
                .first()
            )
            if backfill is not None:
                sent += _send_some(backfill, db_now())  # the clock lateness is read on
    return sent


def plan_json(backfill: Backfill, tz_name: str) -> dict[str, Any]:
    """A backfill (or its dry run) as JSON: the range, the choices, the counts and, for a
    dry run, ``runs``: each fire time with ``scheduled_at`` (ISO 8601 with its offset, in
    ``tz_name``), ``existing`` and ``send``."""
    tz = schedules.get_timezone(tz_name)
    data: dict[str, Any] = {
        "id": backfill.pk,
        "job": backfill.job_name,
        "start": backfill.start.astimezone(tz).isoformat(),
        "end": backfill.end.astimezone(tz).isoformat(),
        "timezone": tz_name,
        "reprocess": backfill.reprocess,
        "overlap": backfill.overlap or None,
        "state": backfill.state,
        "dry_run": backfill.pk is None,
        "counts": backfill_counts(backfill),
    }
    plan = getattr(backfill, "plan", None)
    if plan is not None:
        data["runs"] = [
            {
                "scheduled_at": item["scheduled_at"].astimezone(tz).isoformat(),
                "existing": item["existing"],
                "send": item["send"],
                "reason": item["reason"],
            }
            for item in plan
        ]
    return data
