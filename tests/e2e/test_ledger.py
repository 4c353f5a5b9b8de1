"""The ledger of sent fire times lives in the database: a fire time the leader sent and the
broker then lost is explained by whichever beat leads next, after the leader died."""

import signal
import time

import pytest
from django.utils import timezone

from project.celery import app
from scheduling.models import JobExecution, SchedulerLease
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]


def test_a_fire_time_a_dead_leader_sent_into_a_lost_message_is_recorded_missed(
    celery_processes,
):
    job = make_job(task="demo.noop", cron_expression="*/1 * * * * *", misfire_grace_time=2)
    celery_processes.start_beat("beat1", ready=True)
    wait_for(
        lambda: SchedulerLease.objects.exclude(holder="").exists(),
        timeout=30,
        what="beat1 to lead",
        processes=celery_processes,
    )
    celery_processes.start_beat("beat2", ready=True)
    # No worker runs: beat1's messages wait in the queue; then the broker loses them and
    # beat1 dies, with whatever it knew of them.
    sent_at = timezone.now()
    time.sleep(3)  # a few fire times are sent
    app.control.purge()
    celery_processes.stop("beat1", sig=signal.SIGKILL)
    killed_at = timezone.now()
    # beat2 takes over; once the grace + 10 s of what beat1 sent has passed, it checks
    # the ledger beat1 left.
    explained = wait_for(
        lambda: list(
            JobExecution.objects.filter(
                job=job,
                scheduled_at__gte=sent_at,
                scheduled_at__lt=killed_at.replace(microsecond=0),
                status="missed",
            )
        ),
        timeout=60,
        what="beat2 to record the fire times beat1 sent and the broker lost",
        processes=celery_processes,
    )
    assert all(r.reason.startswith("Sent to the broker but not started") for r in explained)
    assert len(explained) >= 2
