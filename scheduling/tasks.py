"""The one Celery task every job runs through; the logic lives in ``services``."""

import datetime as dt

from celery import shared_task

from scheduling import services


@shared_task(name="scheduling.run_job", bind=True)
def run_job(self, job_id: int, trigger: str = "schedule", scheduled_at: str | None = None):
    """Run the job ``job_id`` once and record the execution."""
    return services.execution_run(
        job_id=job_id,
        trigger=trigger,
        scheduled_at=dt.datetime.fromisoformat(scheduled_at) if scheduled_at else None,
        task_id=self.request.id,
        worker=self.request.hostname or "",
    )
