"""Alerts on failure, missed and slow runs and the dead man's switch, by e-mail and webhook."""

import datetime as dt
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.utils import timezone

from scheduling import alerts, runs, services
from scheduling.models import Alert, Job
from tests.factories import make_finished_run, make_job

pytestmark = pytest.mark.django_db(transaction=True)


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def deliver_in_process(settings):
    """Run the alerts queue's delivery task in this process, as soon as it is queued."""
    from project.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def webhook(settings, deliver_in_process):
    """A receiver on 127.0.0.1, allowed as an intranet webhook receiver."""
    settings.SCHEDULING = {**settings.SCHEDULING, "WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"]}
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Receiver.received
    server.shutdown()


@pytest.fixture
def smtp_sink(settings):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    class Collect(Sink):
        messages: list = []

        async def handle_DATA(self, server, session, envelope):
            Collect.messages.append(envelope)
            return "250 OK"

    Collect.messages = []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    yield Collect.messages
    controller.stop()


def test_failure_alerts_once_then_recovers_by_email_and_webhook(webhook, smtp_sink):
    url, posts = webhook
    job = make_job(
        name="alerting",
        task="tests.flaky",
        kwargs={"key": "alert", "failures": 99},
        alert_emails="ops@example.com",
        alert_webhooks=url,
    )
    for task_id in ("f1", "f2", "f3"):
        with pytest.raises(ConnectionError):
            runs.execution_run(
                job_id=job.pk, trigger="manual", scheduled_at=None, task_id=task_id, worker="w"
            )
    assert [(p["kind"], p["state"]) for p in posts] == [("failure", "firing")]
    assert len(smtp_sink) == 1 and smtp_sink[0].rcpt_tos == ["ops@example.com"]
    assert b"alerting" in smtp_sink[0].content
    services.job_update(job=job, task="demo.echo", kwargs={})
    runs.execution_run(job_id=job.pk, trigger="manual", scheduled_at=None, task_id="ok", worker="w")
    assert [(p["kind"], p["state"]) for p in posts] == [
        ("failure", "firing"),
        ("failure", "resolved"),
    ]
    assert len(smtp_sink) == 2
    history = list(Alert.objects.filter(job=job).order_by("created_at"))
    assert [a.state for a in history] == ["firing", "resolved"]
    assert all(d["ok"] for a in history for d in a.deliveries)


def test_missed_and_slow_runs_alert(webhook, settings):
    url, posts = webhook
    job = make_job(
        name="watched",
        task="demo.sleep",
        kwargs={"seconds": 0.2},
        alert_webhooks=url,
        slow_threshold=0.1,
    )
    runs.execution_record_missed(
        job=job, fire_times=[timezone.now() - dt.timedelta(minutes=1)], reason="beat down"
    )
    runs.execution_run(job_id=job.pk, trigger="manual", scheduled_at=None, task_id="s", worker="w")
    kinds = [(p["kind"], p["state"]) for p in posts]
    assert ("missed", "firing") in kinds and ("missed", "resolved") in kinds
    assert ("slow", "firing") in kinds


def test_dead_mans_switch_fires_when_no_run_succeeds_in_time(webhook):
    url, posts = webhook
    job = make_job(
        name="heartbeat", cron_expression="0 */1 * * * *", alert_webhooks=url, alert_grace=30
    )
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - dt.timedelta(minutes=10))
    make_finished_run(job, 0.1, ago=dt.timedelta(minutes=5))
    assert alerts.deadman_check() == ["heartbeat"]
    assert posts[-1]["kind"] == "deadman" and posts[-1]["state"] == "firing"
    assert alerts.deadman_check() == ["heartbeat"]
    assert len(posts) == 1  # on state change only
    runs.execution_run(job_id=job.pk, trigger="manual", scheduled_at=None, task_id="r", worker="w")
    assert posts[-1]["kind"] == "deadman" and posts[-1]["state"] == "resolved"
    assert alerts.deadman_check() == []


def test_a_failed_delivery_is_kept_in_the_history(webhook):
    job = make_job(name="unreachable", task="demo.fail", alert_webhooks="http://127.0.0.1:9/none")
    with pytest.raises(RuntimeError):
        runs.execution_run(
            job_id=job.pk, trigger="manual", scheduled_at=None, task_id="x", worker="w"
        )
    alert = Alert.objects.get(job=job)
    assert alert.deliveries[0]["ok"] is False and "error" in alert.deliveries[0]


def test_an_outage_raises_one_missed_alert_naming_its_count(webhook):
    from scheduling.runs.rules import Missed

    url, posts = webhook
    job = make_job(
        name="interval-watched",
        trigger_type="interval",
        interval_every=10,
        interval_period="seconds",
        alert_webhooks=url,
    )
    before = job.next_run_at
    [summary] = runs.execution_record_missed_summaries(
        missed=[(job, job.trigger(), Missed(first=before - dt.timedelta(hours=1), before=before))],
        reason="Not sent: beat was down.",
    )
    runs.announce(summary)
    [alert] = Alert.objects.filter(job=job, kind="missed")
    assert "missed 360 fire times" in alert.message
    assert [(p["kind"], p["state"]) for p in posts] == [("missed", "firing")]
