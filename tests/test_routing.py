"""Where a job's runs go and how Celery shows them: queue, priority, exchange, routing key,
expiry, and the name and arguments of the message (scheduling.services.job_dispatch)."""

import datetime as dt
import io
import json
import types
from unittest import mock

import pytest
from celery.app.task import Context
from celery.signals import task_revoked
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from scheduling import config, selectors, services
from scheduling.masking import MASK
from scheduling.models import JobExecution
from scheduling.tasks import run_job
from tests.factories import make_job

pytestmark = pytest.mark.django_db

SECRET = "hunter2-do-not-show"


def sent_options(job, **dispatch) -> dict:
    """The options ``job_dispatch`` gives Celery for one run of ``job``."""
    dispatch.setdefault("trigger", "manual")
    dispatch.setdefault("scheduled_at", timezone.now())
    with mock.patch.object(run_job, "apply_async") as apply_async:
        services.job_dispatch(job=job, **dispatch)
    return apply_async.call_args.kwargs


def test_a_job_goes_to_the_default_queue_at_the_lowest_priority_unless_told():
    job = make_job()
    assert (job.queue, job.priority, job.exchange, job.routing_key) == ("", 0, "", "")
    options = sent_options(job)
    assert "queue" not in options and "exchange" not in options  # Celery's default queue
    status = selectors.job_status(job=job)
    assert (status["queue"], status["priority"]) == ("celery", 0)


def test_a_run_is_sent_to_the_jobs_queue_exchange_and_routing_key():
    job = make_job(queue="reports", priority=7, exchange="jobs", routing_key="reports.daily")
    options = sent_options(job)
    assert (options["queue"], options["exchange"], options["routing_key"]) == (
        "reports",
        "jobs",
        "reports.daily",
    )


@pytest.mark.parametrize(
    ("broker", "sent"),
    [("amqp://guest@localhost//", 7), ("redis://localhost:6379/0", 2), ("filesystem://", 7)],
)
def test_nine_is_the_most_urgent_priority_on_every_broker(broker, sent):
    # kombu's Redis transport serves its lowest priority step first, RabbitMQ the highest.
    job = make_job(priority=7)
    app = types.SimpleNamespace(conf=types.SimpleNamespace(broker_url=broker))
    assert services.message_routing(job, app)["priority"] == sent


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", 10), ("queue", "two words"), ("exchange", "a/b"), ("routing_key", "x\x00")],
)
def test_a_bad_priority_or_queue_name_is_refused_naming_the_field(field, value):
    with pytest.raises(ValidationError) as caught:
        make_job(**{field: value})
    assert field in caught.value.message_dict


def test_a_scheduled_run_expires_in_the_broker_once_past_its_misfire_grace():
    job = make_job(misfire_grace_time=20)
    fire = timezone.now().replace(microsecond=0)
    options = sent_options(job, trigger="schedule", scheduled_at=fire, jitter=1.5)
    assert options["expires"] == fire + dt.timedelta(seconds=21.5)
    assert options["headers"]["scheduling_fire_time"] == fire.isoformat()
    # The misfire rule does not apply to a manual run: it never expires.
    assert "expires" not in sent_options(job, trigger="manual")


def test_celery_shows_a_run_as_its_task_with_the_jobs_arguments_secrets_masked():
    job = make_job(
        task="demo.echo", args=[1, {"password": SECRET}], kwargs={"api_token": SECRET, "days": 7}
    )
    options = sent_options(job)
    assert options["shadow"] == "demo.echo"
    assert options["argsrepr"] == f"(1, {{'password': '{MASK}'}})"
    assert options["kwargsrepr"] == f"{{'api_token': '{MASK}', 'days': 7}}"
    assert SECRET not in json.dumps(options, default=str)
    assert options["headers"]["periodic_task_name"] == job.name


def test_the_task_result_row_keeps_run_job_as_its_task_and_the_jobs_arguments():
    from django_celery_results.models import TaskResult

    job = make_job(task="demo.noop")
    options = sent_options(job)
    run_job.apply(
        kwargs={"job_id": job.pk, "trigger": "manual", "scheduled_at": None},
        task_id="f2c3a6a0-0000-4000-8000-000000000001",
        headers=options["headers"],
        argsrepr=options["argsrepr"],
        kwargsrepr=options["kwargsrepr"],
    )
    result = TaskResult.objects.get(task_id="f2c3a6a0-0000-4000-8000-000000000001")
    assert (result.task_name, result.periodic_task_name) == ("scheduling.run_job", job.name)


def test_routing_is_carried_by_export_and_import():
    make_job(name="routed", queue="reports", priority=9, exchange="jobs", routing_key="r.k")
    document = selectors.config_export()
    (entry,) = document["jobs"]
    assert {k: entry["options"][k] for k in ("queue", "priority", "exchange", "routing_key")} == {
        "queue": "reports",
        "priority": 9,
        "exchange": "jobs",
        "routing_key": "r.k",
    }
    assert services.config_import(data=document).unchanged == ["routed"]
    entry["options"]["priority"] = 11
    with pytest.raises(config.ConfigError, match="priority"):
        services.config_import(data=document)


def test_jobs_add_and_modify_take_a_queue_and_a_priority_and_show_prints_them():
    call_command(
        "jobs", "add", "nightly", "--task", "demo.echo", "--cron", "0 0 2 * * *",
        "--queue", "reports", "--priority", "7", stdout=io.StringIO(),
    )  # fmt: skip
    out = io.StringIO()
    call_command("jobs", "show", "nightly", "--json", stdout=out)
    shown = json.loads(out.getvalue())
    assert (shown["queue"], shown["priority"]) == ("reports", 7)
    call_command(
        "jobs", "modify", "nightly", "--queue", "", "--priority", "9",
        "--exchange", "jobs", "--routing-key", "reports.nightly", stdout=io.StringIO(),
    )  # fmt: skip
    out = io.StringIO()
    call_command("jobs", "show", "nightly", "--json", stdout=out)
    shown = json.loads(out.getvalue())
    assert (shown["queue"], shown["priority"]) == ("celery", 9)
    assert (shown["exchange"], shown["routing_key"]) == ("jobs", "reports.nightly")


def test_a_message_that_expired_in_its_queue_is_recorded_missed_saying_so():
    job = make_job(queue="reports", misfire_grace_time=5)
    fire = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=30)
    headers = sent_options(job, trigger="schedule", scheduled_at=fire)["headers"]
    request = Context({**headers, "id": "x", "delivery_info": {"routing_key": "reports"}})
    for _ in range(2):  # a message delivered twice is recorded once
        task_revoked.send(
            sender=run_job, request=request, terminated=False, signum=None, expired=True
        )
    (missed,) = JobExecution.objects.filter(job=job)
    assert (missed.status, missed.scheduled_at, missed.trigger) == ("missed", fire, "schedule")
    assert missed.reason == (
        "Expired in the queue 'reports': no worker took it within its misfire grace (5s)."
    )


def test_a_revoked_message_that_did_not_expire_is_not_recorded_missed():
    job = make_job()
    headers = sent_options(job, trigger="schedule", scheduled_at=timezone.now())["headers"]
    task_revoked.send(
        sender=run_job, request=Context(headers), terminated=True, signum=15, expired=False
    )
    assert not JobExecution.objects.filter(job=job).exists()


def test_the_task_sent_event_names_a_run_by_its_task_as_the_workers_events_do():
    # Flower merges a task-sent event that arrives late over the worker's events.
    from project.celery import app

    job = make_job(task="demo.echo", kwargs={"token": SECRET})
    options = sent_options(job)
    message = app.amqp.create_task_message(
        "id-1", run_job.name, (), {"job_id": job.pk}, create_sent_event=True,
        shadow=options["shadow"], argsrepr=options["argsrepr"], kwargsrepr=options["kwargsrepr"],
    )  # fmt: skip
    assert message.sent_event["name"] == "demo.echo"
    assert message.sent_event["kwargs"] == f"{{'token': '{MASK}'}}"
    assert message.headers["task"] == "scheduling.run_job"  # what the worker runs
