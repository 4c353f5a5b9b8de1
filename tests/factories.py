"""Valid jobs with as little said as possible; tests state only what matters to them."""

import datetime as dt
import uuid
from typing import Any

from django.utils import timezone

from scheduling import services
from scheduling.models import Job, JobExecution
from scheduling.task_results import TaskMessage

_counter = iter(range(1, 1_000_000))


def make_job(**fields: Any) -> Job:
    """A saved cron job running ``demo.echo`` hourly, through the services."""
    fields.setdefault("name", f"job-{next(_counter)}")
    fields.setdefault("task", "demo.echo")
    if "trigger_type" not in fields:
        fields.setdefault("cron_expression", "0 0 * * * *")
        fields["trigger_type"] = "cron"
    return services.job_create(**fields)


def make_running(
    job: Job, *, started_at: dt.datetime | None = None, lease: float = 30, **fields: Any
) -> JobExecution:
    """A run of ``job`` in progress (a manual one), its lease ``lease`` seconds from its start."""
    started_at = started_at or timezone.now()
    return JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="manual",
        status="running",
        started_at=started_at,
        lease_until=started_at + dt.timedelta(seconds=lease),
        **fields,
    )


def make_waiting(job: Job, **fields: Any) -> JobExecution:
    """A run of ``job`` waiting for a free slot (overlap policy buffer), since now."""
    now = timezone.now()
    fields.setdefault("trigger", "manual")
    return JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        status="waiting",
        scheduled_at=now,
        started_at=now,
        waiting_since=now,
        **fields,
    )


def make_finished_run(
    job: Job,
    duration: float,
    status: str = "success",
    *,
    ago: dt.timedelta = dt.timedelta(minutes=5),
) -> JobExecution:
    """A scheduled run of ``job`` that ended ``ago``, counted in the daily statistics."""
    from scheduling import stats

    started = timezone.now() - ago
    execution = JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="schedule",
        status=status,
        scheduled_at=started - dt.timedelta(seconds=0.5),
        started_at=started,
        finished_at=started + dt.timedelta(seconds=duration),
        duration=duration,
    )
    stats.stats_record(execution=execution)
    return execution


def make_record(job: Job, status: str, fire_time: dt.datetime, **fields: Any) -> JobExecution:
    """The record of ``job``'s scheduled fire time ``fire_time`` with outcome ``status``."""
    fields.setdefault("trigger", "schedule")
    return JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        status=status,
        scheduled_at=fire_time,
        started_at=fire_time,
        **fields,
    )


def sent_message(job: Job, task_id: str | None = None) -> TaskMessage:
    """The Celery message of a run of ``job``, as a worker receives it."""
    return TaskMessage(
        task_id=task_id or str(uuid.uuid4()),
        worker="w1@test",
        periodic_task_name=job.name,
        args_repr="()",
        kwargs_repr=f"{{'job_id': {job.pk}}}",
    )


def run_scheduled(
    job: Job, *, fire_time: dt.datetime | None = None, sent: TaskMessage | None = None
) -> Any:
    """Run ``job`` in this process as a worker runs a scheduled message (fire time: now)."""
    from scheduling import runs

    sent = sent or sent_message(job)
    return runs.execution_run(
        job_id=job.pk,
        trigger="schedule",
        scheduled_at=fire_time or timezone.now(),
        task_id=sent.task_id,
        worker=sent.worker,
        message=sent,
    )
