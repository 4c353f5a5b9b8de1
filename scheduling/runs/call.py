"""Calling a job's task function: plain or ``async def``, under the job's soft limit,
with its run context (:mod:`scheduling.runs.context`).

The hard limit (``time_limit``) and a sync function's soft limit are Celery's own,
enforced by the worker (they travel as options of the message,
:func:`scheduling.services.job_dispatch`). An ``async def`` function gets its soft limit
here, inside its event loop, so its coroutine is cancelled cleanly; a cancelled run's
coroutine is cancelled the same way (``CancelledError``).
"""

import asyncio
import functools
import inspect
import typing
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from scheduling import registry
from scheduling.models import Job
from scheduling.runs.context import RunContext, active


def _names_context(annotation: Any) -> bool:
    if annotation is RunContext:
        return True
    if isinstance(annotation, str):  # postponed annotations: "RunContext", "RunContext | None"
        return any(
            part.strip().rsplit(".", 1)[-1] == "RunContext"
            for part in annotation.replace("Optional[", "").rstrip("]").split("|")
        )
    return RunContext in typing.get_args(annotation)


@functools.cache
def _context_parameter_of(func: Any) -> str | None:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind != parameter.POSITIONAL_ONLY and _names_context(parameter.annotation):
            return parameter.name
    return None


def context_parameter(task: registry.RegisteredTask) -> str | None:
    """The name of ``task``'s parameter annotated :class:`RunContext`, if it has one: the
    worker passes the run's context there (it replaces a keyword argument of that name)."""
    func = task.celery_task.run if task.celery_task is not None else task.func
    return _context_parameter_of(func)


def call(
    task: registry.RegisteredTask,
    job: Job,
    context: RunContext | None = None,
    kwargs: dict | None = None,
) -> Any:
    """Run ``task``'s function with ``job``'s arguments and return what it returns;
    ``context`` is the run's, current inside the call and passed to a function that asks
    for it; ``kwargs``: the run's own keyword arguments instead of the job's (run now
    with overrides, a re-run of such a run)."""
    args = list(job.args or [])
    kwargs = dict((job.kwargs or {}) if kwargs is None else kwargs)
    if context is None:
        return _call(task, job, args, kwargs, None)
    name = context_parameter(task)
    if name is not None:
        kwargs[name] = context
    with active(context):
        return _call(task, job, args, kwargs, context)


def _call(
    task: registry.RegisteredTask,
    job: Job,
    args: list,
    kwargs: dict,
    context: RunContext | None,
) -> Any:
    if not task.is_async:
        return task.func(*args, **kwargs)

    async def main() -> Any:
        if context is not None:
            context.attach(asyncio.get_running_loop(), asyncio.current_task())
        coroutine = task.func(*args, **kwargs)
        if job.soft_time_limit:
            return await asyncio.wait_for(coroutine, timeout=job.soft_time_limit)
        return await coroutine

    # A fresh event loop per run, in the worker process: never the web server's loop.
    try:
        return asyncio.run(main())
    except TimeoutError as exc:
        raise SoftTimeLimitExceeded(f"soft time limit ({job.soft_time_limit}s)") from exc
