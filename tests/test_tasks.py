"""The Celery task every job runs through (scheduling.tasks)."""

import uuid

import pytest
from django_celery_results.models import TaskResult

from scheduling.tasks import run_job
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_task_writes_its_extended_result_itself():
    assert run_job.ignore_result  # the result backend does not write it a second time
    job = make_job(task="demo.noop")
    task_id = str(uuid.uuid4())
    run_job.apply(
        kwargs={"job_id": job.pk, "trigger": "manual", "scheduled_at": None},
        task_id=task_id,
        headers={"periodic_task_name": job.name},
    )
    result = TaskResult.objects.get(task_id=task_id)
    assert (result.status, result.task_name, result.periodic_task_name) == (
        "SUCCESS",
        "scheduling.run_job",
        job.name,
    )
    assert "job_id" in result.task_kwargs
