"""The rules that decide a fire time's fate, as pure functions: nothing here reads or
writes the database.

Beat and the worker apply the same misfire rule (a fire time whose start would be later
than its misfire grace is *missed*) at two moments:

- beat, before it sends (:func:`plan_next`): fire times it could not send in time (it
  was down, or behind) are recorded as missed, and with coalesce on, only the newest of
  those still within the grace is sent;
- the worker, when the message arrives (:func:`decide`): the run starts, or is recorded
  as missed (late, or coalesced into a run that already covered it), skipped (max
  instances) or waiting for a free slot (the job's overlap policy). :data:`STARTS_WHERE` is the same decision as a SQL condition, so the worker
  can start a run in one statement; a test checks that the two agree.
"""

import dataclasses
import datetime as dt
import enum
import logging
from typing import Any

from django.db.models import Q

from scheduling import conf
from scheduling.models import ExecutionStatus, ExecutionTrigger, Job, JobExecution, OverlapPolicy
from scheduling.schedules import IntervalTrigger, Window

logger = logging.getLogger(__name__)

# Most fire times walked through to find the newest one due (coalescing).
CATCH_UP_LIMIT = 100_000


def lateness(
    *,
    trigger: str,
    scheduled_at: dt.datetime | None,
    jitter: float | None,
    attempt: int,
    now: dt.datetime,
    sent_at: dt.datetime | None = None,
) -> float | None:
    """Seconds from a fire time plus its jitter to ``now``; ``None`` for a run the
    misfire rule does not apply to (a retry, or a run sent before runs carried when).

    A run not sent by the schedule (run now, re-run, backfill) is not late by its
    scheduled time, which is only its logical time (a re-run's or a backfill's lies in
    the past): its lateness counts from when it was sent (``sent_at``), so one that
    waited in the queue longer than the grace is missed, as a scheduled one is."""
    if attempt > 0:
        return None
    if trigger != ExecutionTrigger.SCHEDULE:
        return None if sent_at is None else (now - sent_at).total_seconds()
    if scheduled_at is None:
        return None
    return (now - scheduled_at).total_seconds() - (jitter or 0)


def misfired(job: Job, late: float | None) -> bool:
    """The misfire rule: a run this late (:func:`lateness`) is past the job's grace."""
    return late is not None and late > job.misfire_grace_time


def oldest_allowed(job: Job, now: dt.datetime) -> dt.datetime:
    """The oldest fire time of ``job`` that beat may still send at ``now``: any older one
    is :func:`misfired` even with the largest jitter it may have drawn."""
    return now - dt.timedelta(seconds=job.misfire_grace_time + job.jitter)


class Others(enum.Enum):
    """What a run's start does to the runs of its job still going (overlap policies
    cancel other and terminate other)."""

    CANCEL = "cancel"
    TERMINATE = "terminate"


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the rules say of a run about to start: ``RUNNING`` (start it), ``WAITING``
    (keep it waiting for a free slot), or the status it is recorded with instead
    (``MISSED``, ``SKIPPED``) and why; ``others``: what to do first with the runs still
    going (``None``: leave them be)."""

    status: ExecutionStatus
    reason: str = ""
    others: Others | None = None

    @property
    def starts(self) -> bool:
        return self.status == ExecutionStatus.RUNNING

    @property
    def waits(self) -> bool:
        return self.status == ExecutionStatus.WAITING

    @property
    def starts_at_once(self) -> bool:
        """It starts with nothing else to do first: what :data:`STARTS_WHERE` says."""
        return self.starts and self.others is None


#: Who the runs cancelled or terminated by an overlap policy were stopped by.
CANCEL_OTHER_ACTOR = "overlap policy cancel_other"
TERMINATE_OTHER_ACTOR = "overlap policy terminate_other"

#: Policies under which a fire time that finds no free slot may wait for one.
BUFFERING = frozenset(
    {OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL, OverlapPolicy.CANCEL_OTHER}
)


@dataclasses.dataclass(frozen=True)
class GroupSlots:
    """The slots of a job group that caps its runs, as counted under its row lock
    (:mod:`scheduling.runs.groups`): its name, its max instances (``cap``) and how many
    runs of its jobs hold a slot (``live``)."""

    name: str
    cap: int
    live: int

    @property
    def free(self) -> int:
        return max(0, self.cap - self.live)

    def taking(self, runs: int) -> "GroupSlots":
        """The group once ``runs`` more of its runs hold a slot."""
        return dataclasses.replace(self, live=self.live + runs)


def buffers(job: Job) -> bool:
    """Whether ``job``'s runs may wait for a free slot (their promotion is due when one
    of its runs ends)."""
    return job.overlap in BUFFERING


def promotable(job: Job, *, live: int, waiting: int, group: GroupSlots | None = None) -> int:
    """How many of the ``waiting`` runs of ``job`` may be sent to the workers now that
    ``live`` runs hold a slot: as many as slots are free (all, under *allow all*), oldest
    fire time first, and no more than its ``group`` has free."""
    free = waiting if job.overlap == OverlapPolicy.ALLOW_ALL else job.max_instances - live
    if group is not None:
        free = min(free, group.free)
    return max(0, min(waiting, free))


def decide(
    job: Job,
    *,
    scheduled_at: dt.datetime | None,
    late: float | None,
    live: int,
    waiting: int = 0,
    overlap: str | None = None,
    retry: bool = False,
    scheduled: bool = True,
    group: GroupSlots | None = None,
) -> Decision:
    """Start, miss, coalesce, skip or keep waiting a run that is ``late``
    (:func:`lateness`) while ``live`` runs of ``job`` hold a slot (a live lease, or sent
    after waiting) and ``waiting`` runs wait for one, in this order:

    1. **misfire**: past the grace → missed;
    2. **coalesce**: a fire time already covered by a run (``coalesced_until``) → missed;
    3. **overlap** (``overlap``, the run's override, else the job's policy): with
       *allow all* it starts, whatever runs; otherwise it starts if a slot is free
       (``live`` under max instances) and no run waits ahead of it (first come, first
       served). If not: *skip* → skipped; *buffer one* → waits, unless one waits already
       (skipped); *buffer all* → waits, unless ``BUFFER_ALL_LIMIT`` wait already
       (skipped); *cancel other* → the runs going are cancelled and it waits for them to
       stop (unless one waits already: skipped); *terminate other* → the runs going are
       terminated and it starts. A ``retry`` never waits: it is skipped instead.
    4. **group**: a run its job lets start while its ``group`` (one that caps its runs)
       has every slot taken by runs of its jobs: under a policy that buffers (buffer one,
       buffer all, cancel other) it waits, without stopping any run; under any other
       (*allow all* too: it ignores the job's max instances, not its group's) it is
       skipped. The reason names the group.

    A run not sent by the schedule (``scheduled`` false: run now, re-run, backfill) is
    late since it was sent, and never coalesced.
    """
    if late is not None:
        if misfired(job, late):
            since = "its fire time" if scheduled else "it was sent"
            return Decision(
                ExecutionStatus.MISSED,
                f"Started {late:.1f}s after {since}; the grace is {job.misfire_grace_time}s.",
            )
        if scheduled and covered(job, scheduled_at):
            return Decision(
                ExecutionStatus.MISSED,
                f"Coalesced into the run that covered fire times up to "
                f"{job.coalesced_until.isoformat()}.",
            )
    policy = overlap or job.overlap
    if policy == OverlapPolicy.ALLOW_ALL or (live < job.max_instances and not waiting):
        if group is None or group.free:
            return Decision(ExecutionStatus.RUNNING)
        full = (
            f"group {group.name} is full: {group.live} run(s) of its jobs going; its max "
            f"instances is {group.cap}"
        )
        if policy in BUFFERING and not retry:
            return Decision(
                ExecutionStatus.WAITING,
                f"Waiting for a free slot: {full} (overlap policy {policy}).",
            )
        return Decision(ExecutionStatus.SKIPPED, f"{full[0].upper()}{full[1:]}.")
    going = f"{live} run(s) still going; max instances is {job.max_instances}"
    ahead = f" and {waiting} run(s) waiting" if waiting else ""
    if policy == OverlapPolicy.TERMINATE_OTHER:
        return Decision(ExecutionStatus.RUNNING, others=Others.TERMINATE)
    if policy in (OverlapPolicy.BUFFER_ONE, OverlapPolicy.CANCEL_OTHER) and waiting:
        return Decision(
            ExecutionStatus.SKIPPED,
            f"{going}{ahead}; the overlap policy {policy} keeps one waiting.",
        )
    if policy == OverlapPolicy.BUFFER_ALL and waiting >= conf.get("BUFFER_ALL_LIMIT"):
        return Decision(
            ExecutionStatus.SKIPPED,
            f"{going}{ahead}; the overlap policy buffer_all keeps at most "
            f"{conf.get('BUFFER_ALL_LIMIT')} waiting (BUFFER_ALL_LIMIT).",
        )
    if policy in BUFFERING and not retry:
        return Decision(
            ExecutionStatus.WAITING,
            f"Waiting for a free slot: {going}{ahead} (overlap policy {policy}).",
            others=Others.CANCEL if policy == OverlapPolicy.CANCEL_OTHER else None,
        )
    return Decision(ExecutionStatus.SKIPPED, f"{going}{ahead}.")


def covered(job: Job, scheduled_at: dt.datetime | None) -> bool:
    """Whether a coalescing job's run already covered the fire time ``scheduled_at``."""
    return bool(
        job.coalesce
        and job.coalesced_until
        and scheduled_at is not None
        and scheduled_at <= job.coalesced_until
    )


_EXECUTIONS = JobExecution._meta.db_table

#: A run holds a live lease (counts against max instances) while it is running and its
#: lease has not expired; parameters: :func:`live_params`.
LIVE_SQL = "status = %s AND lease_until >= %s"


def live_at(now: dt.datetime) -> Q:
    """:data:`LIVE_SQL` as an ORM condition."""
    return Q(status=ExecutionStatus.RUNNING, lease_until__gte=now)


def expired_at(now: dt.datetime) -> Q:
    """A run still marked running whose lease has expired by ``now``: its worker died."""
    return Q(status=ExecutionStatus.RUNNING, lease_until__lt=now)


def live_params(now_in_db: Any) -> list[Any]:
    """The parameters of :data:`LIVE_SQL` at ``now_in_db`` (a time adapted for the
    database, as ``connection.ops.adapt_datetimefield_value`` gives it)."""
    return [ExecutionStatus.RUNNING, now_in_db]


#: A run holds one of its job's slots (counts against max instances) while it holds a
#: live lease, or once it was sent to the workers after waiting (queued: the slot is
#: kept for it); parameters: :func:`slot_params`.
SLOT_SQL = f"(({LIVE_SQL}) OR status = %s)"


def slot_params(now_in_db: Any) -> list[Any]:
    """The parameters of :data:`SLOT_SQL` at ``now_in_db``."""
    return [*live_params(now_in_db), ExecutionStatus.QUEUED]


def slot_at(now: dt.datetime) -> Q:
    """:data:`SLOT_SQL` as an ORM condition."""
    return live_at(now) | Q(status=ExecutionStatus.QUEUED)


#: :func:`decide` says "start at once" (:attr:`Decision.starts_at_once`), as a condition
#: on the job's row (aliased ``j``); parameters: :func:`starts_params`.
STARTS_WHERE = f"""
    (CAST(%s AS DOUBLE PRECISION) IS NULL OR (
        %s <= j.misfire_grace_time
        AND NOT (j.coalesce AND j.coalesced_until IS NOT NULL AND %s <= j.coalesced_until)))
    AND (COALESCE(CAST(%s AS VARCHAR(20)), j.overlap) = '{OverlapPolicy.ALLOW_ALL}' OR (
        (SELECT COUNT(*) FROM {_EXECUTIONS} WHERE job_id = j.id AND {SLOT_SQL}) < j.max_instances
        AND NOT EXISTS (SELECT 1 FROM {_EXECUTIONS} WHERE job_id = j.id AND status = %s)))
"""


def starts_params(
    *, late: float | None, scheduled_at_in_db: Any, now_in_db: Any, overlap: str | None = None
) -> list[Any]:
    """The parameters of :data:`STARTS_WHERE` (times adapted for the database;
    ``overlap``: the run's override of its job's policy)."""
    return [
        late,
        late,
        scheduled_at_in_db,
        overlap,
        *slot_params(now_in_db),
        ExecutionStatus.WAITING,
    ]


def latest_due_fire_time(job: Job, scheduled_at: dt.datetime, now: dt.datetime) -> dt.datetime:
    """The newest fire time of ``job`` at or before ``now`` (at least ``scheduled_at``):
    what a coalescing run covers."""
    latest = scheduled_at
    try:
        trigger = job.trigger()
    except ValueError:
        return latest
    for _ in range(CATCH_UP_LIMIT):
        following = trigger.next_after(latest)
        if following is None or following > now:
            break
        latest = following
    return latest


@dataclasses.dataclass(frozen=True, slots=True)
class Missed:
    """The fire times of a job from ``first`` up to (not including) ``before`` that beat
    did not send: it was down or behind for longer than the grace. Recorded as one
    summary (:func:`missed_span` gives its last fire time and count)."""

    first: dt.datetime
    before: dt.datetime


def missed_span(trigger: Any, missed: Missed) -> tuple[dt.datetime, int]:
    """The last fire time of ``missed`` and how many there are.

    An interval's fire times are a fixed step apart: counted, not walked. Any other
    trigger (cron) is walked, at most :data:`CATCH_UP_LIMIT` fire times (logged past that:
    the summary then ends at the last one walked).
    """
    first, before = missed.first, missed.before
    if isinstance(trigger, Window):
        # The span lies within the window's start; its end may cut it short.
        if trigger.end is not None:
            before = min(before, trigger.end + dt.timedelta(microseconds=1))
        trigger = trigger.trigger
    if isinstance(trigger, IntervalTrigger):
        step = dt.timedelta(seconds=trigger.seconds)
        offset = (first - trigger.anchor) % step
        if not offset:  # ``first`` is one of its fire times, as stored ones are
            count = (before - first - dt.timedelta(microseconds=1)) // step + 1
            return first + (count - 1) * step, count
    last, count = first, 1
    for _ in range(CATCH_UP_LIMIT):
        following = trigger.next_after(last)
        if following is None or following >= before:
            return last, count
        last, count = following, count + 1
    logger.warning("More than %d fire times missed from %s; the summary stops there", count, first)
    return last, count


def plan_next(
    job: Job,
    trigger: Any,
    candidate: dt.datetime | None,
    now: dt.datetime,
) -> tuple[dt.datetime | None, Missed | None, list[dt.datetime]]:
    """Beat's side of the rules: which fire time of a due ``job`` to send now, starting
    from ``candidate`` (the first not sent).

    Returns ``(next, missed, coalesced)``: fire times older than :func:`oldest_allowed`
    are *missed*, as one span (beat jumps to the first fire time within the grace without
    walking the ones in between: what it costs does not grow with the outage); with
    coalesce on, the due fire times within the grace but the newest are *coalesced*.
    """
    oldest = oldest_allowed(job, now)
    missed = None
    fire = candidate
    if fire is not None and fire < oldest:
        fire = trigger.next_after(oldest - dt.timedelta(microseconds=1))
        missed = Missed(first=candidate, before=oldest if fire is None else fire)
    coalesced: list[dt.datetime] = []
    if job.coalesce and fire is not None and fire <= now:
        for _ in range(CATCH_UP_LIMIT):
            following = trigger.next_after(fire)
            if following is None or following > now:
                break
            coalesced.append(fire)
            fire = following
    return fire, missed, coalesced
