"""One run from the message to the record (scheduling.runs.run)."""

import pytest
from django.utils import timezone

from scheduling import runs
from scheduling.models import JobExecution
from tests.factories import make_job

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
