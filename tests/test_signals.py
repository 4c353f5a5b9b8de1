"""Job and run events (scheduling.signals)."""

import datetime as dt

import pytest
from django.utils import timezone

from scheduling import runs, services, signals
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)


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
        runs.execution_run(
            job_id=job.pk, trigger="manual", scheduled_at=None, task_id="a", worker="w"
        )
        failing = make_job(task="demo.fail")
        with pytest.raises(RuntimeError):
            runs.execution_run(
                job_id=failing.pk, trigger="manual", scheduled_at=None, task_id="b", worker="w"
            )
        old = timezone.now() - dt.timedelta(minutes=5)
        runs.execution_start(
            job_id=job.pk,
            trigger="schedule",
            scheduled_at=old,
            jitter=0,
            attempt=0,
            task_id="c",
            worker="w",
        )
        running = runs.execution_start(
            job_id=job.pk,
            trigger="manual",
            scheduled_at=None,
            jitter=0,
            attempt=0,
            task_id="d",
            worker="w",
        )
        runs.execution_start(
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
