"""Start real Celery beat and worker processes against the test database and broker."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from project.celery import app

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the database this test runs on (the test database, not the real one)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


class CeleryProcesses:
    """A beat and workers as separate OS processes; their logs go to ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "SCHEDULING_EXTRA_JOB_MODULES": "tests.jobs",  # the test-only job tasks
            "PYTHONUNBUFFERED": "1",
            "C_FORCE_ROOT": "1",
        }

    def _start(
        self,
        name: str,
        args: list[str],
        extra_env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "celery", "-A", "project", *args],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(
        self,
        name: str = "w1",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        queues: list[str] | None = None,
        pool: str | None = None,
    ) -> str:
        """Start a worker; ``queues``: the queues it consumes (``-Q``; default: those of
        ``CELERY_TASK_QUEUES``); ``pool``: its pool (``-P``; default: prefork)."""
        hostname = f"{name}@e2e"
        self._start(
            name,
            [
                "worker",
                "-l",
                "info",
                "-c",
                str(concurrency),
                "-n",
                hostname,
                "--without-mingle",
                "--without-gossip",
                *(["-Q", ",".join(queues)] if queues else []),
                *(["-P", pool] if pool else []),
            ],
            extra_env=env,
        )
        wait_for(
            lambda: hostname in _ping(),
            timeout=60,
            what=f"worker {hostname} to answer a ping",
            processes=self,
        )
        return hostname

    def start_beat(
        self,
        name: str = "beat",
        ready: bool = False,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        """Start a beat; with ``ready``, return once it has made its first pass. ``prefix``
        goes before the command (e.g. ``ip netns exec NAME``, which execs it: same pid)."""
        self._start(name, ["beat", "-l", "info", "--pidfile="], extra_env=env, prefix=prefix)
        if ready:
            from scheduling.models import BeatHeartbeat

            beat_name = f"{socket.gethostname()}:{self.procs[name].pid}"
            wait_for(
                lambda: BeatHeartbeat.objects.filter(name=beat_name).exists(),
                timeout=60,
                what=f"beat {name} to make its first pass",
                processes=self,
            )

    def start_flower(self, port: int) -> str:
        self._start(
            "flower",
            ["flower", "--address=127.0.0.1", f"--port={port}"],
            extra_env={"FLOWER_UNAUTHENTICATED_API": "1"},
        )
        return f"http://127.0.0.1:{port}"

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        """Kill every process group at once: a test's teardown needs no warm shutdown."""
        for name in list(self.procs):
            self.stop(name, sig=signal.SIGKILL)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text()[-5000:] if path.exists() else ""


def reset_broker_connections() -> None:
    """Drop the test process's pooled broker connections (after a broker restart)."""
    from kombu import pools

    pools.reset()  # closes and forgets kombu's pools
    app._pool = None  # Celery builds a fresh pool on next use
    app.amqp._producer_pool = None


def _ping() -> set[str]:
    """Names of the workers that answer; a broker that restarted under us is reconnected."""
    try:
        return {name for reply in app.control.ping(timeout=0.5) for name in reply}
    except Exception:
        reset_broker_connections()
        return set()


def wait_for(
    condition: Callable[[], object],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    processes: CeleryProcesses | None = None,
):
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if processes is not None:
            processes.check_alive()
        if time.monotonic() > deadline:
            logs = (
                "\n".join(f"--- {n}\n{processes.log(n)}" for n in processes.procs)
                if processes
                else ""
            )
            raise AssertionError(f"Timed out after {timeout}s waiting for {what}\n{logs}")
        time.sleep(interval)
