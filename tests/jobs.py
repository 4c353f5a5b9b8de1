"""Job tasks that only the tests register (imported by tests/conftest.py, and by the
processes the end-to-end tests start through SCHEDULING_EXTRA_JOB_MODULES)."""

import asyncio
import json
import time
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from scheduling import runs
from scheduling.registry import job_task
from scheduling.runs import RunContext


@job_task("tests.stubborn_sleep", description="Sleep and ignore the soft time limit.")
def stubborn_sleep(seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            continue


@job_task("tests.flaky", description="Fail with ConnectionError the first N times, then succeed.")
def flaky(key: str, failures: int) -> int:
    counter = Path(settings.VAR_DIR) / f"flaky-{key}"
    attempts = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(attempts + 1))
    if attempts < failures:
        raise ConnectionError(f"attempt {attempts + 1} fails")
    return attempts + 1


@job_task("tests.value_error", description="Always raise ValueError.")
def value_error() -> None:
    raise ValueError("not retried")


@job_task("tests.count_runs", description="Append a line per call, to count real executions.")
def count_runs(key: str, seconds: float = 0) -> int:
    path = Path(settings.VAR_DIR) / f"calls-{key}"
    with path.open("a") as handle:
        handle.write("x\n")
    time.sleep(seconds)
    return 1


@job_task("tests.login", description="Fail to log in, naming the password in the error.")
def login(user: str, password: str) -> None:
    raise ConnectionError(f"cannot log in as {user} with password {password}")


@job_task("tests.nul_error", description="Raise an error whose message holds a NUL character.")
def nul_error() -> None:
    raise RuntimeError("bad byte \x00 in the input")


@job_task(
    "tests.cut_database_connection",
    description="Have PostgreSQL end this process's database connection, then return.",
)
def cut_database_connection() -> str:
    import psycopg
    from django.db import connection

    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    wanted = {
        key: params[key]
        for key in ("dbname", "user", "password", "host", "port")
        if params.get(key)
    }
    with psycopg.connect(**wanted, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    return "cut"


@job_task(description="A Celery task with options of its own, registered as a job task.")
@shared_task(
    name="tests.celery_flaky",
    time_limit=1,
    soft_time_limit=1,
    autoretry_for=(ConnectionError,),
    max_retries=5,
    retry_backoff=False,
)
def celery_flaky(key: str, failures: int, seconds: float = 0) -> int:
    """Sleep, then fail with ConnectionError the first N times (a stock Celery task)."""
    time.sleep(seconds)
    return flaky(key, failures)


@job_task("tests.bound_celery_task")
@shared_task(bind=True, name="tests.bound_celery_task")
def bound_celery_task(self, value: int) -> dict:
    """A bound Celery task: ``self`` is the task, its request is empty (called in process)."""
    return {"value": value, "task": self.name, "called_directly": self.request.called_directly}


@job_task("tests.sleep_with_secret", description="Sleep, holding a secret keyword argument.")
def sleep_with_secret(seconds: float, api_token: str) -> str:
    time.sleep(seconds)
    return "slept"


@job_task("tests.cooperative", description="Report progress each step until cancelled.")
def cooperative(key: str, steps: int = 600, *, run: RunContext) -> dict:
    """Steps of 0.1 s, each reported as progress; stops when its run is cancelled."""
    marker = Path(settings.VAR_DIR) / f"context-{key}"
    marker.write_text(
        json.dumps(
            {
                "job": run.job,
                "execution_id": run.execution_id,
                "scheduled_at": run.scheduled_at.isoformat() if run.scheduled_at else None,
                "attempt": run.attempt,
                "trigger": run.trigger,
                "current": runs.current() is run,
            }
        )
    )
    run.logger.info("starting %d steps", steps)
    for step in range(steps):
        if run.cancelled():
            return {"stopped_at": step}
        run.progress(100 * step / steps, f"step {step} of {steps}")
        time.sleep(0.1)
    return {"stopped_at": steps}


@job_task("tests.async_until_cancelled", description="Await until cancelled (async def).")
async def async_until_cancelled(key: str, seconds: float = 120) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        (Path(settings.VAR_DIR) / f"cancelled-{key}").write_text("CancelledError")
        raise
    return "slept"


@job_task("tests.wait_for_file", description="Say it started, then return once a file exists.")
def wait_for_file(path: str, timeout: float = 120) -> str:
    """Write ``PATH.started``, then wait for ``PATH``: the test decides when it returns."""
    Path(f"{path}.started").write_text("started")
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    return "released"
