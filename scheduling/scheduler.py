"""The Beat scheduler: django-celery-beat's DatabaseScheduler, rebuilt to scale and to fail over.

The stock scheduler keeps every task in memory, re-reads all of them on any change, looks
at all of them on every loop, sends one due task per loop and allows only one beat
(see ``REFERENCE.md``). This one keeps nothing but a lease in memory: **the database is the
schedule**. Each job row stores its next fire time (``next_run_at``) and when to send it
(``dispatch_at``: the fire time plus the jitter drawn for it), with a partial index on
``dispatch_at`` of enabled jobs. On every pass, beat

1. asks for the earliest ``dispatch_at`` (one index probe: the idle loop costs the same at
   100 jobs or 100,000) and sleeps until then, or at most ``BEAT_POLL_INTERVAL``, so that
   an edit that makes a job due sooner is seen within that time;
2. when something is due: renews its lease (the fence: a beat that lost the lease sends
   nothing), then in **one transaction** locks the due rows (``FOR NO KEY UPDATE SKIP
   LOCKED``; a row an operator is saving right now waits for the next pass; a worker
   recording a run of one of them does not), ``BEAT_BATCH_SIZE`` at a time, and sends
   each lot before reading the next, up to ``PASS_ROWS`` rows; once all are sent it
   stores every job's following fire time (one statement). A pass publishes for a fifth
   of the lease at most, and a message only while the lease surely outlasts it
   (:meth:`JobScheduler.dispatch_due`).

Edits need no change detection at all: the services write the new fire time on the row,
and beat reads only rows that are due. Deletes and pauses simply drop rows from the index.

**High availability.** Any number of beats may run. The one holding the lease
(:class:`~scheduling.models.SchedulerLease`, a row in the same database: PostgreSQL, or
SQLite on the embedded default) dispatches; the others try to take it over once a second
(never waiting for the row: NOWAIT) and succeed once it has not been renewed for
``BEAT_LEASE_SECONDS``. No fault of the leader can block that: the lease row is locked
only by the one statement that renews it; the leader publishes only while its lease, by its
own clock counted from before that renewal, outlasts the longest publish (every socket
operation of beat's broker connection is bounded, one retry); its database sessions end a
statement or an idle transaction after half the lease, and notice a vanished peer through
keep-alives (:func:`beat_database_options`); a leader the broker fails hands the lease
over. Sending and storing the next fire time happen in one transaction, messages first:
a beat killed, stopped or cut off in between leaves the fire time unstored (its
transaction rolled back by the server), so the next leader sends it again, and the worker
drops the second message by its (job, fire time) key. So a fire time is never run twice and
never lost, whichever beat fails how.

**Validity windows.** A job's fire times come from its trigger within its window
(``Job.trigger()``: none before ``start_at``, none after ``end_at``), and every fire time
the broker takes is counted on the row (``scheduled_run_count``) in the transaction that
sends it, so a fire time sent again by the next leader after a rolled-back pass is counted
once. When no fire time is left (the end passed, or ``max_runs`` were sent) the pass that
found it disables the job through :func:`scheduling.services.job_finish`, with the reason
in its audit trail.

Messages go out in batches (:mod:`scheduling.publish`: built once, one round trip per
batch on Redis and on RabbitMQ), the lease checked before each; SIGTERM stops a pass after its
batch (:meth:`JobScheduler.install_stop`).

Fire times that could not be sent in time (beat down, no leader) follow the job's misfire
policy (:func:`scheduling.runs.rules.plan_next`): beat jumps to the first one within the
grace and sends it; the span it skipped is kept on the job's row and recorded as one
summary once nothing is due (:meth:`JobScheduler._record_pending_missed`), so catching up
never delays a current fire time. Runs sent but never started (lost in a broker restart)
are recorded as missed by the ledger; each beat keeps a heartbeat row.
"""

import contextlib
import dataclasses
import datetime as dt
import functools
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

from celery import signals as celery_signals
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import DurationField, ExpressionWrapper, F, Q, prefetch_related_objects
from django.db.models.functions import Now
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler
from kombu.exceptions import OperationalError as KombuOperationalError

from scheduling import conf, publish, runs, selectors, services, sql
from scheduling.audit import audit_context
from scheduling.models import (
    AuditSource,
    BeatHeartbeat,
    ExecutionTrigger,
    Job,
    JobExecution,
    SchedulerLease,
    SentFireTime,
)
from scheduling.runs.lease import renewal_interval
from scheduling.runs.rules import Missed, oldest_allowed, plan_next

logger = logging.getLogger(__name__)

LEASE_NAME = "beat"
HEARTBEAT_INTERVAL = 5.0
# A run sent this long after its fire time + jitter + grace without an execution row was
# lost on the way (e.g. a broker restarted without persistence): it is recorded as missed.
LEDGER_MARGIN = 10.0
LEDGER_CHECK_INTERVAL = 5.0
DB_ERRORS = (DatabaseError, InterfaceError)
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for NOWAIT (and lock_timeout)
# Longest a pass may go on after SIGTERM before it is interrupted where it is (seconds):
# beat exits within 5 s at any moment.
STOP_GRACE = 3.0
# Runs sent in one pipelined batch (Redis: one round trip). The lease is checked before
# each batch; a batch of 200 takes a few tens of milliseconds to build and send.
PUBLISH_BATCH = 200
# A pass locks its due rows BEAT_BATCH_SIZE at a time, sending each lot before reading the
# next, and stores the following fire times of all of them once they are sent: a storm of
# up to PASS_ROWS runs due at once goes out before any of its writes. Bounded so that what
# follows the last message (planning and writing every job's next fire time, a few hundred
# milliseconds at 10,000) stays well inside the transaction's idle and statement time-outs,
# whatever BEAT_BATCH_SIZE is.
PASS_ROWS = 10_000
# The fire times an outage left unsent are recorded after the catch-up, in passes with
# nothing due: for at most this long a pass (seconds), and never past the next due fire
# time, in transactions of RECORD_BATCH jobs (each: a summary row, its statistics, and its
# event once committed).
RECORD_BUDGET = 0.2
RECORD_BATCH = 100
NOT_SENT_REASON = (
    "Not sent: beat was down or behind for longer than the misfire grace time ({grace}s)."
)


def _database_now() -> Any:
    """The database server's clock, so that beats on different machines agree on when a
    lease expires: an expression evaluated in the statement itself on PostgreSQL (no
    extra round trip); on SQLite every beat runs on the database's own machine."""
    if connection.vendor == "postgresql":
        return Now()  # STATEMENT_TIMESTAMP(): the time of this statement, not of its transaction
    return timezone.now()


# The pass that finds nothing due is beat's most frequent; its statements are plain SQL
# (prepared on PostgreSQL, see sql.cursor): after a second asleep, building the same query
# through the ORM took twice as long as the database took to answer it.


@functools.cache
def _peek_columns() -> str:
    """The earliest ``dispatch_at`` of an enabled job and the earliest ``resume_at`` of a
    paused one: one probe each of ``job_dispatch_idx`` and ``job_resume_idx``."""
    q = connection.ops.quote_name
    table = q(Job._meta.db_table)
    return (
        f"(SELECT {q('dispatch_at')} FROM {table}"
        f" WHERE {q('enabled')} AND {q('dispatch_at')} IS NOT NULL"
        f" ORDER BY {q('dispatch_at')} LIMIT 1),"
        f" (SELECT {q('resume_at')} FROM {table}"
        f" WHERE NOT {q('enabled')} AND {q('resume_at')} IS NOT NULL"
        f" ORDER BY {q('resume_at')} LIMIT 1)"
    )


@functools.cache
def _renew_and_peek_sql() -> str:
    """PostgreSQL: renew this beat's lease and peek (:func:`_peek_columns`) in one statement."""
    q = connection.ops.quote_name
    return (
        f"WITH renewed AS (UPDATE {q(SchedulerLease._meta.db_table)}"
        f" SET {q('expires_at')} = STATEMENT_TIMESTAMP() + %s"
        f" WHERE {q('name')} = %s AND {q('holder')} = %s AND {q('token')} = %s RETURNING 1)"
        f" SELECT (SELECT COUNT(*) FROM renewed), {_peek_columns()}"
    )


class Lease:
    """This beat's claim on :class:`~scheduling.models.SchedulerLease` (leader election)."""

    def __init__(self, holder: str, seconds: float) -> None:
        self.holder = holder
        self.seconds = seconds
        self.token: int | None = None
        self.renewed = 0.0  # monotonic time the last successful renewal was sent
        self.expires_in: float | None = None  # the holder's, as seen by the last try

    @property
    def held(self) -> bool:
        return self.token is not None

    def acquire(self) -> bool:
        """Take the lease if it is free or expired; return whether this beat holds it.

        Never waits for the row: a renewal or another beat's take-over holds it for one
        statement, and this beat simply tries again on its next pass.
        """
        SchedulerLease.objects.get_or_create(name=LEASE_NAME)
        self.expires_in = None
        started = time.monotonic()
        try:
            with transaction.atomic():
                list(
                    SchedulerLease.objects.select_for_update(nowait=True)
                    .filter(name=LEASE_NAME)
                    .values_list("pk")
                )
                now = _database_now()
                free = Q(holder="") | Q(expires_at__isnull=True) | Q(expires_at__lt=now)
                # One conditional UPDATE: of two beats trying at once, exactly one matches.
                taken = SchedulerLease.objects.filter(free, name=LEASE_NAME).update(
                    holder=self.holder,
                    token=F("token") + 1,
                    acquired_at=now,
                    expires_at=now + dt.timedelta(seconds=self.seconds),
                )
                if not taken:
                    self.expires_in = self._expires_in()
                    return False
                token = SchedulerLease.objects.values_list("token", flat=True).get(name=LEASE_NAME)
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                return False
            raise
        self.token = token
        self.renewed = started
        logger.warning("Beat %s is now the leader (token %d)", self.holder, self.token)
        return True

    @staticmethod
    def _expires_in() -> float | None:
        """Seconds until the holder's lease runs out, by the database's clock."""
        lease = SchedulerLease.objects.filter(name=LEASE_NAME)
        if connection.vendor == "postgresql":
            left = lease.annotate(
                left=ExpressionWrapper(F("expires_at") - Now(), output_field=DurationField())
            ).values_list("left", flat=True)[0]
        else:
            expires_at = lease.values_list("expires_at", flat=True)[0]
            left = None if expires_at is None else expires_at - timezone.now()
        return None if left is None else left.total_seconds()

    def renew(self) -> bool:
        """Extend the lease if this beat still holds it (one statement, committed at once:
        the row is locked only while it runs)."""
        if self.token is None:
            return False
        started = time.monotonic()
        kept = SchedulerLease.objects.filter(
            name=LEASE_NAME, holder=self.holder, token=self.token
        ).update(expires_at=_database_now() + dt.timedelta(seconds=self.seconds))
        return self.renewed_if(bool(kept), started)

    @property
    def due_for_renewal(self) -> bool:
        """Whether the lease is held and its :func:`renewal_interval` has passed."""
        return self.held and time.monotonic() - self.renewed >= renewal_interval(self.seconds)

    def renewed_if(self, kept: bool, started: float) -> bool:
        """Note the outcome of a renewal (made here or in a statement of the caller's) that
        was sent at ``started`` (monotonic)."""
        if not kept:
            logger.warning("Beat %s lost the lease to another beat; standing by", self.holder)
            self.token = None
            return False
        self.renewed = started
        return True

    def remaining(self) -> float:
        """Seconds this beat surely still holds the lease, by its own clock: the term counted
        from when the last renewal was sent (the database counts it from later, so a
        standby cannot take over before this reaches 0)."""
        if self.token is None:
            return 0.0
        return self.renewed + self.seconds - time.monotonic()

    def release(self) -> None:
        """Let a standby take over at once (a clean shutdown)."""
        if self.token is None:
            return
        SchedulerLease.objects.filter(name=LEASE_NAME, holder=self.holder, token=self.token).update(
            expires_at=None, holder=""
        )
        self.token = None


def _next_after(trigger: Any, fire_time: dt.datetime) -> dt.datetime | None:
    """``trigger.next_after(fire_time)``, computed once for jobs that share a trigger
    (triggers are frozen dataclasses, equal when their fields are): in a storm many jobs
    have the same expression and fire time, and croniter takes a few hundred
    microseconds a job, the largest cost of a pass after its messages."""
    try:
        return _shared_next_after(trigger, fire_time)
    except TypeError:  # a trigger holding something unhashable
        return trigger.next_after(fire_time)


@functools.lru_cache(maxsize=1024)
def _shared_next_after(trigger: Any, fire_time: dt.datetime) -> dt.datetime | None:
    return trigger.next_after(fire_time)


class PassOver(Exception):
    """A pass stops here: its time is up, or its lease too short for one more message."""


class BrokerUnreachable(Exception):
    """A publish failed for the broker's sake (connection, time-out) after its one retry."""


def beat_database_options(options: dict[str, Any], lease_seconds: float) -> dict[str, Any]:
    """``OPTIONS`` of a PostgreSQL connection of beat: ``options`` with every wait bounded
    below the lease, so that no fault of a beat holds a lock past its term.

    The server ends a statement after half the lease, a transaction left idle (the beat
    stopped, or cut off while it held rows) after half the lease, and a wait for a lock
    after a fifth; TCP keep-alives on both sides and ``tcp_user_timeout`` notice a vanished
    peer within seconds instead of the system's two hours. Workers keep the project's own
    options: their runs may take any time.
    https://www.postgresql.org/docs/15/runtime-config-client.html
    https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-PARAMKEYWORDS
    """
    half, fifth = int(lease_seconds * 500), int(lease_seconds * 200)
    server = {
        "statement_timeout": half,
        "idle_in_transaction_session_timeout": half,
        "lock_timeout": fifth,
        "tcp_keepalives_idle": 1,
        "tcp_keepalives_interval": 1,
        "tcp_keepalives_count": 2,
        "tcp_user_timeout": half,
    }
    session = " ".join(f"-c {name}={value}" for name, value in server.items())
    return {
        **options,
        "options": f"{options.get('options', '')} {session}".strip(),
        "keepalives": 1,
        "keepalives_idle": 1,
        "keepalives_interval": 1,
        "keepalives_count": 2,
        "tcp_user_timeout": half,
        "connect_timeout": max(2, round(lease_seconds / 2)),  # libpq's least is 2 s
    }


def beat_broker_options(driver: str, timeout: float) -> dict[str, Any]:
    """Transport options of beat's broker connection: every socket operation, and the
    broker's answer to each message, within ``timeout``; one reconnection per publish."""
    options: dict[str, Any] = {
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0,
        "interval_max": 0,
    }
    if driver == "redis":
        options |= {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    elif driver == "amqp":
        # Without publisher confirms a message written into a dead link counts as sent.
        options |= {"confirm_publish": True, "read_timeout": timeout, "write_timeout": timeout}
    return options


@dataclasses.dataclass(slots=True)
class Plan:
    """What one pass does with one due job."""

    send: dt.datetime | None = None  # the fire time sent now
    sent: bool = False  # whether the broker took it
    jitter: float = 0.0
    following: dt.datetime | None = None  # the next fire time after this pass
    missed: Missed | None = None
    coalesced: list[dt.datetime] = dataclasses.field(default_factory=list)
    trigger: Any = None
    error: Exception | None = None


class JobScheduler(DatabaseScheduler):
    """Celery Beat scheduler reading due :class:`~scheduling.models.Job` rows."""

    _last_heartbeat = 0.0
    _last_ledger_check = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.beat_name = f"{socket.gethostname()}:{os.getpid()}"
        self.beat_started_at = timezone.now()
        self.lease = Lease(self.beat_name, conf.get("BEAT_LEASE_SECONDS"))
        self.poll_interval = conf.get("BEAT_POLL_INTERVAL")
        self.batch_size = conf.get("BEAT_BATCH_SIZE")
        self.sent_events = conf.get("BEAT_SENT_EVENTS")
        # Bounds, all within the lease (README, "Several beats"): each socket operation
        # of a publish, a pass's publishing, and the longest one publish can take (the
        # message, a reconnection and the message again).
        self.publish_timeout = self.lease.seconds / 10
        self.pass_seconds = self.lease.seconds / 5
        self.publish_bound = 4 * self.publish_timeout
        self.retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0}
        self._standing_back_until = 0.0
        # Spans of missed fire times this pass records at once (a job with one pending
        # already, see _advance), and whether jobs may have one pending (an earlier
        # leader may have left some).
        self._missed: list[tuple[Job, Any, Missed]] = []
        self._missed_pass: dt.datetime | None = None
        self._missed_pending = True
        # Transactions open around this beat from the start (none, but in tests).
        self._atomic_depth = len(connection.atomic_blocks)
        # SIGTERM during a pass: the pass stops after its current batch (install_stop).
        self._in_pass = False
        self._stop_requested = False
        self._exit: Any = None  # Celery's handler, bound to the signal received
        super().__init__(*args, **kwargs)

    # -- what celery.beat.Service calls -------------------------------------------------

    def setup_schedule(self) -> None:
        """Called once in a beat process (not for a ``lazy`` scheduler): bound its own
        database connections before it opens them (:func:`beat_database_options`)."""
        if connection.vendor == "postgresql":
            connection.close()
            connection.settings_dict["OPTIONS"] = beat_database_options(
                connection.settings_dict.get("OPTIONS", {}), self.lease.seconds
            )
            connection.settings_dict["OPTIONS"].setdefault(
                "application_name", f"beat {self.beat_name}"
            )
        if self.app.conf.beat_schedule:
            logger.warning(
                "JobScheduler ignores CELERY_BEAT_SCHEDULE; define jobs in the admin instead."
            )

    @functools.cached_property
    def connection(self) -> Any:
        """Beat's broker connection, every wait bounded (:func:`beat_broker_options`)."""
        driver = self.app.connection_for_write().transport.driver_type
        return self.app.connection_for_write(
            connect_timeout=self.publish_timeout,
            transport_options=beat_broker_options(driver, self.publish_timeout),
        )

    @functools.cached_property
    def producer(self) -> Any:
        """Connects on first use, within the publish's bounds (Celery's own first waits
        for the broker with up to 100 retries)."""
        return self.Producer(self.connection, auto_declare=False)

    @functools.cached_property
    def messages(self) -> publish.Messages:
        """Builds the messages of ``scheduling.run_job`` (:mod:`scheduling.publish`)."""
        from scheduling.tasks import run_job

        return publish.Messages(self.app, self.app.tasks[run_job.name])

    @functools.cached_property
    def broker_errors(self) -> tuple[type[BaseException], ...]:
        """What a publish raises when the broker is out of reach."""
        return (KombuOperationalError, OSError, *self.connection.connection_errors)

    @property
    def schedule(self) -> dict:
        """Nothing is held in memory: the job table is the schedule."""
        return {}

    @property
    def info(self) -> str:
        return (
            f"    . jobs -> database (lease {self.lease.seconds:g}s, poll {self.poll_interval:g}s)"
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass; returns how long to sleep before the next one."""
        if self._stop_requested:  # the pass the signal came in ended in an error
            self._stop_now()
        try:
            self._heartbeat()
            if not self.lease.held and (
                time.monotonic() < self._standing_back_until or not self.lease.acquire()
            ):
                return self._standby_wait()
            held, due_at, resume_at = self._renew_and_peek()
            if not held:
                return self.poll_interval
            now = timezone.now()
            if resume_at is not None and resume_at <= now:
                self._resume_due()
                return 0.0  # look again at once: the resumed jobs may be due
            if due_at is None or due_at > now:
                # Bookkeeping stops between its transactions, as a pass between batches:
                # a signal raised inside one could be swallowed by a receiver it runs.
                with self._stoppable():
                    self._check_ledger()
                    now = self._record_pending_missed(now, due_at)
                wait = min(
                    (moment - now).total_seconds()
                    for moment in (
                        due_at,
                        resume_at,
                        now + dt.timedelta(seconds=self.poll_interval),
                    )
                    if moment is not None
                )
                if self._missed_pending:
                    wait = 0.0  # more outages to record: look again at once
                return max(wait, 0.0)
            with self._stoppable():
                self.dispatch_due(now)
            return 0.0  # look again at once: more may be due
        except DB_ERRORS:
            logger.exception("JobScheduler: database error; trying again in a second")
            connection.close()  # reconnect on the next pass (e.g. after a server restart)
            return 1.0

    def install_stop(self) -> None:
        """Make SIGTERM and SIGINT stop a pass after its current batch of messages: the
        pass commits what it sent, and beat exits with Celery's own handler (installed
        before ``beat_init``, which calls this). Outside a pass that handler runs at once.
        A pass that has not ended :data:`STOP_GRACE` seconds later (a wait on the database
        or the broker) is interrupted where it is, as by Celery's handler alone: its
        transaction is rolled back and the next leader sends what it had sent again (the
        worker drops the second message of a fire time)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        if not all(callable(handler) for handler in previous.values()):
            return

        def on_stop(signum: int, frame: Any) -> None:
            self._exit = functools.partial(previous[signum], signum, frame)
            if not self._in_pass or self._stop_requested:  # a second signal: at once
                self._stop_now()
            self._stop_requested = True
            signal.signal(signal.SIGALRM, lambda *_: self._stop_now())
            signal.setitimer(signal.ITIMER_REAL, STOP_GRACE)

        for sig in previous:
            signal.signal(sig, on_stop)

    @contextlib.contextmanager
    def _stoppable(self) -> Iterator[None]:
        """A section a SIGTERM or SIGINT stops at its next check (a batch sent, a
        transaction committed: ``_stop_requested``) rather than where it lands; beat
        exits once the section is over."""
        self._in_pass = True
        try:
            yield
        finally:
            self._in_pass = False
        if self._stop_requested:
            self._stop_now()

    def _stop_now(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._exit()

    def _standby_wait(self) -> float:
        """A standby tries again in a second, or just after the lease runs out if sooner."""
        left = self.lease.expires_in
        if left is None or time.monotonic() < self._standing_back_until:
            return self.poll_interval
        return min(self.poll_interval, max(left, 0.0) + 0.05)

    def sync(self) -> None:
        """Next fire times are written as runs are sent; nothing is left to sync."""

    def close(self) -> None:
        """Release the lease. Celery's SIGTERM handler calls this from inside whatever beat
        was doing: in the middle of a statement (psycopg's connection lock is held by the
        interrupted call, and taking it again would wait forever) or of a transaction
        (which the handler's ``SystemExit`` rolls back, release included), it waits for
        the second call, made once that has unwound (``celery.beat.Service.start``)."""
        lock = getattr(connection.connection, "lock", None)
        interrupted = len(connection.atomic_blocks) > self._atomic_depth
        if interrupted or (lock is not None and lock.locked()):
            return
        try:
            self.lease.release()
        except DB_ERRORS:
            logger.exception("JobScheduler: could not release the lease")
        super().close()

    # -- leadership -------------------------------------------------------------------

    def _renew_and_peek(self) -> tuple[bool, dt.datetime | None, dt.datetime | None]:
        """Renew the lease when it is due (:attr:`Lease.due_for_renewal`) and read the
        earliest ``dispatch_at`` and ``resume_at``: whether this beat still leads, when to
        send next, and when a paused job resumes next.

        On PostgreSQL both happen in one statement, so an idle pass costs one round trip
        whether it renews or not; SQLite runs in process and takes two.
        """
        if not self.lease.due_for_renewal:
            return True, *self._peek()
        if connection.vendor != "postgresql":
            if not self.lease.renew():
                return False, None, None
            return True, *self._peek()
        started = time.monotonic()
        with sql.cursor() as cursor:
            cursor.execute(
                _renew_and_peek_sql(),
                [
                    dt.timedelta(seconds=self.lease.seconds),
                    LEASE_NAME,
                    self.lease.holder,
                    self.lease.token,
                ],
            )
            kept, due_at, resume_at = cursor.fetchone()
        return (
            self.lease.renewed_if(bool(kept), started),
            sql.from_db(Job, "dispatch_at", due_at),
            sql.from_db(Job, "resume_at", resume_at),
        )

    # -- dispatch ---------------------------------------------------------------------

    def _peek(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        with sql.cursor() as cursor:
            cursor.execute(f"SELECT {_peek_columns()}")
            due_at, resume_at = cursor.fetchone()
        return sql.from_db(Job, "dispatch_at", due_at), sql.from_db(Job, "resume_at", resume_at)

    def dispatch_due(self, now: dt.datetime) -> int:
        """Send the runs due by ``now`` (up to ``PASS_ROWS`` rows, one bounded pass), store
        what follows; return how many runs were sent.

        1. Renew the lease, in a statement of its own: the lease row is never locked
           while messages go out, so a standby's take-over never waits for this pass.
        2. Lock the due rows, a lot at a time (:meth:`_lock_due`), and publish, each
           message only while the lease surely has time left for it
           (:meth:`_may_publish`: the fence, by this beat's clock, as no lock on the lease
           is held), and for at most ``pass_seconds``. A job not reached keeps its fire
           time, for the next pass or the next leader.
        3. Once every lot is sent, store the following fire time of every job handled,
           and commit.
        4. A publish that failed for the broker's sake stops the pass; once committed, this
           beat hands the lease over (:meth:`_step_down`).
        """
        if not self.lease.renew():
            return 0
        ends = time.monotonic() + self.pass_seconds
        sent: list[tuple[dt.datetime, int, dt.datetime]] = []
        unreachable: BrokerUnreachable | None = None
        jobs: list[Job] = []
        plans: list[Plan | None] = []
        handled: list[bool] = []
        with transaction.atomic(), self._sent_events():
            try:
                # Send first, plan after: the runs due on time go out before anything else
                # is computed (the last of a storm is not delayed by the planning or the
                # writes of the others), then the late, coalescing or broken ones, then
                # every following fire time. The due rows are locked BEAT_BATCH_SIZE at a
                # time, each lot sent before the next is read, up to PASS_ROWS rows.
                for _ in range(max(1, PASS_ROWS // self.batch_size)):
                    start = len(jobs)
                    jobs += self._lock_due(now, jobs[-1] if jobs else None)
                    plans += [self._plan_on_time(job, now) for job in jobs[start:]]
                    handled += [False] * (len(jobs) - start)
                    self._send_in_batches(
                        jobs,
                        plans,
                        handled,
                        sent,
                        ends,
                        (i for i in range(start, len(jobs)) if plans[i]),
                    )
                    if len(jobs) - start < self.batch_size:
                        break
                # The calendars of the jobs that have some, for what follows (no query when
                # none has: ``has_calendars``).
                prefetch_related_objects(
                    [job for job in jobs if job.has_calendars], "calendars__rules"
                )
                late = [i for i, plan in enumerate(plans) if plan is None]
                for index in late:
                    plans[index] = self._plan(jobs[index], now)
                self._send_in_batches(jobs, plans, handled, sent, ends, iter(late))
            except PassOver:
                pass
            except BrokerUnreachable as exc:
                unreachable = exc
            for job, plan, was in zip(jobs, plans, handled, strict=True):
                if was:
                    self._advance(job, plan)
            self._record_missed(now)
            done = [job for job, was in zip(jobs, handled, strict=True) if was]
            sql.rows_update(
                done,
                [
                    "next_run_at",
                    "dispatch_at",
                    "scheduled_run_count",
                    "missed_from",
                    "missed_before",
                    "excluded_from",
                    "skip_at",
                ],
            )
            # The ledger, in the same transaction: a rolled back pass sends its runs again
            # (the worker drops the second message of a fire time), and records them again.
            sql.rows_insert(
                [
                    SentFireTime(job_id=job_id, scheduled_at=fire, check_after=deadline)
                    for deadline, job_id, fire in sent
                ],
                ignore_conflicts=True,
            )
        if unreachable is not None:
            self._step_down(unreachable)
        return len(sent)

    def _lock_due(self, now: dt.datetime, after: Job | None) -> list[Job]:
        """Lock the next ``BEAT_BATCH_SIZE`` due rows in dispatch order, after ``after``
        (the last row this pass locked: rows a transaction has locked are not skipped by
        its own ``SKIP LOCKED``).

        FOR NO KEY UPDATE, the lock beat's own UPDATE of the rows takes: it still keeps
        other beats, workers' starts and edits off them, but not the foreign-key checks
        (FOR KEY SHARE) of rows that name these jobs, so a worker recording a run of one of
        them (an expired message, a day's statistics) does not wait for this pass.

        With their group's queue, which routes the runs of a job with none of its own
        (:func:`selectors.job_routed_queue`)."""
        due = selectors.with_group_queue(
            Job.objects.select_for_update(skip_locked=True, no_key=True, of=("self",))
        ).filter(enabled=True, dispatch_at__lte=now)
        if after is not None:
            due = due.filter(
                Q(dispatch_at__gt=after.dispatch_at)
                | Q(dispatch_at=after.dispatch_at, pk__gt=after.pk)
            )
        return list(due.order_by("dispatch_at", "pk")[: self.batch_size])

    def _may_publish(self, ends: float) -> None:
        """Raise :class:`PassOver` unless one more message may go out in this pass: the pass
        has time left, and the lease outlasts the longest a publish can take, so that every
        message of this beat has left before a standby can take over."""
        if time.monotonic() >= ends or self.lease.remaining() <= self.publish_bound:
            raise PassOver

    def _step_down(self, error: Exception) -> None:
        """Hand the lease over after the broker failed this beat, and stand back for a term
        so that a beat that reaches the broker takes it (with every beat cut off, they
        take turns, and fire times beyond their grace are recorded missed)."""
        logger.error(
            "Beat %s cannot reach the broker (%r); handing the lease over", self.beat_name, error
        )
        self._standing_back_until = time.monotonic() + self.lease.seconds
        try:
            self.lease.release()
        except DB_ERRORS:
            logger.exception("JobScheduler: could not release the lease; it runs out instead")
            self.lease.token = None

    @contextlib.contextmanager
    def _sent_events(self) -> Iterator[None]:
        """Beat's messages emit task-sent events only if ``BEAT_SENT_EVENTS`` says so."""
        conf_ = self.app.conf
        before = conf_.task_send_sent_event
        conf_.task_send_sent_event = self.sent_events
        try:
            yield
        finally:
            conf_.task_send_sent_event = before

    @staticmethod
    def _plan_on_time(job: Job, now: dt.datetime) -> Plan | None:
        """The usual case, decided from the row alone: the stored fire time is within its
        grace and the job does not coalesce, so it is sent as it is. ``None``: plan it in
        full (:meth:`_plan`)."""
        if (
            job.coalesce
            or job.next_run_at is None
            or job.next_run_at < oldest_allowed(job, now)
            or job.runs_remaining == 0
        ):
            return None
        return Plan(send=job.next_run_at, jitter=job.next_jitter)

    def _send_in_batches(
        self,
        jobs: list[Job],
        plans: list[Plan | None],
        handled: list[bool],
        sent: list[tuple[dt.datetime, int, dt.datetime]],
        ends: float,
        indexes: Iterator[int],
    ) -> None:
        """Send the runs of ``plans`` at ``indexes``, :data:`PUBLISH_BATCH` messages a
        batch (:mod:`scheduling.publish`), each batch only once :meth:`_may_publish`
        allows it; mark each job handled whose batch went out (or that had nothing to
        send). A batch that cannot go out raises, and its jobs stay unhandled."""
        while True:
            batch = list(itertools.islice(indexes, 1 if self.sent_events else PUBLISH_BATCH))
            if not batch:
                return
            self._may_publish(ends)
            if self.sent_events:
                # A task-sent event per message: Celery's apply_async, one at a time.
                self._send_planned(jobs[batch[0]], plans[batch[0]], sent)
                handled[batch[0]] = True
                continue
            outgoing: list[tuple[int, publish.Outgoing]] = []
            now = timezone.now()
            for index in batch:
                plan = plans[index]
                if plan.send is None:
                    continue
                message = self._build(jobs[index], plan, now)
                if message is not None:
                    outgoing.append((index, message))
            try:
                publish.messages_publish(self.producer, [message for _, message in outgoing])
            except self.broker_errors as exc:
                raise BrokerUnreachable(exc) from exc
            except Exception:
                # Some message of the batch was refused: send them one by one, so that
                # only that one is recorded missed (with the broker's reason).
                logger.exception("A batch of %d runs was refused; sending each", len(outgoing))
                refused = {
                    index
                    for index, _ in outgoing
                    if not self._send(jobs[index], plans[index].send, plans[index].jitter)
                }
                outgoing = [(index, message) for index, message in outgoing if index not in refused]
            for index, _ in outgoing:
                job, plan = jobs[index], plans[index]
                plan.sent = True
                grace = plan.jitter + job.misfire_grace_time + LEDGER_MARGIN
                sent.append((plan.send + dt.timedelta(seconds=grace), job.pk, plan.send))
            for index in batch:
                handled[index] = True
            if self._stop_requested:
                raise PassOver

    def _send_planned(
        self, job: Job, plan: Plan, sent: list[tuple[dt.datetime, int, dt.datetime]]
    ) -> None:
        if plan.send is not None and self._send(job, plan.send, plan.jitter):
            plan.sent = True
            grace = plan.jitter + job.misfire_grace_time + LEDGER_MARGIN
            sent.append((plan.send + dt.timedelta(seconds=grace), job.pk, plan.send))

    def _build(self, job: Job, plan: Plan, now: dt.datetime) -> publish.Outgoing | None:
        """The message of the run ``plan`` sends; ``None`` if it cannot be built (the
        fire time is recorded missed with why)."""
        try:
            kwargs, options = services.run_message(
                job=job,
                trigger=ExecutionTrigger.SCHEDULE,
                scheduled_at=plan.send,
                jitter=plan.jitter,
                app=self.app,
            )
            return self.messages.build(kwargs=kwargs, now=now, **options)
        except Exception as exc:
            logger.exception("Job %s: could not build the message of its run", job.name)
            runs.execution_record_missed(
                job=job,
                fire_times=[plan.send],
                reason=f"Not sent: its message could not be built ({exc!r}).",
            )
            return None

    def _plan(self, job: Job, now: dt.datetime) -> Plan:
        """Which fire time of a due ``job`` to send now, following its misfire policy."""
        if self._missed_pass != now:  # a pass that failed left its spans: not recorded
            self._missed, self._missed_pass = [], now
        plan = Plan()
        if job.runs_remaining == 0:
            return plan  # its max runs were sent: nothing more, it is finished
        try:
            plan.trigger = job.trigger()
            fire, plan.missed, plan.coalesced = plan_next(job, plan.trigger, job.next_run_at, now)
        except Exception as exc:
            # One broken row (say, a timezone removed from the system) must never stop
            # beat; it is recorded and left alone until someone fixes it.
            plan.error = exc
            return plan
        if fire is not None and fire <= now:
            plan.send = fire
            plan.jitter = job.next_jitter if fire == job.next_run_at else 0.0
        else:
            plan.following = fire  # everything due was missed; this one is the next
        return plan

    def _send(self, job: Job, fire_time: dt.datetime, jitter: float) -> bool:
        """Publish one run; ``False`` if the broker refused it (recorded missed). A broker
        out of reach raises :class:`BrokerUnreachable`: the fire time stays unsent, for
        the next pass or the next leader."""
        try:
            services.job_dispatch(
                job=job,
                trigger=ExecutionTrigger.SCHEDULE,
                scheduled_at=fire_time,
                jitter=jitter,
                producer=self.producer,
                retry_policy=self.retry_policy,
            )
        except self.broker_errors as exc:
            raise BrokerUnreachable(exc) from exc
        except Exception as exc:
            logger.exception("Job %s: could not send its run", job.name)
            runs.execution_record_missed(
                job=job,
                fire_times=[fire_time],
                reason=f"Not sent: the broker refused the message ({exc!r}).",
            )
            return False
        logger.debug("Job %s sent for %s", job.name, fire_time)
        return True

    def _advance(self, job: Job, plan: Plan) -> None:
        """Set the job's next fire time after this pass, and record what was not sent."""
        if plan.error is not None:
            reason = self._stop(job, plan.error)
            runs.execution_record_missed(job=job, fire_times=[job.next_run_at], reason=reason)
            job.set_next_run(None)
            return
        if plan.sent:
            # Counted in the transaction that sends it: a pass rolled back (its beat died
            # before committing) counts nothing, and the leader that sends the fire time
            # again counts it then, once.
            job.scheduled_run_count += 1
        if plan.send is not None:
            try:
                trigger = plan.trigger or job.trigger()
                plan.following = _next_after(trigger, plan.send)
            except Exception as exc:
                # Sent on time (its fire time was stored when the job was sound), but what
                # follows cannot be computed.
                self._stop(job, exc)
                job.set_next_run(None)
                return
        self._record_excluded(job, plan)
        finished = job.finished_reason(plan.following)
        if finished is not None:
            self._finish(job, finished)
        else:
            job.set_next_run(plan.following)
        if plan.missed is not None:
            self._keep_missed(job, plan.trigger, plan.missed)
        if plan.coalesced:
            runs.execution_record_missed(
                job=job,
                fire_times=plan.coalesced,
                reason=f"Coalesced into the run at {plan.send.isoformat()}.",
            )

    @staticmethod
    def _record_excluded(job: Job, plan: Plan) -> None:
        """Record the excluded fire times (calendars, skip next run) that this pass has
        moved past as skipped, one row per excluded window (:func:`runs.
        execution_record_excluded`), and note where those after it begin."""
        reached = plan.send or plan.following
        now = timezone.now()
        if job.excluded_from is not None:
            before = now if reached is None else min(reached, now)
            if job.excluded_from < before:
                runs.execution_record_excluded(job=job, first=job.excluded_from, before=before)
                job.excluded_from = None
                if reached is not None and reached > now:
                    job.note_excluded(now, reached)  # the rest, once it has passed
        if job.skip_at is not None and (reached is None or job.skip_at < reached):
            job.skip_at = None  # a one-off exclusion, passed: removed
        if plan.send is not None:
            job.note_excluded(plan.send, plan.following)

    def _keep_missed(self, job: Job, trigger: Any, missed: Missed) -> None:
        """Store the span of fire times ``job`` missed on its row, with its following fire
        time (one statement for the pass, whatever the number of jobs): it is recorded as
        one summary once the catch-up is over (:meth:`_record_pending_missed`), so that
        recording an outage never delays a current fire time, and is never lost (a beat
        that dies first leaves it on the row for the next leader). A job that has a span
        pending already (two outages in a row) extends it when the two meet, and has the
        older one recorded in this pass otherwise."""
        if job.missed_from is not None and job.missed_before != missed.first:
            self._missed.append(
                (job, trigger, Missed(first=job.missed_from, before=job.missed_before))
            )
            job.missed_from = None
        job.missed_from = job.missed_from or missed.first
        job.missed_before = missed.before
        self._missed_pending = True

    def _record_missed(self, now: dt.datetime) -> None:
        """Record this pass's spans (:meth:`_keep_missed`), in its transaction."""
        missed = self._missed if self._missed_pass == now else []
        self._missed, self._missed_pass = [], None
        if missed:
            runs.execution_record_missed_summaries(missed=missed, reason=NOT_SENT_REASON)

    def _record_pending_missed(self, now: dt.datetime, due_at: dt.datetime | None) -> dt.datetime:
        """Record the spans of missed fire times stored on job rows (:meth:`_keep_missed`)
        as one summary each, :data:`RECORD_BATCH` jobs a transaction, for at most
        :data:`RECORD_BUDGET` and never past ``due_at``; return the time after."""
        if not self._missed_pending:
            return now
        budget = RECORD_BUDGET
        if due_at is not None:
            budget = min(budget, (due_at - now).total_seconds())
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            with transaction.atomic():
                jobs = list(
                    Job.objects.select_for_update(skip_locked=True)
                    .filter(missed_from__isnull=False)
                    .order_by("missed_from")[:RECORD_BATCH]
                )
                if not jobs:
                    # Done, unless the rows left are locked right now (a worker's start):
                    # then the next idle pass tries them again.
                    self._missed_pending = Job.objects.filter(missed_from__isnull=False).exists()
                    break
                spans = []
                for job in jobs:
                    span = Missed(first=job.missed_from, before=job.missed_before)
                    try:
                        spans.append((job, job.trigger(), span))
                    except Exception as exc:
                        # Broken since (beat stops it when next due): the first stands alone.
                        runs.execution_record_missed(
                            job=job,
                            fire_times=[span.first],
                            reason=f"{NOT_SENT_REASON.format(grace=job.misfire_grace_time)} {exc!r}",
                        )
                runs.execution_record_missed_summaries(missed=spans, reason=NOT_SENT_REASON)
                Job.objects.filter(pk__in=[job.pk for job in jobs]).update(
                    missed_from=None, missed_before=None
                )
            if self._stop_requested:
                break
        return timezone.now()

    def _stop(self, job: Job, error: Exception) -> str:
        """Stop scheduling ``job``, whose fire times cannot be computed; return why."""
        reason = f"Cannot be scheduled: {error!r}. Fix the job to restart it."
        logger.error("Job %s cannot be scheduled and is stopped: %r", job, error)
        with audit_context(source=AuditSource.SYSTEM, actor=self.beat_name):
            services.job_stop(job=job, reason=reason)
        return reason

    def _finish(self, job: Job, reason: str) -> None:
        """Disable ``job``, whose validity window is over (no next fire time)."""
        logger.info("Job %s is finished: %s", job, reason)
        with audit_context(source=AuditSource.SYSTEM, actor=self.beat_name):
            services.job_finish(job=job, reason=reason)

    # -- bookkeeping ------------------------------------------------------------------

    def _resume_due(self) -> None:
        """Resume the paused jobs whose resume time has come, as this beat."""
        with audit_context(source=AuditSource.SYSTEM, actor=self.beat_name):
            for job in services.jobs_resume_due():
                logger.info("Job %s resumed at its resume time", job.name)

    def _check_ledger(self) -> None:
        """Record as missed the fire times sent (by this beat or an earlier leader) whose
        run has not started by their ledger's deadline; a few hundred at a time."""
        now = time.monotonic()
        if now - self._last_ledger_check < LEDGER_CHECK_INTERVAL:
            return
        self._last_ledger_check = now
        try:
            # One probe of the ledger's index; the transaction only when something is due.
            if SentFireTime.objects.filter(check_after__lte=timezone.now()).exists():
                self._record_lost_messages()
        except DB_ERRORS:
            logger.exception("JobScheduler: could not check runs in flight; later")

    @transaction.atomic
    def _record_lost_messages(self) -> None:
        overdue = list(
            SentFireTime.objects.select_for_update(skip_locked=True)
            .filter(check_after__lte=timezone.now())
            .order_by("check_after")[:500]
        )
        if not overdue:
            return
        job_ids = {entry.job_id for entry in overdue}
        jobs = Job.objects.in_bulk(job_ids)
        arrived = set(
            JobExecution.objects.filter(
                job_id__in=job_ids,
                trigger=ExecutionTrigger.SCHEDULE,
                scheduled_at__in={entry.scheduled_at for entry in overdue},
            ).values_list("job_id", "scheduled_at")
        )
        checked = []
        for entry in overdue:
            if self._stop_requested:
                break  # the rest waits for the next leader
            checked.append(entry.pk)
            job = jobs.get(entry.job_id)
            if job is None or (entry.job_id, entry.scheduled_at) in arrived:
                continue
            if runs.covered_by_summary(job_id=entry.job_id, fire_time=entry.scheduled_at):
                continue  # another beat recorded it missed, in the summary of an outage
            runs.execution_record_missed(
                job=job,
                fire_times=[entry.scheduled_at],
                reason="Sent to the broker but not started within its grace: it expired in "
                f"the queue {selectors.job_queue(job=job)!r} after its misfire "
                f"grace ({job.misfire_grace_time}s) with no worker taking it, or the message was "
                "lost (e.g. the broker restarted without persistence).",
            )
        SentFireTime.objects.filter(pk__in=checked).delete()

    def _heartbeat(self) -> None:
        """Record that this beat is alive, at most every few seconds."""
        now = time.monotonic()
        if now - self._last_heartbeat < HEARTBEAT_INTERVAL:
            return
        self._last_heartbeat = now
        try:
            # One UPDATE, but the first time (update_or_create would take a transaction
            # and two more statements every time).
            beat = BeatHeartbeat.objects.filter(name=self.beat_name)
            if not beat.update(last_tick_at=timezone.now()):
                BeatHeartbeat.objects.update_or_create(
                    name=self.beat_name,
                    defaults={"last_tick_at": timezone.now(), "started_at": self.beat_started_at},
                )
        except DB_ERRORS:
            logger.exception("Could not record beat's heartbeat")


@celery_signals.beat_init.connect
def _install_stop(sender: Any, **kwargs: Any) -> None:
    """A beat process running :class:`JobScheduler` stops its passes between batches."""
    scheduler = getattr(sender, "scheduler", None)
    if isinstance(scheduler, JobScheduler):
        scheduler.install_stop()
