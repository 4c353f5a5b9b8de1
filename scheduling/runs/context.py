"""The run context: what a task function may know and tell about the run it is in.

A function asks for it with a parameter annotated :class:`RunContext` (any name, e.g.
``def report(day: int, *, run: RunContext)``), which the worker fills in, or reads it with
:func:`current` (``None`` outside a run)::

    from scheduling.runs import RunContext

    @job_task("reports.daily")
    def daily(*, run: RunContext) -> int:
        for done, batch in enumerate(batches, 1):
            if run.cancelled():
                return done  # recorded as cancelled, with what it returned
            write(batch)
            run.progress(100 * done / len(batches), f"batch {done}")
        return len(batches)

Nothing here touches the database or the broker from the function's own thread: the
lease renewer of the worker process (:mod:`scheduling.runs.lease`) tells the context
that the run was cancelled, and writes the progress reported (at most once per
``CANCEL_CHECK_INTERVAL``) to the execution and as a Celery task event
(:data:`PROGRESS_EVENT`), which Flower shows in the run's entry.
"""

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("scheduling.run")

#: The Celery task event that carries a run's progress; Flower shows the text in the run's
#: *result* until the run ends. Celery's event state takes the type of an unknown event
#: as the task's state and ranks every such custom state after *revoked*
#: (``celery.states.precedence``): a run that showed a ``PROGRESS`` state would keep it
#: when it is then cancelled or terminated. This type is read as the state ``STARTED``
#: (what the run still is) without moving its start time or Flower's prefetch metrics,
#: which go by ``task-started`` events only.
PROGRESS_EVENT = "task-STARTED"
PROGRESS_MESSAGE_MAX = 500


class RunCancelled(Exception):
    """Raised by :meth:`RunContext.raise_if_cancelled` in a run that was asked to stop;
    the run is recorded as cancelled, not failed."""


class RunLogger(logging.LoggerAdapter):
    """A logger whose lines name the job and the run they come from."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[{extra.get('job')} run {extra.get('execution_id')}] {msg}", kwargs


@dataclasses.dataclass(eq=False)
class RunContext:
    """One run, as its function sees it.

    ``scheduled_at`` is the run's logical time: the fire time it runs for (a manual run:
    when it was asked for). ``trigger`` is what sent it (``schedule``, ``manual``, ...);
    ``attempt`` counts retries from 0; ``task_id`` is the Celery message id.
    """

    job: str
    execution_id: int
    scheduled_at: dt.datetime | None
    attempt: int
    trigger: str
    task_id: str | None = None
    worker: str = ""

    def __post_init__(self) -> None:
        self.logger = RunLogger(logger, {"job": self.job, "execution_id": self.execution_id})
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._pending: tuple[float | None, str] | None = None
        self.reported: tuple[float | None, str] | None = None

    # --- cancellation ------------------------------------------------------------------------
    def cancelled(self) -> bool:
        """Whether the run was asked to stop (cancelled, or terminated on a pool that
        cannot kill it): a sync function checks it between steps and returns or raises."""
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`RunCancelled` if the run was asked to stop."""
        if self.cancelled():
            raise RunCancelled(f"Run {self.execution_id} of {self.job} was cancelled.")

    def request_cancel(self) -> None:
        """Tell the function its run is to stop (the lease renewer calls this): the flag of
        :meth:`cancelled`, and for an ``async def`` function ``CancelledError`` in its
        coroutine."""
        with self._lock:
            if self._cancel.is_set():
                return
            self._cancel.set()
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the function is over
                loop.call_soon_threadsafe(task.cancel)

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        """The event loop and task an ``async def`` function runs in; cancelled at once if
        the run was cancelled before it started."""
        with self._lock:
            self._loop, self._task = loop, task
            cancelled = self._cancel.is_set()
        if cancelled:
            task.cancel()

    # --- progress ----------------------------------------------------------------------------
    def progress(self, percent: float | None = None, message: str = "") -> None:
        """Report how far the run is: ``percent`` (0 to 100, ``None``: unknown) and a
        message. Cheap to call often: the last value reported is written to the run and
        sent to Flower within ``CANCEL_CHECK_INTERVAL``."""
        if percent is not None:
            try:
                percent = float(percent)
            except (TypeError, ValueError):
                raise ValueError(f"progress: percent must be a number, not {percent!r}") from None
            if math.isnan(percent):
                raise ValueError("progress: percent must be a number, not NaN")
            percent = min(max(percent, 0.0), 100.0)
        text = str(message or "")[:PROGRESS_MESSAGE_MAX].replace("\x00", "")
        with self._lock:
            self._pending = (percent, text)

    def take_progress(self) -> tuple[float | None, str] | None:
        """The progress reported since the last take, if any (for the writer)."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.reported = pending
        return pending


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "scheduling_run", default=None
)


def current() -> RunContext | None:
    """The context of the run this code runs in (``None`` outside a run)."""
    return _current.get()


@contextmanager
def active(context: RunContext) -> Iterator[RunContext]:
    """Make ``context`` the :func:`current` one inside the block (an ``async def``
    function's event loop inherits it)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
