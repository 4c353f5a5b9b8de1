"""The Beat scheduler: django-celery-beat's DatabaseScheduler, extended to run our jobs.

What it changes from the stock scheduler:
- entries come from :class:`~scheduling.models.Job` rows, whose triggers know cron with
  seconds, per-job timezones and the DST policy of :mod:`scheduling.schedules`;
- each job's next fire time is stored on its row (``next_run_at``) and written *before* the
  run is sent, not lazily every few minutes (django-celery-beat #828), guarded by the job's
  ``version`` so beat never overwrites an edit made meanwhile; a restarted beat therefore
  never sends a fire time twice, nor a finished one-off job again;
- every message carries its fire time and jitter, so the execution records when it was due;
- fire times beat could not send in time (it was down or stalled) follow the job's misfire
  policy: those past ``misfire_grace_time`` are recorded as missed; of those still within it,
  all are sent (coalesce off) or only the newest (coalesce on, the others recorded as
  missed);
- the heap is kept in real seconds (stock beat truncates to whole seconds and can wake
  almost a second late), and the change marker is read at most once a second;
- a heartbeat row tells health checks that beat is alive.

Change detection reuses django-celery-beat's ``PeriodicTasks`` marker, which our
services bump on every change.
"""

import datetime as dt
import logging
import os
import socket
import time
from collections import deque
from typing import Any

from celery import schedules as celery_schedules
from celery.beat import ScheduleEntry
from django.db import DatabaseError, InterfaceError, close_old_connections, connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler

from scheduling import conf, executions, services
from scheduling.models import BeatHeartbeat, ExecutionTrigger, Job

logger = logging.getLogger(__name__)

# How long to sleep for an entry that will never fire again (beat's loop caps it anyway).
NEVER = 3600.0
CHANGE_CHECK_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 5.0
# A run sent this long after its fire time + jitter + grace without an execution row was
# lost on the way (e.g. a broker restarted without persistence): it is recorded as missed.
LEDGER_MARGIN = 10.0
LEDGER_CHECK_INTERVAL = 5.0
# Most fire times a coalescing or catch-up pass walks through.
CATCH_UP_LIMIT = 100_000


def plan_next(
    job: Job, trigger: Any, candidate: dt.datetime | None, now: dt.datetime
) -> tuple[dt.datetime | None, list[dt.datetime], list[dt.datetime]]:
    """Choose the next fire time to send, starting from ``candidate`` (the first not sent).

    Returns ``(next, missed, coalesced)``: fire times older than the grace are *missed*;
    with coalesce on, the due fire times within the grace but the newest are *coalesced*.
    """
    # A fire time may be sent up to its jitter late on purpose: that is not a misfire.
    oldest_allowed = now - dt.timedelta(seconds=job.misfire_grace_time + job.jitter)
    limit = conf.get("MISSED_RECORD_LIMIT")
    missed: list[dt.datetime] = []
    skipped_unrecorded = 0
    fire = candidate
    while fire is not None and fire < oldest_allowed:
        if len(missed) < limit:
            missed.append(fire)
            fire = trigger.next_after(fire)
        else:
            # Too many to list one by one: jump to the first fire time within the grace.
            skipped_unrecorded += 1
            fire = trigger.next_after(oldest_allowed - dt.timedelta(microseconds=1))
    if skipped_unrecorded:
        logger.warning(
            "Job %s: more than %d fire times missed; only %d recorded", job, limit, limit
        )
    coalesced: list[dt.datetime] = []
    if job.coalesce and fire is not None and fire <= now:
        for _ in range(CATCH_UP_LIMIT):
            following = trigger.next_after(fire)
            if following is None or following > now:
                break
            coalesced.append(fire)
            fire = following
    return fire, missed, coalesced


class JobEntry(ScheduleEntry):
    """One job in beat's heap: the fire time it waits for, and the jitter drawn for it."""

    def __init__(self, job: Job, app: Any = None):
        self.app = app
        self.job = job
        self.job_id = job.pk
        self.name = job.name
        self.task = "scheduling.run_job"
        self.version = job.version
        self.trigger = job.trigger()
        self.schedule = self.trigger
        self.args: tuple = ()
        self.kwargs: dict = {"job_id": job.pk}
        self.options: dict = {}
        self.last_run_at = job.last_run_at
        self.total_run_count = job.total_run_count
        self.next_run_at = job.next_run_at
        self.jitter = executions.jitter_for(job)
        self.missed: list[dt.datetime] = []
        self.coalesced: list[dt.datetime] = []
        self.stale = False

    @property
    def due_at(self) -> dt.datetime | None:
        if self.next_run_at is None:
            return None
        return self.next_run_at + dt.timedelta(seconds=self.jitter)

    def default_now(self) -> dt.datetime:
        return timezone.now()

    def plan(self, candidate: dt.datetime | None, now: dt.datetime) -> None:
        self.next_run_at, self.missed, self.coalesced = plan_next(
            self.job, self.trigger, candidate, now
        )

    def is_due(self) -> celery_schedules.schedstate:
        due_at = self.due_at
        if due_at is None:
            return celery_schedules.schedstate(False, NEVER)
        now = timezone.now()
        remaining = (due_at - now).total_seconds()
        if remaining > 0:
            return celery_schedules.schedstate(False, remaining)
        following = self.trigger.next_after(self.next_run_at)
        delay = max((following - now).total_seconds(), 0.0) if following else NEVER
        return celery_schedules.schedstate(True, delay)

    def __next__(self) -> "JobEntry":
        entry = object.__new__(JobEntry)
        entry.__dict__.update(self.__dict__)
        entry.last_run_at = self.next_run_at
        entry.total_run_count = self.total_run_count + 1
        entry.jitter = executions.jitter_for(self.job)
        entry.stale = False
        entry.plan(self.trigger.next_after(self.next_run_at), timezone.now())
        return entry

    next = __next__

    def editable_fields_equal(self, other: object) -> bool:
        return (
            isinstance(other, JobEntry)
            and self.job_id == other.job_id
            and self.version == other.version
        )

    def __repr__(self) -> str:
        return f"<JobEntry {self.name} {self.trigger} next={self.next_run_at}>"


class JobScheduler(DatabaseScheduler):
    """Celery Beat scheduler reading :class:`~scheduling.models.Job` rows."""

    Entry = JobEntry
    Model = Job
    _last_change_check = 0.0
    _last_heartbeat = 0.0
    # Set when a database error may have left the stored schedule behind beat's own: the
    # next reload re-reads every job, recording or sending the fire times it missed.
    _force_reload = False

    _last_ledger_check = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.beat_name = f"{socket.gethostname()}:{os.getpid()}"
        self.beat_started_at = timezone.now()
        # (deadline, job, fire time) of runs sent and not yet seen starting.
        self._in_flight: deque[tuple[dt.datetime, Job, dt.datetime]] = deque()
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        # django-celery-beat ignores the first change ever made when its change marker row
        # did not exist yet at start-up (``ts > (last or ts)``): make sure it exists.
        try:
            if PeriodicTasks.last_change() is None:
                PeriodicTasks.update_changed()
        except (DatabaseError, InterfaceError):
            logger.exception("JobScheduler: could not create the change marker")
        if self.app.conf.beat_schedule:
            logger.warning(
                "JobScheduler ignores CELERY_BEAT_SCHEDULE; define jobs in the admin instead."
            )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self._heartbeat()
        self._check_ledger()
        return super().tick(*args, **kwargs)

    def _check_ledger(self) -> None:
        """Record as missed the runs that were sent but never reached a worker."""
        now = time.monotonic()
        if now - self._last_ledger_check < LEDGER_CHECK_INTERVAL or not self._in_flight:
            return
        self._last_ledger_check = now
        from scheduling.models import JobExecution

        current = timezone.now()
        while self._in_flight and self._in_flight[0][0] < current:
            _deadline, job, fire_time = self._in_flight[0]
            try:
                arrived = JobExecution.objects.filter(
                    job_id=job.pk, trigger=ExecutionTrigger.SCHEDULE, scheduled_at=fire_time
                ).exists()
                if not arrived and Job.objects.filter(pk=job.pk).exists():
                    executions.execution_record_missed(
                        job=job,
                        fire_times=[fire_time],
                        reason="Sent to the broker but never started: the message was lost "
                        "(e.g. the broker restarted without persistence).",
                    )
            except (DatabaseError, InterfaceError):
                logger.exception("JobScheduler: could not check runs in flight; later")
                return
            self._in_flight.popleft()

    def _heartbeat(self) -> None:
        """Record that this beat is alive, at most every few seconds."""
        now = time.monotonic()
        if now - self._last_heartbeat < HEARTBEAT_INTERVAL:
            return
        self._last_heartbeat = now
        try:
            BeatHeartbeat.objects.update_or_create(
                name=self.beat_name,
                defaults={"last_tick_at": timezone.now(), "started_at": self.beat_started_at},
            )
        except (DatabaseError, InterfaceError):
            logger.exception("Could not record beat's heartbeat")

    def all_as_schedule(self) -> dict[str, JobEntry]:
        try:
            jobs = list(Job.objects.filter(enabled=True).order_by("pk"))
        except (DatabaseError, InterfaceError):
            logger.exception("JobScheduler: could not read jobs; keeping the current schedule")
            self._force_reload = True
            return self._schedule or {}
        self._force_reload = False
        now = timezone.now()
        schedule: dict[str, JobEntry] = {}
        for job in jobs:
            try:
                entry = self._load_entry(job, now)
            except (DatabaseError, InterfaceError):
                logger.exception("JobScheduler: database error loading job %s", job)
                old = (self._schedule or {}).get(job.name)
                if old is not None:
                    schedule[job.name] = old
                continue
            except Exception as exc:
                # One bad row must never stop beat (it would crash again on restart).
                logger.error("Job %s cannot be scheduled and is skipped: %r", job, exc)
                continue
            schedule[entry.name] = entry
        logger.info("JobScheduler: %d enabled jobs loaded", len(schedule))
        return schedule

    def _load_entry(self, job: Job, now: dt.datetime) -> JobEntry:
        entry = JobEntry(job, app=self.app)
        # The services set next_run_at whenever a schedule changes, and beat clears it
        # after the last fire of a one-off job: None means "no more runs".
        if job.next_run_at is not None and job.next_run_at < now:
            entry.plan(job.next_run_at, now)
            if self._store(entry):
                self._record_not_sent(entry)
        return entry

    def _store(self, entry: JobEntry) -> bool:
        """Write the entry's next fire time unless the job changed since beat read it."""
        updated = Job.objects.filter(pk=entry.job_id, version=entry.version).update(
            next_run_at=entry.next_run_at
        )
        return updated == 1

    def _record_not_sent(self, entry: JobEntry) -> None:
        if entry.missed:
            executions.execution_record_missed(
                job=entry.job,
                fire_times=entry.missed,
                reason="Not sent: beat was down or behind for longer than the misfire grace "
                f"time ({entry.job.misfire_grace_time}s).",
            )
        if entry.coalesced:
            executions.execution_record_missed(
                job=entry.job,
                fire_times=entry.coalesced,
                reason=f"Coalesced into the run at {entry.next_run_at.isoformat()}.",
            )
        entry.missed, entry.coalesced = [], []

    def schedule_changed(self) -> bool:
        now = time.monotonic()
        if now - self._last_change_check < CHANGE_CHECK_INTERVAL:
            return False
        self._last_change_check = now
        changed = super().schedule_changed()
        return changed or self._force_reload

    def reserve(self, entry: JobEntry) -> JobEntry:
        new_entry = next(entry)
        try:
            if not connection.in_atomic_block:
                close_old_connections()  # recover from a dropped database connection
            # A job edited or removed since beat read it is not sent under its old
            # definition; the change marker makes beat reload it within a second.
            entry.stale = not self._store(new_entry)
            if not entry.stale:
                self._record_not_sent(new_entry)
        except (DatabaseError, InterfaceError):
            logger.exception("Job %s: could not store its next fire time", entry.name)
            entry.stale = True
            self._force_reload = True
        if entry.name in self._schedule:
            self._schedule[entry.name] = new_entry
        return new_entry

    def apply_async(self, entry: JobEntry, producer: Any = None, advance: bool = True, **kwargs):
        if entry.stale:
            logger.info("Job %s changed before its run was sent; reloading", entry.name)
            return None
        try:
            task_id = services.job_dispatch(
                job=entry.job,
                trigger=ExecutionTrigger.SCHEDULE,
                scheduled_at=entry.next_run_at,
                jitter=entry.jitter,
                producer=producer,
            )
        except Exception as exc:
            logger.exception("Job %s: could not send its run", entry.name)
            try:
                executions.execution_record_missed(
                    job=entry.job,
                    fire_times=[entry.next_run_at],
                    reason=f"Not sent: the broker refused the message ({exc!r}).",
                )
            except (DatabaseError, InterfaceError):
                logger.exception("Job %s: could not record the unsent run", entry.name)
            return None
        deadline = entry.next_run_at + dt.timedelta(
            seconds=entry.jitter + entry.job.misfire_grace_time + LEDGER_MARGIN
        )
        self._in_flight.append((deadline, entry.job, entry.next_run_at))
        logger.debug("Job %s sent for %s as %s", entry.name, entry.next_run_at, task_id)
        return task_id

    def _when(self, entry: JobEntry, next_time_to_run: float, mktime: Any = None) -> float:
        return time.time() + (self.adjust(next_time_to_run) or 0)

    def sync(self) -> None:
        """Next fire times are written as runs are sent; nothing is left to sync."""
