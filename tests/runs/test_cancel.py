"""Stopping a run in progress (services.execution_cancel, scheduling.runs.cancel): what is
recorded at once, what a late finish may not change, and the terminate after the grace.
The worker's side (the function told, the process killed) is tested in tests/e2e/test_cancel.py."""

import datetime as dt
import time
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_results.models import TaskResult

from scheduling import runs, services
from scheduling.models import Alert, JobChange, JobDailyStats, JobExecution
from scheduling.runs.finish import finish
from tests.factories import make_job, make_running, sent_message

pytestmark = pytest.mark.django_db(transaction=True)


def _running(job, **fields):
    return make_running(job, task_result_id=str(uuid.uuid4()), worker="w1@test", **fields)


def _start_manual(job):
    return runs.execution_start(
        job_id=job.pk,
        trigger="manual",
        scheduled_at=timezone.now(),
        jitter=0,
        attempt=0,
        task_id=str(uuid.uuid4()),
        worker="w1@test",
    )


def test_a_cancelled_run_frees_its_slot_at_once():
    job = make_job(max_instances=1)
    run = _running(job)
    assert _start_manual(job) is None  # skipped: the slot is taken
    cancelled = services.execution_cancel(execution=run, by="alice", reason="wrong day")
    assert cancelled.status == "cancelling"
    assert cancelled.cancelled_by == "alice" and cancelled.cancel_requested_at is not None
    assert cancelled.reason == "Cancelled by alice: wrong day"
    assert _start_manual(job) is not None


def test_the_cancel_request_is_in_the_audit_trail_with_who_asked():
    job = make_job()
    run = _running(job)
    services.execution_cancel(execution=run, by="alice", reason="wrong day")
    change = JobChange.objects.get(job=job, action="cancel run")
    assert (change.action, change.actor, change.source) == ("cancel run", "alice", "api")
    assert change.changes == {"execution": [None, run.pk], "reason": [None, "wrong day"]}


def test_a_second_cancel_changes_nothing_and_a_finished_run_is_refused():
    job = make_job()
    run = _running(job)
    services.execution_cancel(execution=run, by="alice")
    again = services.execution_cancel(execution=run, by="bob")
    assert again.cancelled_by == "alice"
    assert JobChange.objects.filter(job=job, action="cancel run").count() == 1
    done = JobExecution.objects.create(
        job=job, job_name=job.name, task=job.task, trigger="manual", status="success",
        started_at=timezone.now(),
    )  # fmt: skip
    with pytest.raises(ValidationError) as error:
        services.execution_cancel(execution=done)
    assert "is not running: it is Success" in error.value.message_dict["execution"][0]


def test_a_finish_after_the_cancel_records_the_run_cancelled_and_no_failure_alert():
    job = make_job(alert_emails="ops@example.com")
    run = _running(job)
    services.execution_cancel(execution=run, by="alice")
    # The function ended (it failed) without having seen the cancel: still cancelled.
    status = finish(
        run,
        time.perf_counter() - 1,
        "failure",
        message=sent_message(job, run.task_result_id),
        error=RuntimeError("boom"),
        exception="RuntimeError: boom",
    )
    assert status == "cancelled"
    run.refresh_from_db()
    assert run.status == "cancelled" and run.reason == "Cancelled by alice."
    assert run.exception == "RuntimeError: boom" and run.lease_until is None
    assert TaskResult.objects.get(task_id=run.task_result_id).status == "REVOKED"
    assert JobDailyStats.objects.get(job=job).status == "cancelled"
    assert not Alert.objects.exists()
    job.refresh_from_db()
    assert job.last_status == "cancelled"


def test_terminate_is_recorded_at_once_and_a_late_finish_does_not_overwrite_it():
    job = make_job()
    run = _running(job)
    terminated = services.execution_cancel(execution=run, terminate=True, by="dave")
    assert terminated.status == "terminated" and terminated.reason == "Terminated by dave."
    assert terminated.finished_at is not None and terminated.lease_until is None
    assert JobChange.objects.get(job=job, action="terminate run").actor == "dave"
    assert TaskResult.objects.get(task_id=run.task_result_id).status == "REVOKED"
    status = finish(run, time.perf_counter() - 1, "success", message=None, value=1, result="1")
    assert status is None
    run.refresh_from_db()
    assert run.status == "terminated" and run.result == ""
    assert [(s.status, s.count) for s in JobDailyStats.objects.filter(job=job)] == [
        ("terminated", 1)
    ]


def test_a_cancel_not_heeded_within_its_grace_is_terminated(settings):
    settings.SCHEDULING = {"CANCEL_GRACE_SECONDS": 5}
    job = make_job()
    late, recent = _running(job), _running(job)
    services.execution_cancel(execution=late, by="carol")
    services.execution_cancel(execution=recent, by="carol")
    JobExecution.objects.filter(pk=late.pk).update(
        cancel_requested_at=timezone.now() - dt.timedelta(seconds=6)
    )
    assert runs.execution_terminate_overdue() == 1
    late.refresh_from_db()
    assert late.status == "terminated"
    assert late.reason == "Cancelled by carol. It did not stop within the 5s grace: terminated."
    assert JobExecution.objects.get(pk=recent.pk).status == "cancelling"
    assert runs.execution_terminate_overdue() == 0


def test_a_cancelled_run_whose_worker_died_is_recorded_cancelled():
    job = make_job()
    run = _running(job)
    services.execution_cancel(execution=run, by="carol")
    JobExecution.objects.filter(pk=run.pk).update(
        lease_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert runs.execution_terminate_overdue() == 1
    run.refresh_from_db()
    assert run.status == "cancelled" and "stopped renewing" in run.reason


def test_statistics_count_cancelled_and_terminated_runs_as_their_own_outcome():
    from scheduling import selectors

    job = make_job()
    for terminate in (False, True):
        services.execution_cancel(execution=_running(job), terminate=terminate)
    runs.execution_terminate_overdue()
    services.execution_cancel(
        execution=JobExecution.objects.get(job=job, status="cancelling"), terminate=True
    )
    now = timezone.now()
    stats = selectors.job_statistics(
        job=job, since=now - dt.timedelta(hours=1), until=now + dt.timedelta(hours=1)
    )
    assert (stats["terminated"], stats["cancelled"], stats["failures"], stats["runs"]) == (
        2,
        0,
        0,
        0,
    )
