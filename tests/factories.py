"""Valid jobs with as little said as possible; tests state only what matters to them."""

import datetime as dt
from typing import Any

from django.utils import timezone

from scheduling import services
from scheduling.models import Job, JobExecution

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
