"""A storm: many jobs due at the same second, sent by a real beat through its batches and
run by a real worker. On Redis beat writes kombu's envelopes itself, on RabbitMQ it waits for
a batch's confirms at once (``scheduling.publish``): the worker must read every message as
kombu's own, on every queue and priority."""

import datetime as dt
import json
import math
import time
import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from project.celery import app
from scheduling import publish, services
from scheduling.models import Job, JobExecution, SentFireTime
from scheduling.scheduler import beat_broker_options
from tests.e2e.processes import wait_for

pytestmark = [pytest.mark.e2e]

STORM = 300


def test_a_storm_sent_by_beat_in_batches_is_run_by_a_worker_once_per_job(celery_processes):
    broker = settings.CELERY_BROKER_URL.split(":", 1)[0]
    connection = app.connection_for_write(transport_options=beat_broker_options(broker, 0.5))
    with connection:
        channel = app.amqp.Producer(connection, auto_declare=False).channel
        # Beat's connection takes the batch path of its broker (scheduling.publish).
        if broker == "redis":
            assert publish.redis_pushes_apply(channel, [])
        elif broker == "amqp":
            assert publish._confirms(channel) is not None

    queue = f"storm-{uuid.uuid4().hex[:8]}"
    fire = dt.datetime.fromtimestamp(math.ceil(time.time()) + 8, dt.UTC)
    expression = f"{fire.second} {fire.minute} {fire.hour} {fire.day} {fire.month} *"
    jobs = [
        Job(
            name=f"storm-{index}",
            task="demo.echo",
            trigger_type="cron",
            cron_expression=expression,
            timezone="UTC",
            kwargs={"index": index} if index % 3 else {},
            priority=index % 10,  # every one of kombu's priority lists on Redis
            queue=queue if index % 2 else "",
            misfire_grace_time=60,
        )
        for index in range(STORM)
    ]
    services.job_bulk_create(jobs=jobs)
    celery_processes.start_worker(queues=["celery", queue], concurrency=2)
    celery_processes.start_beat()

    runs = wait_for(
        lambda: (
            (found := list(JobExecution.objects.filter(job__name__startswith="storm-")))
            and len([r for r in found if r.status != "running"]) >= STORM
            and found
        ),
        timeout=120,
        what=f"{STORM} runs of the storm",
        processes=celery_processes,
    )
    assert len(runs) == STORM, "a job ran more than once"
    assert {run.status for run in runs} == {"success"}, {run.status for run in runs}
    assert {run.scheduled_at for run in runs} == {fire}
    assert {run.job.name for run in runs} == {job.name for job in jobs}
    # Each run had its own keyword arguments (read off the message), and beat stored the
    # following fire time (next year's) and the ledger entry of each job it sent.
    by_name = {run.job.name: run for run in runs}
    assert json.loads(by_name["storm-4"].result) == {"args": [], "kwargs": {"index": 4}}
    assert json.loads(by_name["storm-3"].result) == {"args": [], "kwargs": {}}
    later = Job.objects.filter(name__startswith="storm-").values_list("next_run_at", flat=True)
    assert set(later) == {fire.replace(year=fire.year + 1)}
    assert SentFireTime.objects.filter(scheduled_at=fire).count() == STORM
    assert timezone.now() - fire < dt.timedelta(seconds=120)
