"""The one Celery task every job runs through; the logic lives in ``executions``."""

import datetime as dt

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded

from scheduling import executions


class RunJobTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # A hard time limit kills the pool process: the worker's main process calls this,
        # and it is the only place left to record the run as timed out.
        if isinstance(exc, TimeLimitExceeded):
            executions.execution_mark_timed_out(
                task_id=task_id, limit=exc.args[0] if exc.args else 0
            )


@shared_task(name="scheduling.run_job", bind=True, base=RunJobTask, max_retries=None)
def run_job(
    self,
    job_id: int,
    trigger: str = "schedule",
    scheduled_at: str | None = None,
    jitter: float = 0.0,
):
    """Run the job ``job_id`` once and record the execution; retry when the job says so."""
    try:
        return executions.execution_run(
            job_id=job_id,
            trigger=trigger,
            scheduled_at=dt.datetime.fromisoformat(scheduled_at) if scheduled_at else None,
            jitter=jitter,
            attempt=self.request.retries,
            task_id=self.request.id,
            worker=self.request.hostname or "",
        )
    except executions.RetryLater as retry:
        raise self.retry(countdown=retry.countdown, exc=retry.cause) from retry.cause
