"""Alert webhooks: only public http(s) receivers, no redirects, delivered off the run's path."""

import datetime as dt
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from scheduling import runs, services
from scheduling.config import ConfigError
from scheduling.models import Alert
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)
LOOPBACK = {"WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"]}


class Receiver(BaseHTTPRequestHandler):
    """Answers each POST by the server's ``script``: a list of (status, delay, headers)."""

    def do_POST(self):
        self.server.hits.append((self.path, self.headers.get("Host")))
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(json.loads(body))
        status, delay, headers = self.server.script.pop(0) if self.server.script else (204, 0, {})
        time.sleep(delay)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.hits, server.bodies, server.script = [], [], []
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture
def allow(settings):
    """Set app settings for one test (the SCHEDULING dict, merged)."""

    def set_(**values):
        settings.SCHEDULING = {**settings.SCHEDULING, **values}

    return set_


@pytest.fixture
def queued(monkeypatch):
    """Deliveries queued instead of sent to the broker: the alert ids, in order."""
    from scheduling.alert_tasks import deliver_alert

    ids = []
    monkeypatch.setattr(deliver_alert, "apply_async", lambda kwargs, **_: ids.append(kwargs))
    return ids


def failing_job(url: str, **fields):
    job = make_job(task="demo.fail", alert_webhooks=url, **fields)
    with pytest.raises(RuntimeError):
        runs.execution_run(
            job_id=job.pk, trigger="manual", scheduled_at=None, task_id=f"t{job.pk}", worker="w"
        )
    return job, Alert.objects.get(job=job)


# --- refused when saved --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/hook",
        "gopher://example.com/",
        "http://127.0.0.1:8000/admin/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://192.168.1.1/",
        "http://0.0.0.0:5432/",
        "http://[::1]:6379/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http:///no-host",
    ],
)
def test_a_job_refuses_webhooks_that_are_not_public_http(url):
    with pytest.raises(ValidationError) as caught:
        make_job(alert_webhooks=f"https://hooks.example.com/ok\n{url}")
    assert list(caught.value.message_dict) == ["alert_webhooks"]
    assert url in " ".join(caught.value.message_dict["alert_webhooks"])


def test_public_and_allow_listed_webhooks_are_accepted(allow):
    make_job(alert_webhooks="https://hooks.example.com/a\nhttp://93.184.216.34:8080/b")
    with pytest.raises(ValidationError):
        make_job(alert_webhooks="http://10.1.2.3/hook")
    allow(WEBHOOK_ALLOWED_NETWORKS=["10.0.0.0/8"])
    make_job(alert_webhooks="http://10.1.2.3/hook")


def test_the_admin_form_and_an_import_name_the_field_and_the_url(admin_client):
    from tests.test_admin import form_data

    page = admin_client.post(
        reverse("admin:scheduling_job_add"),
        form_data(name="ssrf", alert_webhooks="http://169.254.169.254/latest/meta-data/"),
    )
    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert "http://169.254.169.254/latest/meta-data/" in " ".join(errors["alert_webhooks"])
    entry = {
        "task_id": "imported",
        "task_func": "demo.echo",
        "trigger_type": "cron",
        "trigger_args": {"expression": "0 0 * * * *"},
        "options": {"alert_webhooks": "file:///etc/passwd"},
    }
    with pytest.raises(ConfigError, match=r"alert_webhooks: file:///etc/passwd"):
        services.config_import(data=[entry])


# --- checked again when delivered ----------------------------------------------------------


def test_a_loopback_receiver_is_refused_without_the_allow_list(receiver, allow, queued):
    from scheduling import deliveries

    url = f"http://localhost:{receiver.server_port}/hook"  # a name: resolved at delivery
    _job, alert = failing_job(url)
    assert deliveries.alert_deliver(alert_id=alert.pk) is None  # refused for good
    alert.refresh_from_db()
    assert receiver.hits == []
    [attempt] = alert.deliveries
    assert attempt["ok"] is False and attempt["final"] is True
    assert "127.0.0.1" in attempt["error"] or "::1" in attempt["error"]

    allow(WEBHOOK_ALLOWED_NETWORKS=["127.0.0.0/8", "::1/128"])
    _job, alert = failing_job(url)
    assert deliveries.alert_deliver(alert_id=alert.pk) is None
    alert.refresh_from_db()
    assert [h[0] for h in receiver.hits] == ["/hook"]
    assert alert.deliveries[0]["ok"] is True and alert.deliveries[0]["status"] == 204
    assert receiver.bodies[0]["kind"] == "failure"


def test_a_name_is_refused_when_any_address_it_resolves_to_is_private(monkeypatch, queued):
    from scheduling import webhooks

    def resolve(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(webhooks.WebhookRefused, match=r"169\.254\.169\.254"):
        webhooks.webhook_post(url="http://hooks.example.com/", body=b"{}", timeout=1)


def test_delivery_connects_to_the_address_it_checked(receiver, monkeypatch, allow, queued):
    """DNS rebinding: a second lookup would answer a private address; there is none."""
    from scheduling import webhooks

    allow(WEBHOOK_ALLOWED_NETWORKS=["127.0.0.1/32"])
    answers = ["127.0.0.1", "10.9.9.9"]
    lookups = []

    def resolve(host, port, *args, **kwargs):
        lookups.append(host)
        address = answers[min(len(lookups), 2) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    url = f"http://hooks.example.com:{receiver.server_port}/hook"
    assert webhooks.webhook_post(url=url, body=b"{}", timeout=2) == 204
    assert lookups == ["hooks.example.com"]
    assert receiver.hits == [("/hook", f"hooks.example.com:{receiver.server_port}")]


def test_redirects_are_not_followed(receiver, allow, queued):
    from scheduling import deliveries

    allow(**LOOPBACK)
    internal = f"http://127.0.0.1:{receiver.server_port}/internal"
    receiver.script = [(302, 0, {"Location": internal}), (307, 0, {"Location": internal})]
    _job, alert = failing_job(f"http://127.0.0.1:{receiver.server_port}/hook")
    assert deliveries.alert_deliver(alert_id=alert.pk) is None
    alert.refresh_from_db()
    assert [h[0] for h in receiver.hits] == ["/hook"]
    [attempt] = alert.deliveries
    assert attempt["status"] == 302 and attempt["ok"] is False and attempt["final"] is True


# --- retries, backoff, deadline -------------------------------------------------------------


def test_a_failed_delivery_is_retried_with_backoff_and_each_attempt_recorded(
    receiver, allow, queued
):
    from scheduling import deliveries

    allow(**LOOPBACK, WEBHOOK_RETRY_BACKOFF=2.0, WEBHOOK_RETRY_BACKOFF_MAX=5.0)
    assert [deliveries.retry_countdown(attempt=n) for n in range(4)] == [2.0, 4.0, 5.0, 5.0]
    receiver.script = [(500, 0, {}), (503, 0, {})]
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    _job, alert = failing_job(url)
    assert queued == [{"alert_id": alert.pk}]
    assert deliveries.alert_deliver(alert_id=alert.pk, attempt=0) == 2.0
    assert deliveries.alert_deliver(alert_id=alert.pk, attempt=1) == 4.0
    assert deliveries.alert_deliver(alert_id=alert.pk, attempt=2) is None  # 204: done
    assert deliveries.alert_deliver(alert_id=alert.pk, attempt=3) is None  # nothing left
    alert.refresh_from_db()
    assert [(d["attempt"], d["ok"], d["status"]) for d in alert.deliveries] == [
        (1, False, 500),
        (2, False, 503),
        (3, True, 204),
    ]
    assert len(receiver.hits) == 3


def test_delivery_gives_up_after_the_retries_or_the_deadline(allow, queued, monkeypatch):
    from scheduling import deliveries, webhooks

    def refused(**kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(webhooks, "webhook_post", refused)
    allow(WEBHOOK_RETRIES=1, WEBHOOK_DEADLINE=60)
    _job, alert = failing_job("https://hooks.example.com/down")
    Alert.objects.filter(pk=alert.pk).update(created_at=timezone.now())
    assert deliveries.alert_deliver(alert_id=alert.pk, attempt=0) == 2.0
    assert deliveries.alert_deliver(alert_id=alert.pk, attempt=1) is None  # retries used up
    Alert.objects.filter(pk=alert.pk).update(
        created_at=timezone.now() - dt.timedelta(seconds=59), deliveries=[]
    )
    assert deliveries.alert_deliver(alert_id=alert.pk, attempt=0) is None  # past the deadline


# --- off the run's path ----------------------------------------------------------------------


def test_a_run_does_not_wait_for_a_slow_receiver(receiver, allow, queued):
    allow(**LOOPBACK)
    receiver.script = [(204, 4, {})]
    started = time.monotonic()
    job, alert = failing_job(f"http://127.0.0.1:{receiver.server_port}/hook")
    assert time.monotonic() - started < 2
    assert job.executions.get().status == "failure"
    assert queued == [{"alert_id": alert.pk}] and alert.deliveries == []


def test_deliveries_have_their_own_queue_that_a_plain_worker_consumes():
    from project.celery import app

    assert {queue.name for queue in app.conf.task_queues} == {"celery", "alerts"}
    router = app.amqp.router
    assert router.route({}, "scheduling.deliver_alert")["queue"].name == "alerts"
    assert router.route({}, "scheduling.run_job")["queue"].name == "celery"
    assert "scheduling.deliver_alert" in app.tasks


def test_the_alert_page_shows_each_delivery_attempt(admin_client, allow, queued):
    from scheduling import deliveries

    allow(WEBHOOK_ALLOWED_NETWORKS=[])
    _job, alert = failing_job("http://localhost:1/hook")
    deliveries.alert_deliver(alert_id=alert.pk)
    page = admin_client.get(reverse("admin:scheduling_alert_change", args=[alert.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "http://localhost:1/hook" in html and "not a public address" in html
