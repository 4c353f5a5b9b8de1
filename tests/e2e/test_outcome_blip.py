"""A run's outcome survives PostgreSQL going away between the function's return and the
finish: a real worker on a PostgreSQL server of the test's own, stopped while the function
runs and started again after it has returned (issue 21, item 3).

The server is the test's own (``benchmarks.soak.Servers``: ``initdb`` in a temporary
directory, on a free port), so stopping it disturbs nothing else on the machine.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.soak import Servers, pg_bin
from tests.e2e.processes import ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        pg_bin() is None or not (pg_bin() / "initdb").exists(),
        reason="needs PostgreSQL's server binaries (initdb, pg_ctl)",
    ),
    # Its servers are its own, whatever the suite's configuration: run it once, with the
    # embedded one.
    pytest.mark.skipif(
        bool(os.environ.get("DATABASE_URL")), reason="runs in the embedded configuration"
    ),
]


def _wait(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")


def _rows(servers: Servers, sql: str, *params):
    import psycopg

    try:
        with psycopg.connect(servers.database_url, connect_timeout=3) as db:
            return db.execute(sql, params).fetchall()
    except psycopg.OperationalError:
        return None


@pytest.fixture
def own_servers():
    servers = Servers(keep=False)
    servers.start()
    yield servers
    servers.stop()


def test_an_outcome_is_recorded_when_postgres_was_down_as_the_function_returned(
    own_servers, tmp_path
):
    env = {
        **os.environ,
        "DATABASE_URL": own_servers.database_url,
        "CELERY_BROKER_URL": own_servers.redis_url,
        "SCHEDULING_EXTRA_JOB_MODULES": "tests.jobs",
        "VAR_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
        "C_FORCE_ROOT": "1",
    }

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    manage("migrate", "-v", "0")
    release = tmp_path / "release"
    manage(
        "jobs", "add", "blip", "--task", "tests.wait_for_file",
        "--kwargs", json.dumps({"path": str(release)}), "--at", "2099-01-01 00:00:00",
    )  # fmt: skip
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "project", "worker", "-l", "info", "-c", "1",
         "-n", "blip@e2e", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        manage("jobs", "run", "blip")
        _wait(lambda: Path(f"{release}.started").exists(), 90, "the function to start", log)

        # PostgreSQL goes away while the function runs; the function then returns.
        own_servers.pg_stop()
        release.write_text("go")
        time.sleep(4)  # the function has returned; the finish finds no database
        own_servers.pg_start()

        def finished():
            rows = _rows(
                own_servers,
                "SELECT e.status, e.result, r.status FROM scheduling_jobexecution e "
                "LEFT JOIN django_celery_results_taskresult r ON r.task_id = e.task_id "
                "JOIN scheduling_job j ON j.id = e.job_id WHERE j.name = 'blip'",
            )
            return rows if rows and rows[0][0] != "running" else None

        rows = _wait(finished, 150, "the run to be recorded after PostgreSQL came back", log)
        assert rows == [("success", '"released"', "SUCCESS")], rows
        job = _rows(
            own_servers,
            "SELECT last_status, total_run_count FROM scheduling_job WHERE name = 'blip'",
        )
        assert job == [("success", 1)]
        stats = _rows(
            own_servers,
            "SELECT s.status, s.count FROM scheduling_jobdailystats s "
            "JOIN scheduling_job j ON j.id = s.job_id WHERE j.name = 'blip'",
        )
        assert stats == [("success", 1)]
        # Nothing was reaped as lost, and the worker serves on.
        release.unlink()
        Path(f"{release}.started").unlink()
        manage("jobs", "run", "blip")
        release.write_text("go")
        _wait(
            lambda: (_rows(
                own_servers,
                "SELECT count(*) FROM scheduling_jobexecution WHERE status = 'success'",
            ) or [(0,)])[0][0] == 2,
            90,
            "a second run after the blip",
            log,
        )  # fmt: skip
        statuses = _rows(own_servers, "SELECT status FROM scheduling_jobexecution")
        assert sorted(s for (s,) in statuses) == ["success", "success"]
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
