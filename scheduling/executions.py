"""Writes for runs: start (with the misfire, coalesce and max-instances rules), finish,
record missed fire times, and reclaim the slots of runs whose worker died.

How a scheduled message becomes a run, on the worker, in one short transaction that holds
the job's row lock (``SELECT ... FOR UPDATE``; on SQLite the write lock), so the rules hold
across every worker on every machine sharing the database:

1. a second message for the same fire time and attempt is dropped (unique key);
2. **misfire**: started later than fire time + jitter + ``misfire_grace_time`` → *missed*;
3. **coalesce**: the run that starts first after a backlog covers every fire time due by
   then; the messages of the fire times it covered are *missed* (coalesced), so a backlog
   of any length gives exactly one run;
4. **max instances**: as many runs as ``max_instances`` hold a live lease → *skipped*;
5. otherwise a *running* row with a lease, renewed by a thread while the function runs;
   a worker killed mid-run stops renewing, and once the lease expires the run is *lost*
   and its slot free (within ``LEASE_SECONDS``).
"""

import asyncio
import datetime as dt
import json
import logging
import random
import threading
import time
import traceback as tb
from contextlib import contextmanager
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from django.db import DatabaseError, InterfaceError, close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from scheduling import conf, masking, registry, signals
from scheduling.models import ExecutionStatus, ExecutionTrigger, Job, JobExecution

logger = logging.getLogger(__name__)


class JobNotFoundError(LookupError):
    """The job a message names does not exist (any more)."""


class DatabaseUnavailable(Exception):
    """The run could not be started because the database did not answer; deliver it again."""


class RetryLater(Exception):
    """Raised to the Celery task when a failed attempt should be retried after ``countdown``."""

    def __init__(self, countdown: float, cause: BaseException) -> None:
        self.countdown = countdown
        self.cause = cause
        super().__init__(f"retry in {countdown:.1f}s after {type(cause).__name__}: {cause}")


def _announce(signal, execution: JobExecution) -> None:
    """Send a run event once the execution row is committed."""
    transaction.on_commit(lambda: signal.send_robust(sender=JobExecution, execution=execution))


STATUS_EVENTS = {
    ExecutionStatus.SUCCESS: signals.run_succeeded,
    ExecutionStatus.FAILURE: signals.run_failed,
    ExecutionStatus.TIMEOUT: signals.run_failed,
    ExecutionStatus.LOST: signals.run_failed,
    ExecutionStatus.MISSED: signals.run_missed,
    ExecutionStatus.SKIPPED: signals.run_skipped,
}


def _lease() -> dt.timedelta:
    return dt.timedelta(seconds=conf.get("LEASE_SECONDS"))


def execution_reap_lost(*, job: Job | None = None) -> int:
    """Mark running rows whose lease expired as lost (their worker died); return how many."""
    now = timezone.now()
    stale = JobExecution.objects.filter(status=ExecutionStatus.RUNNING, lease_until__lt=now)
    if job is not None:
        stale = stale.filter(job=job)
    lost = list(stale)
    for execution in lost:
        execution.status = ExecutionStatus.LOST
        execution.finished_at = execution.lease_until
        execution.reason = "The worker stopped renewing the run's lease (killed or cut off)."
        execution.save(update_fields=["status", "finished_at", "reason"])
        _announce(signals.run_failed, execution)
    return len(lost)


def _record(job: Job, status: str, reason: str, **fields: Any) -> JobExecution:
    now = timezone.now()
    execution = JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        status=status,
        reason=reason[:500],
        started_at=now,
        finished_at=now,
        **fields,
    )
    logger.info("Job %s %s: %s", job.name, status, reason)
    _announce(STATUS_EVENTS[status], execution)
    return execution


def execution_start(
    *,
    job_id: int,
    trigger: str,
    scheduled_at: dt.datetime | None,
    jitter: float,
    attempt: int,
    task_id: str | None,
    worker: str,
) -> JobExecution | None:
    """Apply the rules above; return the running execution, or ``None`` if it must not run."""
    common = {
        "trigger": trigger,
        "scheduled_at": scheduled_at,
        "jitter": jitter or None,
        "attempt": attempt,
        "worker": worker,
        "task_result_id": task_id,
    }
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            raise JobNotFoundError(f"Job {job_id} does not exist (removed before it ran).")
        now = timezone.now()
        if trigger == ExecutionTrigger.SCHEDULE:
            duplicate = JobExecution.objects.filter(
                job=job, trigger=trigger, scheduled_at=scheduled_at, attempt=attempt
            ).exists()
            if duplicate:
                logger.warning("Job %s: fire time %s delivered twice; dropped", job, scheduled_at)
                return None
        if trigger == ExecutionTrigger.SCHEDULE and attempt == 0 and scheduled_at is not None:
            due = scheduled_at + dt.timedelta(seconds=jitter or 0)
            late = (now - due).total_seconds()
            if late > job.misfire_grace_time:
                _record(
                    job,
                    ExecutionStatus.MISSED,
                    f"Started {late:.1f}s after its fire time; the grace is "
                    f"{job.misfire_grace_time}s.",
                    **common,
                )
                return None
            if job.coalesce and job.coalesced_until and scheduled_at <= job.coalesced_until:
                _record(
                    job,
                    ExecutionStatus.MISSED,
                    f"Coalesced into the run that covered fire times up to "
                    f"{job.coalesced_until.isoformat()}.",
                    **common,
                )
                return None
        execution_reap_lost(job=job)
        running = JobExecution.objects.filter(
            job=job, status=ExecutionStatus.RUNNING, lease_until__gte=now
        ).count()
        if running >= job.max_instances:
            _record(
                job,
                ExecutionStatus.SKIPPED,
                f"{running} run(s) still going; max instances is {job.max_instances}.",
                **common,
            )
            return None
        if job.coalesce and trigger == ExecutionTrigger.SCHEDULE and scheduled_at is not None:
            # This run covers every fire time due by now: their messages will be coalesced.
            Job.objects.filter(pk=job.pk).update(
                coalesced_until=_latest_due_fire_time(job, scheduled_at, now)
            )
        first = None
        if attempt > 0 and task_id:
            first = JobExecution.objects.filter(task_result_id=task_id, attempt=0).first()
        execution = JobExecution.objects.create(
            job=job,
            job_name=job.name,
            task=job.task,
            status=ExecutionStatus.RUNNING,
            started_at=now,
            lease_until=now + _lease(),
            retry_of=first,
            **common,
        )
        _announce(signals.run_started, execution)
        return execution


def _latest_due_fire_time(job: Job, scheduled_at: dt.datetime, now: dt.datetime) -> dt.datetime:
    """The newest fire time of ``job`` at or before ``now`` (at least ``scheduled_at``)."""
    latest = scheduled_at
    try:
        trigger = job.trigger()
    except ValueError:
        return latest
    for _ in range(100_000):
        following = trigger.next_after(latest)
        if following is None or following > now:
            break
        latest = following
    return latest


@contextmanager
def _lease_keeper(execution: JobExecution):
    """Renew the run's lease from a thread while the function runs in this one."""
    stop = threading.Event()
    renew_every = max(conf.get("LEASE_SECONDS") / 3, 0.5)

    def renew() -> None:
        try:
            while not stop.wait(renew_every):
                try:
                    JobExecution.objects.filter(
                        pk=execution.pk, status=ExecutionStatus.RUNNING
                    ).update(lease_until=timezone.now() + _lease())
                except (DatabaseError, InterfaceError):
                    # The database may be back by the next round.
                    logger.warning("Could not renew the lease of execution %s", execution.pk)
                    connection.close()
        finally:
            connection.close()

    thread = threading.Thread(target=renew, name=f"lease-{execution.pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _call(task: registry.RegisteredTask, job: Job) -> Any:
    args, kwargs = list(job.args or []), dict(job.kwargs or {})
    if task.is_async:
        # A fresh event loop per run, in the worker process: never the web server's loop.
        # The soft limit is enforced inside the loop, so the coroutine is cancelled cleanly.
        coroutine = task.func(*args, **kwargs)
        if job.soft_time_limit:
            coroutine = asyncio.wait_for(coroutine, timeout=job.soft_time_limit)
        try:
            return asyncio.run(coroutine)
        except TimeoutError as exc:
            raise SoftTimeLimitExceeded(f"soft time limit ({job.soft_time_limit}s)") from exc
    return task.func(*args, **kwargs)


def _should_retry(job: Job, exc: BaseException, attempt: int) -> bool:
    if attempt >= job.max_retries or isinstance(exc, SoftTimeLimitExceeded):
        return False
    if not job.retry_on:
        return True
    names = set(job.retry_on)
    return any(
        cls.__name__ in names or f"{cls.__module__}.{cls.__qualname__}" in names
        for cls in type(exc).__mro__
    )


def retry_countdown(job: Job, attempt: int) -> float:
    """Exponential backoff from ``retry_backoff``, capped, with full jitter if enabled."""
    return float(
        get_exponential_backoff_interval(
            factor=job.retry_backoff,
            retries=attempt,
            maximum=job.retry_backoff_max,
            full_jitter=job.retry_jitter,
        )
    )


def execution_run(
    *,
    job_id: int,
    trigger: str,
    scheduled_at: dt.datetime | None,
    task_id: str | None,
    worker: str,
    jitter: float = 0.0,
    attempt: int = 0,
) -> Any:
    """Run one execution of a job on this worker and record it, whatever happens.

    The task name is looked up in the registry again here: a job whose task is not (or
    no longer) registered is recorded as failed with the reason, and nothing runs.
    Exceptions are re-raised after recording, so Celery's result shows the failure too;
    a failure that should be retried raises :class:`RetryLater` instead.
    """
    try:
        execution = execution_start(
            job_id=job_id,
            trigger=trigger,
            scheduled_at=scheduled_at,
            jitter=jitter,
            attempt=attempt,
            task_id=task_id,
            worker=worker,
        )
    except (DatabaseError, InterfaceError) as exc:
        close_old_connections()
        raise DatabaseUnavailable(f"Could not start job {job_id}: {exc}") from exc
    if execution is None:
        return {"ran": False}
    job = execution.job
    clock = time.perf_counter()
    try:
        with _lease_keeper(execution):
            task = registry.get_task(job.task)
            value = _call(task, job)
    except SoftTimeLimitExceeded as exc:
        _finish(
            execution,
            clock,
            ExecutionStatus.TIMEOUT,
            exception=f"Timed out: {exc}",
            traceback=tb.format_exc(),
            reason="Over its soft time limit.",
        )
        raise
    except Exception as exc:
        _finish(
            execution,
            clock,
            ExecutionStatus.FAILURE,
            exception=f"{type(exc).__name__}: {exc}",
            traceback=tb.format_exc(),
        )
        if _should_retry(job, exc, attempt):
            raise RetryLater(retry_countdown(job, attempt), exc) from exc
        raise
    _finish(execution, clock, ExecutionStatus.SUCCESS, result=_summary(value))
    return _jsonable(value)


def execution_mark_timed_out(*, task_id: str, limit: float) -> int:
    """Called by the worker's main process when it killed a run over its hard limit."""
    close_old_connections()
    now = timezone.now()
    updated = 0
    for execution in JobExecution.objects.filter(
        task_result_id=task_id, status=ExecutionStatus.RUNNING
    ):
        execution.status = ExecutionStatus.TIMEOUT
        execution.finished_at = now
        execution.duration = (now - execution.started_at).total_seconds()
        execution.exception = f"TimeLimitExceeded: killed after its hard time limit ({limit}s)"
        execution.reason = "Over its hard time limit; the worker process was replaced."
        execution.save(update_fields=["status", "finished_at", "duration", "exception", "reason"])
        _update_job_last(execution)
        _announce(signals.run_failed, execution)
        updated += 1
    return updated


def _summary(value: Any) -> str:
    limit = conf.get("RESULT_SUMMARY_MAX_CHARS")
    try:
        text = json.dumps(masking.mask(value), ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _jsonable(value: Any) -> Any:
    """What Celery's result store gets: JSON, with secrets masked."""
    value = masking.mask(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _finish(execution: JobExecution, clock: float, status: str, **outcome: str) -> None:
    execution.duration = time.perf_counter() - clock
    execution.finished_at = execution.started_at + dt.timedelta(seconds=execution.duration)
    execution.status = status
    execution.lease_until = None
    for name, value in outcome.items():
        setattr(execution, name, value)
    execution.save(
        update_fields=["duration", "finished_at", "status", "lease_until", *outcome.keys()]
    )
    _update_job_last(execution)
    logger.info("Job %s %s in %.3fs", execution.job_name, status, execution.duration)
    _announce(STATUS_EVENTS[status], execution)


def _update_job_last(execution: JobExecution) -> None:
    Job.objects.filter(pk=execution.job_id).update(
        last_run_at=execution.started_at,
        last_status=execution.status,
        last_duration=execution.duration,
        total_run_count=F("total_run_count") + 1,
    )


def execution_record_missed(*, job: Job, fire_times: list[dt.datetime], reason: str) -> int:
    """Record fire times beat did not send (it was down, or they were coalesced)."""
    if not fire_times:
        return 0
    now = timezone.now()
    rows = [
        JobExecution(
            job=job,
            job_name=job.name,
            task=job.task,
            trigger=ExecutionTrigger.SCHEDULE,
            status=ExecutionStatus.MISSED,
            scheduled_at=fire_time,
            started_at=now,
            finished_at=now,
            reason=reason[:500],
        )
        for fire_time in fire_times
    ]
    new = _not_yet_recorded(job, rows)
    JobExecution.objects.bulk_create(new, ignore_conflicts=True)
    for execution in new:
        _announce(signals.run_missed, execution)
    logger.warning("Job %s: %d fire time(s) missed: %s", job.name, len(rows), reason)
    return len(new)


def _not_yet_recorded(job: Job, rows: list[JobExecution]) -> list[JobExecution]:
    recorded = set(
        JobExecution.objects.filter(
            job=job,
            trigger=ExecutionTrigger.SCHEDULE,
            attempt=0,
            scheduled_at__in=[row.scheduled_at for row in rows],
        ).values_list("scheduled_at", flat=True)
    )
    return [row for row in rows if row.scheduled_at not in recorded]


def jitter_for(job: Job) -> float:
    """A random delay for one fire time of ``job`` (0 when the job has no jitter)."""
    return random.uniform(0, job.jitter) if job.jitter else 0.0
