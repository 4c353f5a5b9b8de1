"""System checks: the beat scheduler setting."""

from django.conf import settings
from django.core.checks import Warning, register

SCHEDULER = "scheduling.scheduler:JobScheduler"


@register()
def check_beat_scheduler(app_configs, **kwargs):
    configured = getattr(settings, "CELERY_BEAT_SCHEDULER", None)
    if configured not in {SCHEDULER, "scheduling.scheduler.JobScheduler"}:
        return [
            Warning(
                f"CELERY_BEAT_SCHEDULER is {configured!r}; jobs defined in the admin only run "
                f"with {SCHEDULER!r}.",
                hint=f'Set CELERY_BEAT_SCHEDULER = "{SCHEDULER}".',
                id="scheduling.W001",
            )
        ]
    return []
