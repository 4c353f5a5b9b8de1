"""Leases of running runs, renewed by one thread per worker process."""

import datetime as dt
import time

import pytest
from django.utils import timezone

from scheduling.runs import lease
from tests.factories import make_job, make_running

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_thread_per_process_renews_the_lease_of_every_run_in_progress(settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "LEASE_SECONDS": 1.5}  # renewed every 0.5 s
    job = make_job(task="demo.noop")
    start = timezone.now()

    long_run, short_run = (
        make_running(job, started_at=start, lease=1.5, task_result_id=name)
        for name in ("long", "short")
    )
    renewer = lease.LeaseRenewer()
    renewer.add(long_run.pk)
    renewer.add(short_run.pk)
    renewer.discard(short_run.pk)  # over before the first renewal
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        long_run.refresh_from_db()
        if long_run.lease_until > start + dt.timedelta(seconds=2):
            break
        time.sleep(0.1)
    assert long_run.lease_until > start + dt.timedelta(seconds=2), "never renewed"
    assert renewer._thread.name == "lease-renewer"
    short_run.refresh_from_db()
    assert short_run.lease_until == start + dt.timedelta(seconds=1.5)
    renewer.discard(long_run.pk)
    time.sleep(0.7)  # a round may have been under way when it was discarded
    long_run.refresh_from_db()
    last = long_run.lease_until
    time.sleep(1.2)
    long_run.refresh_from_db()
    assert long_run.lease_until == last  # no longer renewed
