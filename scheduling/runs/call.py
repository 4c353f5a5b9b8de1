"""Calling a job's task function: plain or ``async def``, under the job's soft limit.

The hard limit (``time_limit``) and a sync function's soft limit are Celery's own,
enforced by the worker (they travel as options of the message,
:func:`scheduling.services.job_dispatch`). An ``async def`` function gets its soft limit
here, inside its event loop, so its coroutine is cancelled cleanly.
"""

import asyncio
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from scheduling import registry
from scheduling.models import Job


def call(task: registry.RegisteredTask, job: Job) -> Any:
    """Run ``task``'s function with ``job``'s arguments and return what it returns."""
    args, kwargs = list(job.args or []), dict(job.kwargs or {})
    if not task.is_async:
        return task.func(*args, **kwargs)
    # A fresh event loop per run, in the worker process: never the web server's loop.
    coroutine = task.func(*args, **kwargs)
    if job.soft_time_limit:
        coroutine = asyncio.wait_for(coroutine, timeout=job.soft_time_limit)
    try:
        return asyncio.run(coroutine)
    except TimeoutError as exc:
        raise SoftTimeLimitExceeded(f"soft time limit ({job.soft_time_limit}s)") from exc
