"""System checks: the beat scheduler setting, and the isolation level runs rely on."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import connections

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


@register(Tags.database)
def check_isolation_level(app_configs, databases=None, **kwargs):
    """Max instances holds only if each statement sees what was committed before it
    started (READ COMMITTED); a database defaulting to REPEATABLE READ or SERIALIZABLE
    lets two workers start a job limited to one."""
    errors = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            cursor.execute("SHOW default_transaction_isolation")
            (level,) = cursor.fetchone()
        if level != "read committed":
            errors.append(
                Error(
                    f"Database {alias!r} runs transactions at {level!r} by default; the "
                    "scheduler's run limits need 'read committed'.",
                    hint="Add '-c default_transaction_isolation=read\\ committed' to "
                    "OPTIONS['options'] of the database (project/settings.py does), or set "
                    "it on the database: ALTER DATABASE ... SET default_transaction_isolation "
                    "= 'read committed'.",
                    id="scheduling.E002",
                )
            )
    return errors
