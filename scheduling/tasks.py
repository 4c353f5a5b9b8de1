"""The one Celery task every job runs through; the logic lives in :mod:`scheduling.runs`."""

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from celery import Task, shared_task
from celery.exceptions import Ignore, Reject, TimeLimitExceeded
from celery.signals import task_revoked, worker_ready, worker_shutdown
from celery.utils.saferepr import saferepr

from scheduling import conf, runs, threads
from scheduling.task_results import TaskMessage

logger = logging.getLogger(__name__)
_housekeeping_stop = threading.Event()


def _every(interval: float, check: Callable[[], object], name: str) -> None:
    """Run ``check`` every ``interval`` seconds in a helper thread of this worker, until it
    shuts down (0: never)."""
    if not interval:
        return

    def loop() -> None:
        from django.db import close_old_connections

        while not _housekeeping_stop.wait(interval):
            try:
                close_old_connections()
                check()
            except Exception:
                logger.exception("Periodic check %s failed", name)

    threads.start_daemon_thread(loop, name)


@worker_ready.connect
def start_housekeeping(**kwargs):
    """Checks every worker makes, independently of beat and of the jobs' next starts:
    the dead man's switch of every job (so a dead beat is noticed too), the reaping
    of runs whose worker died (so a one-off or paused job's dead run does not stay
    "running"), the terminate of cancelled runs past their grace, then the sending of waiting runs whose slot is free (should the worker
    that freed it have died before it sent them), and the throttled sending of backfills."""
    from scheduling import alerts

    _every(conf.get("DEADMAN_CHECK_INTERVAL"), alerts.deadman_check, "deadman-switch")
    _every(conf.get("REAP_INTERVAL"), _reap_and_promote, "lost-run-reaper")
    _every(conf.get("REAP_INTERVAL"), runs.execution_terminate_overdue, "cancel-grace")
    _every(conf.get("BACKFILL_CHECK_INTERVAL"), _send_backfills, "backfill-sender")


def _send_backfills() -> None:
    """Send the backfilled runs that are due (:mod:`scheduling.backfills`)."""
    from scheduling.backfills import backfills_send_due

    backfills_send_due()


def _reap_and_promote() -> None:
    """Record the lost runs, then send the waiting runs their slots (and the queued runs
    not started in time) once more."""
    runs.execution_reap_lost()
    runs.executions_promote_due()


@worker_shutdown.connect
def stop_housekeeping(**kwargs):
    _housekeeping_stop.set()


class RunJobTask(Task):
    """The Celery task class of ``scheduling.run_job``."""

    def task_message(self) -> TaskMessage:
        """The message being run, as Celery's extended task results describe it."""
        request = self.request
        # A worker merges the message's headers into the request; apply() keeps them apart.
        headers = getattr(request, "headers", None) or {}
        return TaskMessage(
            task_id=request.id,
            worker=request.hostname or "",
            task_name=self.name,
            periodic_task_name=(
                getattr(request, "periodic_task_name", None) or headers.get("periodic_task_name")
            ),
            args_repr=getattr(request, "argsrepr", None) or saferepr(request.args or ()),
            kwargs_repr=getattr(request, "kwargsrepr", None) or saferepr(request.kwargs or {}),
        )

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # A hard time limit kills the pool process: the worker's main process calls this,
        # and it is the only place left to record the run as timed out.
        if isinstance(exc, TimeLimitExceeded):
            runs.execution_mark_timed_out(task_id=task_id, limit=exc.args[0] if exc.args else 0)


# acks_late: a message is acknowledged once its run is over, so a run whose worker died, or
# that could not start because the database was away, is delivered again; the execution
# row's unique (job, fire time, attempt) key makes sure it never runs twice.
# ignore_result: the execution service writes the TaskResult row itself, once, in the
# transaction that records the run's outcome (scheduling.task_results), instead of the
# result backend writing it again on its own after the run.
@shared_task(
    name="scheduling.run_job",
    bind=True,
    base=RunJobTask,
    max_retries=None,
    acks_late=True,
    ignore_result=True,
)
def run_job(
    self,
    job_id: int,
    trigger: str = "schedule",
    scheduled_at: str | None = None,
    jitter: float = 0.0,
    overlap: str | None = None,
    sent_at: str | None = None,
    parent_id: int | None = None,
    backfill_id: int | None = None,
    override: bool = False,
):
    """Run the job ``job_id`` once and record the execution; retry when the job says so.
    ``overlap``: this run's override of the job's overlap policy (run now, backfill);
    ``sent_at``, ``parent_id``, ``backfill_id``, ``override``: where a run not sent by
    the schedule came from (:func:`scheduling.runs.execution_run`)."""
    try:
        return runs.execution_run(
            job_id=job_id,
            trigger=trigger,
            scheduled_at=dt.datetime.fromisoformat(scheduled_at) if scheduled_at else None,
            jitter=jitter,
            attempt=self.request.retries,
            task_id=self.request.id,
            worker=self.request.hostname or "",
            message=self.task_message(),
            overlap=overlap,
            sent_at=dt.datetime.fromisoformat(sent_at) if sent_at else None,
            parent_id=parent_id,
            backfill_id=backfill_id,
            override=override,
        )
    except runs.RetryLater as retry:
        # The retry is shown like the first attempt (Celery copies neither argsrepr nor
        # kwargsrepr), and never expires: the misfire rule does not apply to retries.
        raise self.retry(
            countdown=retry.countdown,
            exc=retry.cause,
            expires=None,
            argsrepr=getattr(self.request, "argsrepr", None),
            kwargsrepr=getattr(self.request, "kwargsrepr", None),
        ) from retry.cause
    except runs.RunStopped:
        # Shown as revoked, as a terminated run is (Flower, celery events); the record
        # and the task result are written.
        try:
            self.send_event("task-revoked", terminated=False, signum=None, expired=False)
        except Exception as exc:
            logger.warning("Could not send the revoked event of %s: %s", self.request.id, exc)
        raise Ignore() from None
    except runs.DatabaseUnavailable as exc:
        time.sleep(1)  # do not spin while the database is away
        raise Reject(str(exc), requeue=True) from exc


@task_revoked.connect
def record_expired(sender=None, request=None, expired=False, **kwargs):
    """Record as missed a scheduled run whose message expired before a worker took it.

    A scheduled run's message expires at its fire time + jitter + misfire grace
    (:func:`scheduling.services.job_dispatch`). A worker that receives it later drops it
    without running the task (this signal, in the worker's main process); RabbitMQ drops
    an expired message at the head of its queue itself, and then beat's ledger of runs in
    flight records the fire time. Either way, once.
    """
    if not expired or getattr(sender, "name", None) != run_job.name or request is None:
        return
    from django.db import close_old_connections

    from scheduling.models import Job
    from scheduling.services import EXPIRED_FIRE_TIME_HEADER, EXPIRED_JOB_HEADER

    job_id = getattr(request, EXPIRED_JOB_HEADER, None)
    fire_time = getattr(request, EXPIRED_FIRE_TIME_HEADER, None)
    if job_id is None or not fire_time:
        return
    try:
        job = Job.objects.filter(pk=job_id).first()
        if job is None:
            return
        queue = (getattr(request, "delivery_info", None) or {}).get("routing_key") or ""
        runs.execution_record_missed(
            job=job,
            fire_times=[dt.datetime.fromisoformat(fire_time)],
            reason=expired_reason(queue=queue, grace=job.misfire_grace_time),
        )
    except Exception:
        # Beat's ledger of runs in flight records the fire time instead.
        logger.exception("Could not record the expired run %s", getattr(request, "id", "?"))
        close_old_connections()


def expired_reason(*, queue: str, grace: int) -> str:
    return (
        f"Expired in the queue{f' {queue!r}' if queue else ''}: no worker took it within its "
        f"misfire grace ({grace}s)."
    )
