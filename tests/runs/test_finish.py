"""The finish of a run: the execution, the Celery task result, the statistics, the job's last run."""

import pytest
from celery.exceptions import TimeLimitExceeded
from celery.result import AsyncResult
from django.utils import timezone
from django_celery_results.models import TaskResult

from project.celery import app
from scheduling import runs
from scheduling.models import JobDailyStats, JobExecution
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
