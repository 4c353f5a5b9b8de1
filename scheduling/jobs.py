"""Job tasks shipped with the app: small demo tasks an operator can try jobs with.

Any installed app can register its own in a ``jobs`` module with ``@job_task``.
"""

import asyncio
import time
from typing import Any

from django.utils.translation import gettext_lazy as _

from scheduling.registry import job_task


@job_task("demo.echo", description=_("Return the arguments it was given."))
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@job_task("demo.noop", description=_("Do nothing: measures what recording a run costs."))
def noop() -> None:
    return None


@job_task("demo.sleep", description=_("Sleep for the given number of seconds (sync)."))
def sleep(seconds: float = 1.0) -> float:
    time.sleep(seconds)
    return seconds


@job_task("demo.async_sleep", description=_("Sleep for the given number of seconds (async def)."))
async def async_sleep(seconds: float = 1.0) -> dict[str, Any]:
    started = asyncio.get_running_loop().time()
    await asyncio.sleep(seconds)
    return {"slept": round(asyncio.get_running_loop().time() - started, 3), "async": True}


@job_task("demo.fail", description=_("Raise an error, to see how failures are recorded."))
def fail(message: str = "This job failed on purpose.") -> None:
    raise RuntimeError(message)


@job_task(
    "maintenance.cleanup",
    description=_("Delete old runs and results; tidy one-off jobs and backups."),
)
def maintenance_cleanup(**options: Any) -> dict[str, Any]:
    from scheduling import maintenance

    return maintenance.cleanup(**options)


@job_task(
    "maintenance.health_check",
    description=_("Check database, broker, workers, beat, disk, memory."),
)
def maintenance_health_check(checks: list[str] | None = None) -> dict[str, Any]:
    from scheduling import maintenance

    return maintenance.health_check(checks=checks)


@job_task("maintenance.backup", description=_("Export all jobs and recent runs to a backup file."))
def maintenance_backup(**options: Any) -> dict[str, Any]:
    from scheduling import maintenance

    return maintenance.backup(**options)
