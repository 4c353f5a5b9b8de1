"""The finish of a run: the execution, the Celery task result, the statistics, the job's last run."""

import datetime as dt
import time

import pytest
from celery.exceptions import TimeLimitExceeded
from celery.result import AsyncResult
from django.db import connection
from django.utils import timezone
from django_celery_results.models import TaskResult

from project.celery import app
from scheduling import runs
from scheduling.models import ExecutionStatus, JobDailyStats, JobExecution
from scheduling.runs.finish import finish
from tests.factories import make_job, make_running, run_scheduled, sent_message

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_field_is_recorded_with_the_task_result():
    job = make_job(task="demo.echo", args=["hi"])
    fire = timezone.now().replace(microsecond=0)
    sent = sent_message(job)
    value = run_scheduled(job, fire_time=fire, sent=sent)
    execution = JobExecution.objects.get(job=job)
    assert value == {"args": ["hi"], "kwargs": {}}
    assert execution.status == "success" and execution.scheduled_at == fire
    assert execution.started_at >= fire and execution.finished_at >= execution.started_at
    assert execution.duration is not None and execution.worker == "w1@test"
    assert execution.result == '{"args": ["hi"], "kwargs": {}}'
    assert execution.lease_until is None and execution.task_result_id == sent.task_id
    result = TaskResult.objects.get(task_id=sent.task_id)
    assert (result.status, result.task_name, result.periodic_task_name, result.worker) == (
        "SUCCESS",
        "scheduling.run_job",
        job.name,
        "w1@test",
    )
    assert result.date_started == execution.started_at and result.date_done is not None
    assert result.task_args == '"()"' and str(job.pk) in result.task_kwargs
    # Read back through Celery's own result backend, as Flower and AsyncResult do.
    stored = AsyncResult(sent.task_id, app=app)
    assert stored.state == "SUCCESS" and stored.result == value
    job.refresh_from_db()
    assert (job.last_status, job.total_run_count) == ("success", 1)
    assert job.last_run_at == execution.started_at


def test_statistics_count_a_finished_run_once():
    job = make_job(task="demo.noop")
    run_scheduled(job)
    run_scheduled(job)
    assert JobDailyStats.objects.get(job=job, status="success").count == 2


def test_a_failure_is_the_task_result_too():
    job = make_job(task="demo.fail", kwargs={"message": "disk on fire"})
    sent = sent_message(job)
    with pytest.raises(RuntimeError):
        run_scheduled(job, sent=sent)
    result = TaskResult.objects.get(task_id=sent.task_id)
    assert result.status == "FAILURE" and "RuntimeError" in result.result
    assert "raise RuntimeError(message)" in result.traceback
    stored = AsyncResult(sent.task_id, app=app)
    assert isinstance(stored.result, RuntimeError) and "disk on fire" in str(stored.result)


def test_a_run_killed_over_its_hard_limit_fails_its_task():
    job = make_job(task="demo.noop")
    make_running(job, worker="w1@test", task_result_id="killed")
    assert runs.execution_mark_timed_out(task_id="killed", limit=2) == 1
    result = TaskResult.objects.get(task_id="killed")
    assert result.status == "FAILURE" and "TimeLimitExceeded" in result.result
    assert isinstance(AsyncResult("killed", app=app).result, TimeLimitExceeded)


def test_a_run_recorded_as_lost_meanwhile_stays_lost_and_is_counted_once():
    job = make_job(task="demo.noop")
    sent = sent_message(job)
    execution = runs.execution_start(
        job_id=job.pk,
        trigger="schedule",
        scheduled_at=timezone.now(),
        jitter=0,
        attempt=0,
        task_id=sent.task_id,
        worker=sent.worker,
        message=sent,
    )
    clock = time.perf_counter()
    # Its worker was cut off long enough for the lease to lapse and the run to be reaped.
    JobExecution.objects.filter(pk=execution.pk).update(
        lease_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert runs.execution_reap_lost(job=job) == 1
    finish(execution, clock, ExecutionStatus.SUCCESS, message=sent, value=None, result="null")
    assert JobExecution.objects.get(pk=execution.pk).status == "lost"
    counted = dict(JobDailyStats.objects.filter(job=job).values_list("status", "count"))
    assert counted == {"lost": 1}
    job.refresh_from_db()
    assert job.total_run_count == 0 and job.last_status != "success"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="ends a PostgreSQL connection")
def test_an_outcome_is_recorded_after_the_database_dropped_the_connection():
    # The function returns after PostgreSQL ended the worker's connection (as a restart
    # does): the finish reconnects and records the run instead of losing it.
    job = make_job(task="tests.cut_database_connection")
    sent = sent_message(job)
    assert run_scheduled(job, sent=sent) == "cut"
    execution = JobExecution.objects.get(job=job)
    assert (execution.status, execution.result) == ("success", '"cut"')
    assert TaskResult.objects.get(task_id=sent.task_id).status == "SUCCESS"
    assert JobDailyStats.objects.get(job=job, status="success").count == 1
