"""The Beat scheduler: django-celery-beat's DatabaseScheduler, extended to run our jobs.

What it changes from the stock scheduler:
- entries come from :class:`~scheduling.models.Job` rows, whose triggers know cron with
  seconds, per-job timezones and the DST policy of :mod:`scheduling.schedules`;
- each job's next fire time is stored on its row (``next_run_at``) and written the moment
  a run is dispatched, not lazily every few minutes (django-celery-beat #828), guarded by
  the job's ``version`` so beat never overwrites an edit made meanwhile;
- every message carries its fire time, so the execution records when it was due;
- the heap is kept in real seconds (stock beat truncates to whole seconds and can wake
  almost a second late), and the change marker is read at most once a second.

Change detection reuses django-celery-beat's ``PeriodicTasks`` marker, which our
services bump on every change.
"""

import datetime as dt
import logging
import os
import socket
import time
from typing import Any

from celery import schedules as celery_schedules
from celery.beat import ScheduleEntry
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler

from scheduling import services
from scheduling.models import BeatHeartbeat, ExecutionTrigger, Job

logger = logging.getLogger(__name__)

# How long to sleep for an entry that will never fire again (beat's loop caps it anyway).
NEVER = 3600.0
CHANGE_CHECK_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 5.0


class JobEntry(ScheduleEntry):
    """One job in beat's heap, with the fire time it is waiting for."""

    def __init__(self, job: Job, app: Any = None, next_run_at: dt.datetime | None = None):
        self.app = app
        self.job_id = job.pk
        self.name = job.name
        self.task = "scheduling.run_job"
        self.version = job.version
        self.misfire_grace_time = job.misfire_grace_time
        self.trigger = job.trigger()
        self.schedule = self.trigger
        self.args: tuple = ()
        self.kwargs: dict = {"job_id": job.pk}
        self.options: dict = {}
        self.last_run_at = job.last_run_at
        self.total_run_count = job.total_run_count
        self.next_run_at = next_run_at if next_run_at is not None else job.next_run_at
        self.stale = False

    def default_now(self) -> dt.datetime:
        return timezone.now()

    def following(self, now: dt.datetime) -> dt.datetime | None:
        """The fire time after the current one, skipping those already past the grace."""
        if self.next_run_at is None:
            return None
        nxt = self.trigger.next_after(self.next_run_at)
        oldest_allowed = now - dt.timedelta(seconds=self.misfire_grace_time)
        if nxt is not None and nxt < oldest_allowed:
            logger.warning(
                "Job %s: fire times from %s to %s are past their grace time; not sent",
                self.name,
                nxt.isoformat(),
                oldest_allowed.isoformat(),
            )
            nxt = self.trigger.next_after(oldest_allowed)
        return nxt

    def is_due(self) -> celery_schedules.schedstate:
        if self.next_run_at is None:
            return celery_schedules.schedstate(False, NEVER)
        now = timezone.now()
        remaining = (self.next_run_at - now).total_seconds()
        if remaining > 0:
            return celery_schedules.schedstate(False, remaining)
        following = self.following(now)
        delay = max((following - now).total_seconds(), 0.0) if following else NEVER
        return celery_schedules.schedstate(True, delay)

    def __next__(self) -> "JobEntry":
        entry = object.__new__(JobEntry)
        entry.__dict__.update(self.__dict__)
        entry.last_run_at = self.next_run_at
        entry.total_run_count = self.total_run_count + 1
        entry.next_run_at = self.following(timezone.now())
        entry.stale = False
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.beat_name = f"{socket.gethostname()}:{os.getpid()}"
        self.beat_started_at = timezone.now()
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self._heartbeat()
        return super().tick(*args, **kwargs)

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
        except DatabaseError:
            logger.exception("Could not record beat's heartbeat")

    def setup_schedule(self) -> None:
        if self.app.conf.beat_schedule:
            logger.warning(
                "JobScheduler ignores CELERY_BEAT_SCHEDULE; define jobs in the admin instead."
            )

    def all_as_schedule(self) -> dict[str, JobEntry]:
        now = timezone.now()
        schedule: dict[str, JobEntry] = {}
        for job in Job.objects.filter(enabled=True).order_by("pk"):
            try:
                entry = self._load_entry(job, now)
            except ValueError as exc:
                logger.error("Job %s has an invalid trigger and is not scheduled: %s", job, exc)
                continue
            schedule[entry.name] = entry
        logger.info("JobScheduler: %d enabled jobs loaded", len(schedule))
        return schedule

    def _load_entry(self, job: Job, now: dt.datetime) -> JobEntry:
        entry = JobEntry(job, app=self.app)
        grace = dt.timedelta(seconds=job.misfire_grace_time)
        # The services set next_run_at whenever a schedule changes; beat clears it after
        # the last fire of a one-off job. None therefore means "no more runs": recomputing
        # it here would run a finished one-off job again after a restart.
        if job.next_run_at is not None and job.next_run_at < now - grace:
            logger.warning(
                "Job %s: fire time %s is past its grace time (beat was down?); not sent",
                job,
                job.next_run_at.isoformat(),
            )
            entry.next_run_at = entry.trigger.next_after(now - grace)
        if entry.next_run_at != job.next_run_at:
            self._store_next_run(entry)
        return entry

    def _store_next_run(self, entry: JobEntry) -> bool:
        """Write the entry's next fire time unless the job changed since beat read it."""
        updated = Job.objects.filter(pk=entry.job_id, version=entry.version).update(
            next_run_at=entry.next_run_at
        )
        return updated == 1

    def schedule_changed(self) -> bool:
        now = time.monotonic()
        if now - self._last_change_check < CHANGE_CHECK_INTERVAL:
            return False
        self._last_change_check = now
        return super().schedule_changed()

    def reserve(self, entry: JobEntry) -> JobEntry:
        new_entry = next(entry)
        try:
            if not connection.in_atomic_block:
                close_old_connections()  # recover from a dropped database connection
            # A job edited or removed since beat read it is not sent under its old
            # definition; the change marker makes beat reload it within a second.
            entry.stale = not self._store_next_run(new_entry)
        except DatabaseError:
            logger.exception("Job %s: could not store its next fire time", entry.name)
            entry.stale = True
        if entry.name in self._schedule:
            self._schedule[entry.name] = new_entry
        return new_entry

    def apply_async(self, entry: JobEntry, producer: Any = None, advance: bool = True, **kwargs):
        if entry.stale:
            logger.info("Job %s changed before its run was sent; reloading", entry.name)
            return None
        try:
            task_id = services.job_dispatch(
                job_id=entry.job_id,
                job_name=entry.name,
                trigger=ExecutionTrigger.SCHEDULE,
                scheduled_at=entry.next_run_at,
                producer=producer,
            )
        except Exception:
            logger.exception("Job %s: could not send its run", entry.name)
            return None
        logger.debug("Job %s sent for %s as %s", entry.name, entry.next_run_at, task_id)
        return task_id

    def _when(self, entry: JobEntry, next_time_to_run: float, mktime: Any = None) -> float:
        return time.time() + (self.adjust(next_time_to_run) or 0)

    def sync(self) -> None:
        """Next fire times are written as runs are sent; nothing is left to sync."""
