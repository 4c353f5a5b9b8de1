"""Records of runs that end without the worker finishing them: missed, lost."""

import datetime as dt

import pytest
from django.utils import timezone

from scheduling import runs
from tests.factories import make_job, make_running

pytestmark = pytest.mark.django_db


def test_a_run_whose_lease_expired_is_lost_and_frees_its_slot():
    job = make_job(cron_expression="*/1 * * * * *", max_instances=1)
    past = timezone.now() - dt.timedelta(seconds=60)
    dead = make_running(job, started_at=past)
    started = runs.execution_start(
        job_id=job.pk,
        trigger="manual",
        scheduled_at=timezone.now(),
        jitter=0,
        attempt=0,
        task_id="t2",
        worker="w",
    )
    assert started is not None and started.status == "running"
    dead.refresh_from_db()
    assert dead.status == "lost" and dead.finished_at == dead.lease_until
