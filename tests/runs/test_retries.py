"""Retries: a failed attempt retried under the same task id, and the backoff."""

import pytest
from django_celery_results.models import TaskResult

from scheduling import runs
from scheduling.models import JobExecution
from tests.factories import make_job, run_scheduled, sent_message

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_retried_attempt_is_a_retry_then_the_outcome_under_one_task_id():
    job = make_job(task="demo.fail", max_retries=1)
    sent = sent_message(job)
    with pytest.raises(runs.RetryLater):
        run_scheduled(job, sent=sent)
    first = TaskResult.objects.get(task_id=sent.task_id)
    assert first.status == "RETRY"
    with pytest.raises(RuntimeError):
        runs.execution_run(
            job_id=job.pk,
            trigger="manual",
            scheduled_at=None,
            task_id=sent.task_id,
            worker="w1@test",
            attempt=1,
            message=sent,
        )
    last = TaskResult.objects.get(task_id=sent.task_id)
    assert last.status == "FAILURE" and last.date_created == first.date_created
    attempts = JobExecution.objects.filter(job=job).order_by("attempt")
    assert [a.attempt for a in attempts] == [0, 1] and attempts[1].retry_of_id == attempts[0].pk
