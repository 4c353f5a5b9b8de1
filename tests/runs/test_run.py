"""One run from the message to the record (scheduling.runs.run)."""

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from scheduling import runs
from scheduling.masking import MASK
from scheduling.models import Alert, JobExecution
from tests.factories import make_job, run_scheduled, sent_message

pytestmark = pytest.mark.django_db


def test_execution_run_records_success_with_timings():
    job = make_job(task="demo.sleep", kwargs={"seconds": 0.05})
    value = runs.execution_run(
        job_id=job.pk, trigger="manual", scheduled_at=timezone.now(), task_id="t-1", worker="here"
    )
    run = JobExecution.objects.get(job=job)
    assert value == 0.05
    assert run.status == "success" and run.duration >= 0.05
    assert run.finished_at > run.started_at
    assert (run.worker, run.task_result_id, run.result) == ("here", "t-1", "0.05")
    job.refresh_from_db()
    assert (job.last_status, job.total_run_count) == ("success", 1)


def test_execution_run_records_failure_and_reraises():
    job = make_job(task="demo.fail")
    with pytest.raises(RuntimeError):
        runs.execution_run(
            job_id=job.pk, trigger="manual", scheduled_at=None, task_id=None, worker=""
        )
    run = JobExecution.objects.get(job=job)
    assert run.status == "failure"
    assert run.exception == "RuntimeError: This job failed on purpose."
    assert "raise RuntimeError" in run.traceback


def test_execution_run_of_an_async_function():
    job = make_job(task="demo.async_sleep", kwargs={"seconds": 0.01})
    value = runs.execution_run(
        job_id=job.pk, trigger="manual", scheduled_at=None, task_id=None, worker=""
    )
    assert value["async"] is True


@pytest.mark.django_db(transaction=True)
def test_a_secret_in_an_exception_is_masked_wherever_the_failure_goes():
    secret = "hunter2-very-secret"
    job = make_job(task="tests.login", kwargs={"user": "ops", "password": secret})
    sent = sent_message(job)
    with pytest.raises(ConnectionError) as raised:
        run_scheduled(job, sent=sent)
    assert secret not in str(raised.value) and MASK in str(raised.value)  # Celery's log, events
    execution = JobExecution.objects.get(job=job)
    assert execution.exception == f"ConnectionError: cannot log in as ops with password {MASK}"
    assert secret not in execution.traceback and "raise ConnectionError" in execution.traceback
    result = TaskResult.objects.get(task_id=sent.task_id)
    assert secret not in result.result and secret not in result.traceback
    assert secret not in Alert.objects.get(job=job, kind="failure").message


@pytest.mark.django_db(transaction=True)
def test_a_nul_character_in_an_exception_is_recorded_not_lost():
    job = make_job(task="tests.nul_error")
    sent = sent_message(job)
    with pytest.raises(RuntimeError):
        run_scheduled(job, sent=sent)
    execution = JobExecution.objects.get(job=job)
    assert execution.status == "failure"
    assert execution.exception == "RuntimeError: bad byte \\x00 in the input"
    assert TaskResult.objects.get(task_id=sent.task_id).status == "FAILURE"
