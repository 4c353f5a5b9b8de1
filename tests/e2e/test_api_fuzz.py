"""The REST API under a fuzzer: schemathesis against the real web server (a separate
process on the test database), every operation (jobs, job groups, runs, backfills...),
with a key that may do everything.

No answer is a 5xx, every answer's status, content type, headers and body conform to
the schema at ``/api/v1/schema/``. Examples per operation are bounded
(``API_FUZZ_MAX_EXAMPLES``, default 6); schemathesis' coverage phase, which does not
follow that bound, makes most of the ~1,800 requests (about 3 minutes on a busy 2-core
machine).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from scheduling import services
from scheduling.models import JobGroup
from tests.e2e.configs import NOT_ON_AMQP
from tests.e2e.processes import ROOT, database_url
from tests.factories import make_finished_run, make_job, make_running, make_waiting

pytestmark = [pytest.mark.e2e, NOT_ON_AMQP]

MAX_EXAMPLES = int(os.environ.get("API_FUZZ_MAX_EXAMPLES", "6"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web_server(transactional_db, tmp_path):
    """``manage.py runserver`` on the test database; its base URL. PostgreSQL only: the
    run takes minutes, and the issue asks for it there."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the API fuzz run is on PostgreSQL")
    port = _free_port()
    log = open(tmp_path / "web.log", "w")  # noqa: SIM115 - closed with the process
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "DJANGO_DEBUG": "1",
            "SCHEDULING_API_RATE": "1000000/minute",
            "SCHEDULING_EXTRA_JOB_MODULES": "tests.jobs",
            "PYTHONUNBUFFERED": "1",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/v1/schema/", timeout=5).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "web.log").read_text()) from None
            time.sleep(0.3)
    yield base
    server.terminate()
    server.wait(timeout=20)
    log.close()


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(web_server, tmp_path):
    jobs = [make_job(name=f"fuzz-{n}", group=f"fuzz-group-{n % 2}") for n in range(5)]
    JobGroup.objects.create(name="fuzz-empty", max_instances=2, queue="fuzz")
    groups = ["fuzz-group-0", "fuzz-group-1", "fuzz-empty"]
    runs = [make_finished_run(jobs[0], 1.5), make_running(jobs[1]), make_waiting(jobs[2])]
    _key, raw = services.api_key_create(name="fuzzer", privileges=["read", "run", "pause", "edit"])
    idents = [job.name for job in jobs] + [str(job.pk) for job in jobs]
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[dictionaries.jobs]\n"
        f"values = [{', '.join(repr(i).replace(chr(39), chr(34)) for i in idents)}]\n"
        "[dictionaries.runs]\n"
        f"values = [{', '.join(str(run.pk) for run in runs)}]\n"
        "[dictionaries.groups]\n"
        f"values = [{', '.join(f'{chr(34)}{name}{chr(34)}' for name in groups)}]\n"
        "[parameters]\n"
        '"path.job" = { dictionary = "jobs", probability = 0.7 }\n'
        '"path.name" = { dictionary = "groups", probability = 0.7 }\n'
        '"path.id" = { dictionary = "runs", probability = 0.7 }\n'
    )
    started = time.monotonic()
    result = subprocess.run(
        [
            shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis",
            "--config-file",
            str(config),
            "run",
            f"{web_server}/api/v1/schema/",
            "--header",
            f"Authorization: Bearer {raw}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_headers_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            # One worker: with two threads, hypothesis' lambda descriptions call ast.parse
            # at the same time, which CPython 3.11 can fail ("AST constructor recursion
            # depth mismatch"), a crash of the fuzzer, not an answer of the API.
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--seed",
            "20261201",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.log").write_text(output)
    log = (tmp_path / "web.log").read_text()
    assert result.returncode == 0, output[-20000:] + "\n--- server log ---\n" + log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    print(output[-1500:], f"\nschemathesis took {elapsed:.0f}s")
