"""The job task the soak (``benchmarks/soak.py``) runs: it notes every call it gets.

Registered only in the soak's processes (``SCHEDULING_EXTRA_JOB_MODULES``). Each call
appends one line, ``<job id> <fire time> <message id>``, to a file of its own process in
``$SOAK_CALLS_DIR``: the soak counts the function's real executions from those lines, so a
fire time or a message run twice shows even if the records say once. One ``write()`` on a
file opened for appending, unbuffered: the line is in the kernel before the function
returns, so a process killed after the call leaves it there.
"""

import os
from pathlib import Path

from celery import current_task

from scheduling.registry import job_task

_fd: int | None = None


@job_task("soak.tick", description="Note this call (job, fire time, message) for the soak.")
def tick() -> None:
    global _fd
    request = current_task.request
    kwargs = request.kwargs or {}
    if _fd is None:
        path = Path(os.environ["SOAK_CALLS_DIR"]) / f"calls-{os.getpid()}"
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = f"{kwargs.get('job_id')} {kwargs.get('scheduled_at')} {request.id}\n"
    os.write(_fd, line.encode())
