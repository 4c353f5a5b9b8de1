"""Operating the product with real processes: Flower's live view and the maintenance jobs."""

import ast
import datetime as dt
import io
import json
import re
import socket
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command

from scheduling import maintenance, services
from scheduling.models import Alert, BeatHeartbeat, Job, JobExecution
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_flower_shows_the_worker_and_a_running_job(celery_processes):
    make_job(task="demo.sleep", cron_expression="*/2 * * * * *", kwargs={"seconds": 1})
    flower = celery_processes.start_flower(free_port())
    celery_processes.start_worker()
    celery_processes.start_beat()

    workers = wait_for(
        lambda: (w := get_json(f"{flower}/api/workers?refresh=1")) and "w1@e2e" in w and w,
        timeout=60,
        what="Flower to list the worker",
        processes=celery_processes,
    )
    assert workers["w1@e2e"]["stats"]["pool"]["max-concurrency"] == 2

    def our_tasks():
        # Shown under the job's task name, with the job's own arguments.
        tasks = get_json(f"{flower}/api/tasks?taskname=demo.sleep") or {}
        return [t for t in tasks.values() if t.get("kwargs") == "{'seconds': 1}"]

    tasks = wait_for(
        lambda: (t := our_tasks()) and any(x["state"] == "SUCCESS" for x in t) and t,
        timeout=60,
        what="Flower to show the job's runs",
        processes=celery_processes,
    )
    done = next(t for t in tasks if t["state"] == "SUCCESS")
    assert done["worker"] == "w1@e2e"
    assert done["runtime"] >= 1.0
    assert JobExecution.objects.filter(task_result_id=done["uuid"], status="success").exists()


def test_flower_shows_each_run_as_its_job_with_its_secrets_masked(celery_processes):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    running = make_job(
        task="tests.sleep_with_secret",
        cron_expression="0 0 0 1 1 *",
        kwargs={"seconds": 30, "api_token": secret},
    )
    failing = make_job(
        task="tests.login",
        cron_expression="0 0 0 1 1 *",
        kwargs={"user": "ops", "password": secret},
    )
    flower = celery_processes.start_flower(free_port())
    celery_processes.start_worker()
    wait_for(
        lambda: (w := get_json(f"{flower}/api/workers?refresh=1")) and "w1@e2e" in w,
        timeout=60,
        what="Flower to list the worker",
        processes=celery_processes,
    )
    running_id = services.job_run_now(job=running)
    failing_id = services.job_run_now(job=failing)

    def shown():
        tasks = get_json(f"{flower}/api/tasks") or {}
        states = (tasks.get(running_id, {}).get("state"), tasks.get(failing_id, {}).get("state"))
        return states == ("STARTED", "FAILURE") and tasks

    tasks = wait_for(
        shown, timeout=60, what="Flower to show one run going and one failed",
        processes=celery_processes,
    )  # fmt: skip
    going, failed = tasks[running_id], tasks[failing_id]
    assert (going["name"], going["args"]) == ("tests.sleep_with_secret", "()")
    assert ast.literal_eval(going["kwargs"]) == {"seconds": 30, "api_token": "********"}
    assert failed["name"] == "tests.login"
    assert ast.literal_eval(failed["kwargs"]) == {"user": "ops", "password": "********"}
    assert "cannot log in as ops with password ********" in failed["exception"]
    answers = [
        tasks,
        get_json(f"{flower}/api/task/info/{running_id}"),
        get_json(f"{flower}/api/task/info/{failing_id}"),
        get_json(f"{flower}/api/task/result/{failing_id}"),
        get_json(f"{flower}/api/workers?refresh=1"),
        get_json(f"{flower}/api/task/types"),
    ]
    assert answers[1]["name"] == "tests.sleep_with_secret"
    assert secret not in json.dumps(answers)
    # The worker's own log names the runs by their task, and keeps the secret out too.
    log = celery_processes.log("w1")
    assert f"tests.login[{failing_id}]" in log and secret not in log


def test_health_check_job_passes_with_beat_and_a_worker_running(celery_processes, settings):
    services.defaults_install()
    celery_processes.start_worker()
    celery_processes.start_beat()
    wait_for(
        BeatHeartbeat.objects.exists,
        timeout=30,
        what="beat's heartbeat",
        processes=celery_processes,
    )
    task_id = services.job_run_now(job=Job.objects.get(name="health_check"))
    run = wait_for(
        lambda: (
            JobExecution.objects.filter(task_result_id=task_id).exclude(status="running").first()
        ),
        timeout=60,
        what="the health check run",
        processes=celery_processes,
    )
    assert run.status == "success", run.exception
    report = json.loads(run.result)
    assert [c["check"] for c in report["checks"]] == [
        "database",
        "broker",
        "workers",
        "beat",
        "disk",
        "memory",
    ]
    assert all(c["ok"] for c in report["checks"])

    celery_processes.stop("beat")
    # With beat gone the heartbeat goes stale; the check must say so.
    settings.SCHEDULING = {**settings.SCHEDULING, "HEALTH_BEAT_MAX_SILENCE": 0}
    with pytest.raises(maintenance.HealthCheckFailed, match="beat last ticked"):
        maintenance.health_check(checks=["beat"])


def test_run_command_waits_for_the_outcome(celery_processes):
    make_job(name="cli", task="demo.sleep", cron_expression="0 0 0 1 1 *", kwargs={"seconds": 0.2})
    celery_processes.start_worker()
    out = io.StringIO()
    call_command("jobs", "run", "cli", "--wait", "--timeout", "60", "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert result["status"] == "success" and result["duration"] >= 0.2
    assert result["trigger"] == "manual" and result["worker"] == "w1@e2e"


class HangingOnce(BaseHTTPRequestHandler):
    """An alert receiver that hangs 10 s on its first POST and answers later ones at once."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append(time.monotonic())
        if len(self.server.posts) == 1:
            time.sleep(10)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_hanging_webhook_receiver_never_holds_up_a_run(celery_processes, settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), HangingOnce)
    server.daemon_threads, server.posts = True, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.SCHEDULING = {**settings.SCHEDULING, "WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"]}
    job = make_job(
        task="demo.sleep",
        cron_expression="0 0 0 1 1 *",
        kwargs={"seconds": 0.2},
        slow_threshold=0.1,  # the run's success raises a slow-run alert
        alert_webhooks=f"http://127.0.0.1:{server.server_port}/hook",
    )
    celery_processes.start_worker(
        env={
            "SCHEDULING_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "SCHEDULING_WEBHOOK_TIMEOUT": "2",
            "SCHEDULING_WEBHOOK_RETRY_BACKOFF": "1",
        }
    )
    try:
        task_id = services.job_run_now(job=job)
        run = wait_for(
            lambda: JobExecution.objects.filter(task_result_id=task_id, status="success").first(),
            timeout=60,
            what="the run to be recorded",
            processes=celery_processes,
        )
        # The run's task ends with the run, not with the delivery of its alert.
        runtime = wait_for(
            lambda: re.search(
                rf"demo\.sleep\[{task_id}\] succeeded in ([\d.]+)s", celery_processes.log("w1")
            ),
            timeout=30,
            what="the worker to log the run's end",
            processes=celery_processes,
        )
        assert float(runtime.group(1)) < 1.5, celery_processes.log("w1")
        alert = wait_for(
            lambda: (
                (a := Alert.objects.filter(job=job, kind="slow").first())
                and any(d["ok"] for d in a.deliveries)
                and a
            ),
            timeout=60,
            what="the alert to be delivered on a later attempt",
            processes=celery_processes,
        )
    finally:
        server.shutdown()
    first, *later = alert.deliveries
    assert first["ok"] is False and "timed out" in first["error"].lower()
    assert later[-1]["ok"] is True and later[-1]["attempt"] >= 2
    assert dt.datetime.fromisoformat(first["at"]) > run.finished_at  # delivered after it
    assert len(server.posts) >= 2
