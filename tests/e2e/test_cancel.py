"""Cancel and terminate runs in progress, with real workers: a sync function sees its
cancel through its run context, an ``async def`` one gets ``CancelledError``, a cancel
not heeded becomes a terminate after its grace, and a terminate kills the run's pool
process while the worker serves on. Each run's slot is free from the request on."""

import json
import re
from pathlib import Path

import pytest
from django.conf import settings

from scheduling import services
from scheduling.models import JobChange, JobExecution
from tests.e2e.processes import wait_for
from tests.e2e.test_operate import free_port, get_json
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]

FAST = {"SCHEDULING_CANCEL_CHECK_INTERVAL": "0.5", "SCHEDULING_REAP_INTERVAL": "1"}


def _running(job, processes, *, progress: bool = False) -> JobExecution:
    def started():
        run = JobExecution.objects.filter(job=job, status="running").first()
        return run if run and (not progress or run.progress is not None) else None

    return wait_for(started, timeout=60, what=f"a run of {job.name} to start", processes=processes)


def _ended(execution, processes, timeout: float = 60) -> JobExecution:
    return wait_for(
        lambda: (
            JobExecution.objects.filter(pk=execution.pk)
            .exclude(status__in=["running", "cancelling"])
            .first()
        ),
        timeout=timeout,
        what=f"run {execution.pk} to end",
        processes=processes,
    )


def test_a_sync_function_sees_its_cancel_and_its_slot_is_free_at_once(celery_processes):
    job = make_job(task="tests.cooperative", kwargs={"key": "sync"}, max_instances=1)
    celery_processes.start_worker(env=FAST)
    services.job_run_now(job=job)
    first = _running(job, celery_processes, progress=True)
    context = json.loads((Path(settings.VAR_DIR) / "context-sync").read_text())
    assert context == {
        "job": job.name,
        "execution_id": first.pk,
        "scheduled_at": context["scheduled_at"],
        "attempt": 0,
        "trigger": "manual",
        "current": True,
    }
    assert context["scheduled_at"] == first.scheduled_at.isoformat()
    assert first.progress_message.startswith("step ")

    cancelled = services.execution_cancel(execution=first, by="alice", reason="wrong day")
    assert cancelled.status == "cancelling"
    # Its slot is free from the request on: the next run starts (max instances is 1).
    services.job_run_now(job=job)
    second = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="running").exclude(pk=first.pk).first(),
        timeout=60,
        what="the next run to start while the first is cancelled",
        processes=celery_processes,
    )
    first = _ended(first, celery_processes)
    assert first.status == "cancelled", first.reason
    stopped = (first.finished_at - first.cancel_requested_at).total_seconds()
    print(f"cancel asked -> function stopped and recorded: {stopped:.2f}s (check every 0.5s)")
    assert first.cancelled_by == "alice"
    assert first.reason == "Cancelled by alice: wrong day"
    assert json.loads(first.result)["stopped_at"] > 0
    assert first.task_result.status == "REVOKED"
    change = JobChange.objects.get(job=job, action="cancel run")
    assert change.actor == "alice"
    assert change.changes["execution"] == [None, first.pk]
    assert second.status == "running"
    assert not JobExecution.objects.filter(job=job, status="skipped").exists()


def test_an_async_function_gets_cancelled_error(celery_processes):
    job = make_job(task="tests.async_until_cancelled", kwargs={"key": "async"})
    celery_processes.start_worker(env=FAST)
    services.job_run_now(job=job)
    run = _running(job, celery_processes)
    services.execution_cancel(execution=run, by="bob")
    run = _ended(run, celery_processes)
    assert run.status == "cancelled", run.reason
    assert run.reason == "Cancelled by bob."
    assert (Path(settings.VAR_DIR) / "cancelled-async").read_text() == "CancelledError"
    assert run.duration < 30


def test_a_cancel_not_heeded_is_terminated_after_its_grace(celery_processes):
    job = make_job(task="tests.stubborn_sleep", kwargs={"seconds": 120})
    celery_processes.start_worker(env={**FAST, "SCHEDULING_CANCEL_GRACE_SECONDS": "2"})
    services.job_run_now(job=job)
    run = _running(job, celery_processes)
    services.execution_cancel(execution=run, by="carol")
    run = _ended(run, celery_processes, timeout=30)
    assert run.status == "terminated", run.reason
    assert run.reason == "Cancelled by carol. It did not stop within the 2s grace: terminated."
    assert run.cancelled_by == "carol"
    _next_run_succeeds(celery_processes)


@pytest.mark.parametrize("task", ["demo.sleep", "demo.async_sleep"])
def test_terminate_kills_the_runs_process_and_the_worker_serves_on(celery_processes, task):
    job = make_job(task=task, kwargs={"seconds": 120})
    celery_processes.start_worker(env=FAST)
    services.job_run_now(job=job)
    run = _running(job, celery_processes)
    terminated = services.execution_cancel(execution=run, terminate=True, by="dave")
    # Recorded at once, whatever the process does next.
    assert terminated.status == "terminated"
    assert terminated.reason == "Terminated by dave."
    assert JobChange.objects.get(job=job, action="terminate run").actor == "dave"
    wait_for(
        lambda: f"Terminating {run.task_result_id} (9)" in celery_processes.log("w1"),
        timeout=30,
        what="the worker to kill the run's process",
        processes=celery_processes,
    )
    _next_run_succeeds(celery_processes)
    run.refresh_from_db()
    assert run.status == "terminated"
    assert run.task_result.status == "REVOKED"


def _next_run_succeeds(processes) -> None:
    """Both pool processes of the worker run again: two runs at once succeed."""
    job = make_job(task="demo.sleep", kwargs={"seconds": 1}, max_instances=2)
    services.job_run_now(job=job)
    services.job_run_now(job=job)
    wait_for(
        lambda: JobExecution.objects.filter(job=job, status="success").count() == 2,
        timeout=60,
        what="two runs after the terminate to succeed",
        processes=processes,
    )


def test_flower_shows_a_runs_progress_and_its_cancel(celery_processes):
    flower = celery_processes.start_flower(free_port())
    job = make_job(task="tests.cooperative", kwargs={"key": "flower"})
    celery_processes.start_worker(env=FAST)
    wait_for(
        lambda: (w := get_json(f"{flower}/api/workers?refresh=1")) and "w1@e2e" in w,
        timeout=60,
        what="Flower to list the worker",
        processes=celery_processes,
    )
    task_id = services.job_run_now(job=job)
    shown = wait_for(
        lambda: (
            (t := get_json(f"{flower}/api/task/info/{task_id}"))
            and re.fullmatch(r"\d+% step \d+ of 600", t.get("result") or "")
            and t
        ),
        timeout=60,
        what="Flower to show the run's progress",
        processes=celery_processes,
    )
    assert shown["state"] == "STARTED", shown
    run = JobExecution.objects.get(task_result_id=task_id)
    assert run.progress is not None and run.progress_message.startswith("step ")
    services.execution_cancel(execution=run)
    wait_for(
        lambda: (
            (t := get_json(f"{flower}/api/task/info/{task_id}")) and t.get("state") == "REVOKED"
        ),
        timeout=60,
        what="Flower to show the cancelled run as revoked",
        processes=celery_processes,
    )
    assert JobExecution.objects.get(pk=run.pk).status == "cancelled"


def test_on_the_threads_pool_terminate_tells_the_function_to_stop(celery_processes):
    job = make_job(task="tests.cooperative", kwargs={"key": "threads"})
    celery_processes.start_worker(env=FAST, pool="threads")
    services.job_run_now(job=job)
    run = _running(job, celery_processes, progress=True)
    services.execution_cancel(execution=run, terminate=True, by="dave")
    said = f"Job {job.name}: run {run.pk} was recorded as terminated before it ended cancelled"
    wait_for(
        lambda: said in celery_processes.log("w1"),
        timeout=30,
        what="the function to stop when told (the threads pool cannot kill one task)",
        processes=celery_processes,
    )
    run.refresh_from_db()
    assert run.status == "terminated" and run.result == ""
    _next_run_succeeds(celery_processes)


@pytest.mark.skipif(
    settings.CELERY_BROKER_URL.startswith("filesystem://"),
    reason="two workers: Redis or RabbitMQ (the embedded broker serves one)",
)
def test_cancel_and_terminate_reach_the_worker_that_runs_each_run(celery_processes):
    job = make_job(task="tests.cooperative", kwargs={"key": "two"}, max_instances=2)
    celery_processes.start_worker("w1", concurrency=1, env=FAST)
    celery_processes.start_worker("w2", concurrency=1, env=FAST)
    services.job_run_now(job=job)
    services.job_run_now(job=job)
    both = wait_for(
        lambda: (
            (
                r := list(
                    JobExecution.objects.filter(job=job, status="running", progress__isnull=False)
                )
            )
            and len(r) == 2
            and r
        ),
        timeout=60,
        what="a run on each worker",
        processes=celery_processes,
    )
    assert {run.worker for run in both} == {"w1@e2e", "w2@e2e"}
    cancelled, terminated = sorted(both, key=lambda run: run.worker)
    services.execution_cancel(execution=cancelled)
    services.execution_cancel(execution=terminated, terminate=True)
    assert _ended(cancelled, celery_processes).status == "cancelled"
    wait_for(
        lambda: f"Terminating {terminated.task_result_id} (9)" in celery_processes.log("w2"),
        timeout=30,
        what="w2 to kill the run's process",
        processes=celery_processes,
    )
    assert f"Terminating {terminated.task_result_id}" not in celery_processes.log("w1")
    _next_run_succeeds(celery_processes)
