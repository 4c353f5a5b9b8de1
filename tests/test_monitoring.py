"""Monitoring: audit trail, job events, statistics, dashboard, alerts and metrics."""

import datetime as dt
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from scheduling import alerts, executions, selectors, services, signals, stats
from scheduling.audit import audit_context
from scheduling.models import Alert, Job, JobChange, JobDailyStats, JobExecution
from tests.factories import make_job

# Run events are sent on commit: these tests commit, as the product does.
pytestmark = pytest.mark.django_db(transaction=True)


def add_run(job, duration, status="success", *, ago=dt.timedelta(minutes=5)):
    started = timezone.now() - ago
    execution = JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="schedule",
        status=status,
        scheduled_at=started - dt.timedelta(seconds=0.5),
        started_at=started,
        finished_at=started + dt.timedelta(seconds=duration),
        duration=duration,
    )
    stats.stats_record(execution=execution)
    return execution


# --- audit trail -------------------------------------------------------------------------------


def test_every_change_is_audited_with_who_how_and_what():
    job = make_job(name="audited", cron_expression="0 0 1 * * *")
    services.job_update(job=job, kwargs={"days": 7})
    with audit_context(source="admin", actor="alice"):
        services.job_pause(job=job)
    call_command("jobs", "resume", "audited", stdout=io.StringIO())
    services.config_import(
        data=[
            {
                "task_id": "audited",
                "task_func": "demo.echo",
                "trigger_type": "cron",
                "trigger_args": {"expression": "0 0 2 * * *"},
            }
        ]
    )
    services.job_remove(job=Job.objects.get(name="audited"))
    changes = list(JobChange.objects.filter(job_name="audited").order_by("at", "pk"))
    assert [(c.action, c.source) for c in changes] == [
        ("added", "api"),
        ("changed", "api"),
        ("paused", "admin"),
        ("resumed", "command"),
        ("changed", "import"),
        ("removed", "api"),
    ]
    assert changes[1].changes == {"kwargs": [{}, {"days": 7}]}
    assert changes[2].actor == "alice"
    assert changes[4].changes["cron_expression"] == ["0 0 1 * * *", "0 0 2 * * *"]
    assert changes[4].changes["kwargs"] == [{"days": 7}, {}]


def test_admin_edits_are_audited_and_shown_on_the_job(admin_client_logged_in):
    job = make_job(name="edited")
    url = reverse("admin:scheduling_job_changelist")
    admin_client_logged_in.post(url, {"action": "pause_jobs", "_selected_action": [job.pk]})
    change = JobChange.objects.get(job=job, action="paused")
    assert (change.source, change.actor) == ("admin", "admin")
    page = admin_client_logged_in.get(reverse("admin:scheduling_job_change", args=[job.pk]))
    assert "paused" in page.content.decode()


# --- events ------------------------------------------------------------------------------------


def test_job_and_run_events_are_sent():
    seen = []

    def receiver(signal, **kwargs):
        seen.append(next(name for name in dir(signals) if getattr(signals, name) is signal))

    names = [
        "job_added",
        "job_changed",
        "job_paused",
        "job_resumed",
        "job_removed",
        "run_started",
        "run_succeeded",
        "run_failed",
        "run_missed",
        "run_skipped",
    ]
    for name in names:
        getattr(signals, name).connect(receiver, dispatch_uid=f"test-{name}")
    try:
        job = make_job(cron_expression="*/1 * * * * *", max_instances=1)
        services.job_update(job=job, description="x")
        services.job_pause(job=job)
        services.job_resume(job=job)
        executions.execution_run(
            job_id=job.pk, trigger="manual", scheduled_at=None, task_id="a", worker="w"
        )
        failing = make_job(task="demo.fail")
        with pytest.raises(RuntimeError):
            executions.execution_run(
                job_id=failing.pk, trigger="manual", scheduled_at=None, task_id="b", worker="w"
            )
        old = timezone.now() - dt.timedelta(minutes=5)
        executions.execution_start(
            job_id=job.pk,
            trigger="schedule",
            scheduled_at=old,
            jitter=0,
            attempt=0,
            task_id="c",
            worker="w",
        )
        running = executions.execution_start(
            job_id=job.pk,
            trigger="manual",
            scheduled_at=None,
            jitter=0,
            attempt=0,
            task_id="d",
            worker="w",
        )
        executions.execution_start(
            job_id=job.pk,
            trigger="manual",
            scheduled_at=None,
            jitter=0,
            attempt=0,
            task_id="e",
            worker="w",
        )
        assert running is not None
        services.job_remove(job=failing)
    finally:
        for name in names:
            getattr(signals, name).disconnect(dispatch_uid=f"test-{name}")
    assert set(seen) == set(names)


# --- statistics --------------------------------------------------------------------------------


def test_job_statistics_over_a_window():
    job = make_job(name="timed")
    for duration in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10):
        add_run(job, duration)
    add_run(job, 100, status="failure")
    add_run(job, 1000, ago=dt.timedelta(days=3))  # outside a day's window
    since, until = selectors.window_bounds(window="day")
    result = selectors.job_statistics(job=job, since=since, until=until)
    assert (result["runs"], result["successes"], result["failures"]) == (11, 10, 1)
    assert result["success_rate"] == pytest.approx(10 / 11, abs=1e-4)
    assert (result["min"], result["max"]) == (1, 100)
    assert result["avg"] == pytest.approx(155 / 11)
    assert result["p50"] == pytest.approx(6)
    assert result["p95"] == pytest.approx(10 + 0.5 * 90)
    assert result["p99"] == pytest.approx(10 + 0.9 * 90)
    assert result["last_status"] == "failure"
    week = selectors.job_statistics(
        job=job,
        **dict(zip(("since", "until"), selectors.window_bounds(window="week"), strict=True)),
    )
    assert week["runs"] == 12


def test_slow_jobs_use_the_job_threshold_or_the_global_one(settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "SLOW_THRESHOLD": 5}
    fast, slow, slower, strict = (make_job(name=n) for n in ("fast", "slow", "slower", "strict"))
    Job.objects.filter(pk=strict.pk).update(slow_threshold=0.5)
    for job, duration in ((fast, 1), (slow, 6), (slower, 9), (strict, 1)):
        add_run(job, duration)
    since, until = selectors.window_bounds(window="hour")
    report = selectors.slow_jobs(since=since, until=until)
    assert [(r["job"], r["threshold"]) for r in report] == [
        ("slower", 5),
        ("slow", 5),
        ("strict", 0.5),
    ]
    assert [r["job"] for r in selectors.slow_jobs(since=since, until=until, threshold=8)] == [
        "slower"
    ]


def test_rollup_follows_the_run_events_and_rebuilds_the_same():
    job = make_job(task="demo.sleep", kwargs={"seconds": 0})
    for _ in range(3):
        executions.execution_run(
            job_id=job.pk, trigger="manual", scheduled_at=timezone.now(), task_id=None, worker="w"
        )
    executions.execution_record_missed(
        job=job, fire_times=[timezone.now() - dt.timedelta(hours=1)], reason="x"
    )
    live = {(r.status, r.count, r.duration_count) for r in JobDailyStats.objects.all()}
    assert live == {("success", 3, 3), ("missed", 1, 0)}
    assert stats.stats_rebuild() == 4
    assert {(r.status, r.count, r.duration_count) for r in JobDailyStats.objects.all()} == live
    days = selectors.outcomes_per_day(days=2)
    assert sum(r["runs"] for r in days if r["status"] == "success") == 3


def test_stats_and_slow_commands(settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "SLOW_THRESHOLD": 2}
    job = make_job(name="cmd-stats")
    add_run(job, 3)
    out = io.StringIO()
    call_command("jobs", "stats", "cmd-stats", "--json", stdout=out)
    assert json.loads(out.getvalue())[0]["runs"] == 1
    out = io.StringIO()
    call_command("jobs", "slow", "--window", "week", stdout=out)
    assert "cmd-stats" in out.getvalue()


def test_statistics_endpoint_needs_staff_and_permission(django_user_model, admin_client_logged_in):
    from django.test import Client

    client = Client()
    job = make_job(name="api-stats")
    add_run(job, 2)
    url = reverse("scheduling-statistics")
    data = admin_client_logged_in.get(url, {"window": "day", "job": "api-stats"}).json()
    assert data["jobs"][0]["runs"] == 1
    assert admin_client_logged_in.get(url, {"window": "fortnight"}).status_code == 400
    assert client.get(url).status_code == 302  # to the login page
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(django_user_model.objects.get(pk=user.pk))
    assert client.get(url).status_code == 200


def test_dashboard_draws_its_charts(admin_client_logged_in):
    job = make_job(name="charted")
    for duration in (1, 2, 3):
        add_run(job, duration)
    add_run(job, 4, status="failure")
    html = admin_client_logged_in.get(
        reverse("admin:scheduling_dashboard"), {"job": "charted"}
    ).content.decode()
    for section in ("slowest", "outcomes", "durations", "upcoming"):
        assert f'id="{section}"' in html
    assert html.count("<svg") >= 3
    assert "charted" in html and 'id="job-stats"' in html
    assert "cdn" not in html.lower()


# --- alerts ------------------------------------------------------------------------------------


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
            executions.execution_run(
                job_id=job.pk, trigger="manual", scheduled_at=None, task_id=task_id, worker="w"
            )
    assert [(p["kind"], p["state"]) for p in posts] == [("failure", "firing")]
    assert len(smtp_sink) == 1 and smtp_sink[0].rcpt_tos == ["ops@example.com"]
    assert b"alerting" in smtp_sink[0].content
    services.job_update(job=job, task="demo.echo", kwargs={})
    executions.execution_run(
        job_id=job.pk, trigger="manual", scheduled_at=None, task_id="ok", worker="w"
    )
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
    executions.execution_record_missed(
        job=job, fire_times=[timezone.now() - dt.timedelta(minutes=1)], reason="beat down"
    )
    executions.execution_run(
        job_id=job.pk, trigger="manual", scheduled_at=None, task_id="s", worker="w"
    )
    kinds = [(p["kind"], p["state"]) for p in posts]
    assert ("missed", "firing") in kinds and ("missed", "resolved") in kinds
    assert ("slow", "firing") in kinds


def test_dead_mans_switch_fires_when_no_run_succeeds_in_time(webhook):
    url, posts = webhook
    job = make_job(
        name="heartbeat", cron_expression="0 */1 * * * *", alert_webhooks=url, alert_grace=30
    )
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - dt.timedelta(minutes=10))
    add_run(job, 0.1, ago=dt.timedelta(minutes=5))
    assert alerts.deadman_check() == ["heartbeat"]
    assert posts[-1]["kind"] == "deadman" and posts[-1]["state"] == "firing"
    assert alerts.deadman_check() == ["heartbeat"]
    assert len(posts) == 1  # on state change only
    executions.execution_run(
        job_id=job.pk, trigger="manual", scheduled_at=None, task_id="r", worker="w"
    )
    assert posts[-1]["kind"] == "deadman" and posts[-1]["state"] == "resolved"
    assert alerts.deadman_check() == []


def test_a_failed_delivery_is_kept_in_the_history(webhook):
    job = make_job(name="unreachable", task="demo.fail", alert_webhooks="http://127.0.0.1:9/none")
    with pytest.raises(RuntimeError):
        executions.execution_run(
            job_id=job.pk, trigger="manual", scheduled_at=None, task_id="x", worker="w"
        )
    alert = Alert.objects.get(job=job)
    assert alert.deliveries[0]["ok"] is False and "error" in alert.deliveries[0]


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_are_restricted_and_expose_runs_durations_and_beat(client, settings):
    job = make_job(name="metered")
    add_run(job, 0.3)
    add_run(job, 2, status="failure")
    url = reverse("scheduling-metrics")
    assert client.get(url).status_code == 403
    settings.SCHEDULING = {**settings.SCHEDULING, "METRICS_TOKEN": "s3cret"}
    assert client.get(url, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    body = client.get(url, HTTP_AUTHORIZATION="Bearer s3cret").content.decode()
    assert 'scheduled_job_runs_total{job="metered",outcome="success"} 1.0' in body
    assert 'scheduled_job_runs_total{job="metered",outcome="failure"} 1.0' in body
    assert 'scheduled_job_duration_seconds_bucket{job="metered",le="0.5"} 1.0' in body
    assert 'scheduled_job_duration_seconds_count{job="metered"} 2.0' in body
    assert 'scheduled_job_lateness_seconds_count{job="metered"} 2.0' in body
    assert "scheduler_queue_length" in body


def test_metrics_with_a_non_ascii_authorization_header_is_forbidden(client, settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "METRICS_TOKEN": "s3cret"}
    url = reverse("scheduling-metrics")
    assert client.get(url, HTTP_AUTHORIZATION="Bearer s3crét").status_code == 403
    assert client.get(url, HTTP_AUTHORIZATION="Bearer \udcff").status_code == 403


@pytest.mark.parametrize(
    "query",
    [
        {"since": "2026-11-01"},
        {"since": "2026-11-01T00:00:00"},
        {"since": "2026-11-01T00:00:00+08:00", "until": "2026-11-02"},
    ],
)
def test_statistics_refuse_a_date_without_a_timezone(admin_client_logged_in, query):
    page = admin_client_logged_in.get(reverse("scheduling-statistics"), query)
    assert page.status_code == 400
    error = page.json()["error"]
    name = "until" if "until" in query else "since"
    assert error.startswith(f"{name}:") and "timezone offset" in error


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"threshold": "fast"},
    ],
)
def test_statistics_answer_odd_input_with_400_naming_the_parameter(admin_client_logged_in, query):
    page = admin_client_logged_in.get(reverse("scheduling-statistics"), query)
    assert page.status_code == 400
    assert page.json()["error"].startswith(f"{next(iter(query))}:")


def test_stats_command_refuses_a_date_without_a_timezone():
    with pytest.raises(CommandError, match=r"since: .*timezone offset"):
        call_command("jobs", "stats", "--since", "2026-11-01", stdout=io.StringIO())
