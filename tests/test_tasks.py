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


def test_a_celery_tasks_own_retry_options_are_replaced_by_the_jobs(settings, tmp_path):
    from scheduling.models import JobExecution

    settings.VAR_DIR = tmp_path
    # tests.celery_flaky is a @shared_task with autoretry_for=(ConnectionError,) and
    # max_retries=5: as a job task it runs under the job's rules, and its job retries never.
    job = make_job(task="tests.celery_flaky", kwargs={"key": "once", "failures": 2})
    with pytest.raises(ConnectionError, match="attempt 1 fails"):
        run_job.apply(kwargs={"job_id": job.pk, "trigger": "manual"}, throw=True)
    (run,) = JobExecution.objects.filter(job=job)
    assert (run.status, run.exception) == ("failure", "ConnectionError: attempt 1 fails")
    # With the job's own retries it is tried again, as any job is.
    retried = make_job(
        task="tests.celery_flaky",
        kwargs={"key": "retried", "failures": 2},
        max_retries=2,
        retry_backoff=0,
    )
    run_job.apply(kwargs={"job_id": retried.pk, "trigger": "manual"})
    attempts = JobExecution.objects.filter(job=retried).order_by("attempt")
    assert [(r.attempt, r.status) for r in attempts] == [
        (0, "failure"),
        (1, "failure"),
        (2, "success"),
    ]


def test_a_retry_is_shown_like_its_first_attempt_and_never_expires(settings, tmp_path):
    from unittest import mock

    from celery.exceptions import Retry

    settings.VAR_DIR = tmp_path
    job = make_job(task="tests.flaky", kwargs={"key": "retry-shown", "failures": 1}, max_retries=1)
    # The request a worker gives the task: the message's headers merged in.
    run_job.push_request(
        id=str(uuid.uuid4()),
        retries=0,
        hostname="w1@test",
        argsrepr="()",
        kwargsrepr="{'key': 'retry-shown', 'failures': 1}",
        expires="2026-01-01T00:00:00+00:00",
    )
    try:
        with (
            mock.patch.object(run_job, "retry", side_effect=Retry("again")) as retry,
            pytest.raises(Retry),
        ):
            run_job.run(job_id=job.pk, trigger="manual")
    finally:
        run_job.pop_request()
    options = retry.call_args.kwargs
    # Celery copies neither argsrepr nor kwargsrepr to a retry, but does copy expires.
    assert options["expires"] is None
    assert (options["argsrepr"], options["kwargsrepr"]) == (
        "()",
        "{'key': 'retry-shown', 'failures': 1}",
    )
