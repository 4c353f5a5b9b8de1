"""The allow-list of functions that may run as jobs.

A function becomes runnable only by being decorated with :func:`job_task` in code.
A job names its function by the registered name; the name is checked when the job is
saved and again on the worker before anything runs.
"""

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.module_loading import autodiscover_modules

from scheduling import conf


class UnknownTaskError(LookupError):
    """Raised for a task name that is not in the registry."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Task {name!r} is not registered; only functions decorated with "
            f"@job_task can run as jobs."
        )


@dataclass(frozen=True)
class RegisteredTask:
    """One runnable function and what the admin shows about it.

    ``celery_task``: the Celery task (``@shared_task``, ``@app.task``) it was registered
    from, if any; ``func`` then calls that task's function in process.
    """

    name: str
    func: Callable[..., Any]
    description: str  # may be a lazy translation
    celery_task: Any = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    @property
    def label(self) -> str:
        return f"{self.name} — {self.description}" if str(self.description) else self.name


_registry: dict[str, RegisteredTask] = {}


def is_celery_task(obj: Any) -> bool:
    """Whether ``obj`` is a Celery task, or the proxy ``@shared_task`` and ``@app.task``
    return before the Celery app is finalized."""
    from celery import Task
    from celery.local import Proxy

    return isinstance(obj, Task | Proxy)


def _celery_caller(task: Any) -> Callable[..., Any]:
    """Call the Celery task ``task``'s own function (``task.run``) in this process.

    Not ``apply_async``: the call happens inside ``scheduling.run_job``'s run, under the
    job's rules and record. The task's own Celery options (time limits, retries,
    ``autoretry_for``, rate limits, routing) are those of a message and do not apply: the
    job's replace them. The proxy of a ``@shared_task`` is looked up at the call, once
    the Celery app is ready.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return task.run(*args, **kwargs)

    return call


def job_task(name: str | None = None, *, description: Any = "") -> Callable:
    """Register a plain or ``async def`` function, or a Celery task, as a job task.

    ``name`` defaults to ``<module>.<function>`` (for a Celery task: its Celery name);
    ``description`` defaults to the first line of the docstring. Stacked on a Celery task
    (``@job_task()`` above ``@shared_task``), it registers the task's function and returns
    the task unchanged, so the code that calls it through Celery keeps working.
    """

    def decorator(func: Any) -> Any:
        celery_task = func if is_celery_task(func) else None
        if celery_task is not None:
            task_name = name or celery_task.name
            doc = (inspect.getdoc(celery_task.run) or "").strip().splitlines()
            target = _celery_caller(celery_task)
        else:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            doc = (inspect.getdoc(func) or "").strip().splitlines()
            target = func
        existing = _registry.get(task_name)
        if existing is not None and (existing.celery_task or existing.func) is not func:
            raise ValueError(f"Job task name {task_name!r} is registered twice.")
        _registry[task_name] = RegisteredTask(
            name=task_name,
            func=target,
            description=description or (doc[0] if doc else ""),
            celery_task=celery_task,
        )
        return func

    return decorator


def get_task(name: str) -> RegisteredTask:
    """Return the registered task ``name`` or raise :class:`UnknownTaskError`."""
    try:
        return _registry[name]
    except KeyError:
        raise UnknownTaskError(name) from None


def is_registered(name: str) -> bool:
    return name in _registry


def all_tasks() -> list[RegisteredTask]:
    return sorted(_registry.values(), key=lambda task: task.name)


def choices() -> list[tuple[str, str]]:
    return [(task.name, task.label) for task in all_tasks()]


def autodiscover() -> None:
    """Import every installed app's ``jobs`` module and the configured extra modules."""
    autodiscover_modules("jobs")
    for module in conf.get("EXTRA_JOB_MODULES"):
        importlib.import_module(module)
