"""Per-job routing with real processes: a job's own queue and its workers, priorities, and
runs that expire in their queue; a Celery task of the shop's run as a job."""

import datetime as dt
import time
import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from scheduling import services
from scheduling.models import JobExecution
from tests.e2e.fates import EXPIRED, NEVER_STARTED, wait_until_settled
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]

YEARLY = "0 0 0 1 1 *"  # never fires during a test: runs are sent with run now
several_workers = pytest.mark.skipif(
    settings.CELERY_BROKER_URL.startswith("filesystem"),
    reason="the embedded broker serves one worker and ignores priorities",
)


def queue_name() -> str:
    """A queue of this test's own: another run's leftovers never reach it."""
    return f"reports-{uuid.uuid4().hex[:8]}"


def finished(task_id: str) -> JobExecution | None:
    return JobExecution.objects.filter(task_result_id=task_id).exclude(status="running").first()


@several_workers
def test_a_job_on_its_own_queue_runs_only_on_a_worker_consuming_it(celery_processes):
    queue = queue_name()
    # A run now's grace counts from its send: the routed run waits for its worker to start.
    routed = make_job(task="demo.noop", cron_expression=YEARLY, queue=queue, misfire_grace_time=300)
    witness = make_job(task="demo.noop", cron_expression=YEARLY)
    celery_processes.start_worker("w1")  # no -Q: the queues of CELERY_TASK_QUEUES
    routed_id = services.job_run_now(job=routed)
    witness_id = services.job_run_now(job=witness)  # sent after it, on the default queue
    assert wait_for(
        lambda: finished(witness_id), timeout=60, what="the run on the default queue",
        processes=celery_processes,
    ).worker == "w1@e2e"  # fmt: skip
    time.sleep(2)
    assert not JobExecution.objects.filter(job=routed).exists()
    assert routed_id not in celery_processes.log("w1")

    celery_processes.start_worker("w2", queues=[queue])
    run = wait_for(
        lambda: finished(routed_id), timeout=60, what="the worker of its queue to run it",
        processes=celery_processes,
    )  # fmt: skip
    assert (run.status, run.worker) == ("success", "w2@e2e")


@several_workers
def test_a_high_priority_run_overtakes_queued_low_priority_ones(celery_processes):
    celery_processes.start_worker("w1", concurrency=1)  # one process, one message at a time
    blocker = make_job(task="demo.sleep", cron_expression=YEARLY, kwargs={"seconds": 3})
    low = make_job(task="demo.noop", cron_expression=YEARLY, max_instances=10)
    high = make_job(task="demo.noop", cron_expression=YEARLY, priority=9)
    blocker_id = services.job_run_now(job=blocker)
    wait_for(
        lambda: JobExecution.objects.filter(task_result_id=blocker_id).exists(),
        timeout=60, what="the blocking run to start", processes=celery_processes,
    )  # fmt: skip
    low_ids = [services.job_run_now(job=low) for _ in range(3)]
    high_id = services.job_run_now(job=high)  # queued last
    runs = wait_for(
        lambda: all(finished(i) for i in [*low_ids, high_id]) and [
            finished(i) for i in [*low_ids, high_id]
        ],
        timeout=60, what="every queued run", processes=celery_processes,
    )  # fmt: skip
    *lows, first = runs
    assert all(r.status == "success" for r in runs)
    assert first.started_at < min(r.started_at for r in lows), [
        (r.job_name, r.started_at.isoformat()) for r in runs
    ]


def test_a_run_that_waited_in_its_queue_past_its_grace_expires_and_is_explained(
    celery_processes,
):
    queue = queue_name()
    celery_processes.start_beat(ready=True)
    job = make_job(
        task="demo.noop", cron_expression="*/1 * * * * *", misfire_grace_time=1, queue=queue
    )
    since = timezone.now()
    time.sleep(5)  # runs pile up in a queue no worker consumes yet
    until = timezone.now() - dt.timedelta(seconds=2)
    celery_processes.start_worker("w1", queues=[queue])
    fates = wait_until_settled(job, since, until, celery_processes)
    # Each fire time is explained once: by the worker that found its message expired, or
    # (RabbitMQ drops an expired message itself) by beat's ledger of runs in flight.
    expired = [
        row
        for row in fates.values()
        if EXPIRED.match(row.reason)
        or (row.reason.startswith(NEVER_STARTED) and "expired in the queue" in row.reason)
    ]
    assert len(expired) >= 2, [(r.status, r.reason) for r in fates.values()]
    assert all(row.status == "missed" for row in expired)
    assert not [r for r in fates.values() if r.status == "success" and r.scheduled_at < until]


def test_a_celery_tasks_own_time_limit_is_replaced_by_the_jobs(celery_processes):
    # tests.celery_flaky is a @shared_task with time_limit=1 and soft_time_limit=1: run
    # as a job (which has none), a run of 1.5 s succeeds.
    job = make_job(
        task="tests.celery_flaky",
        cron_expression=YEARLY,
        kwargs={"key": uuid.uuid4().hex, "failures": 0, "seconds": 1.5},
    )
    celery_processes.start_worker("w1")
    task_id = services.job_run_now(job=job)
    run = wait_for(
        lambda: finished(task_id), timeout=60, what="the run", processes=celery_processes
    )
    assert run.status == "success", run.exception
    assert run.duration >= 1.5
    assert f"tests.celery_flaky[{task_id}] succeeded" in celery_processes.log("w1")
