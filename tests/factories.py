"""Valid jobs with as little said as possible; tests state only what matters to them."""

from typing import Any

from scheduling import services
from scheduling.models import Job

_counter = iter(range(1, 1_000_000))


def make_job(**fields: Any) -> Job:
    """A saved cron job running ``demo.echo`` hourly, through the services."""
    fields.setdefault("name", f"job-{next(_counter)}")
    fields.setdefault("task", "demo.echo")
    if "trigger_type" not in fields:
        fields.setdefault("cron_expression", "0 0 * * * *")
        fields["trigger_type"] = "cron"
    return services.job_create(**fields)
