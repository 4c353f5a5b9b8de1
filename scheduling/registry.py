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
    """One runnable function and what the admin shows about it."""

    name: str
    func: Callable[..., Any]
    description: str  # may be a lazy translation

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    @property
    def label(self) -> str:
        return f"{self.name} — {self.description}" if str(self.description) else self.name


_registry: dict[str, RegisteredTask] = {}


def job_task(name: str | None = None, *, description: Any = "") -> Callable:
    """Register a plain or ``async def`` function as a job task.

    ``name`` defaults to ``<module>.<function>``; ``description`` defaults to the first line
    of the docstring.
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        task_name = name or f"{func.__module__}.{func.__qualname__}"
        doc = (inspect.getdoc(func) or "").strip().splitlines()
        existing = _registry.get(task_name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"Job task name {task_name!r} is registered twice.")
        _registry[task_name] = RegisteredTask(
            name=task_name, func=func, description=description or (doc[0] if doc else "")
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
