"""The whole path with real processes: job saved → beat fires it → worker runs it → on record."""

import datetime as dt
import itertools
import time

import pytest
from django_celery_results.models import TaskResult

from scheduling import services
from scheduling.models import Job, JobExecution
from tests.e2e.fates import wait_until_settled
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]


def executions(job: Job, **filters):
    return list(JobExecution.objects.filter(job=job, **filters).order_by("scheduled_at"))


def wait_for_beat_past(witness: Job, moment: dt.datetime, processes) -> None:
    """Wait until ``witness`` (firing every second) has run a fire time 5 s after
    ``moment``: beat has made its passes up to then, and the worker has taken what was sent
    before, so a run that should not be there would be on record by now."""
    wait_for(
        lambda: executions(
            witness, status="success", scheduled_at__gt=moment + dt.timedelta(seconds=5)
        ),
        timeout=60,
        what="beat and the worker to get past the change",
        processes=processes,
    )


def test_cron_with_seconds_fires_every_second_and_records_each_run(celery_processes):
    celery_processes.start_worker()
    celery_processes.start_beat(ready=True)
    # Created once both run: a job created earlier would have its fire times of the
    # start-up sent late (within their misfire grace), which is right but not measured here.
    job = make_job(cron_expression="*/1 * * * * *", args=["tick"])

    runs = wait_for(
        lambda: (r := executions(job, status="success")) and len(r) >= 6 and r,
        timeout=60,
        what="6 successful runs",
        processes=celery_processes,
    )
    fire_times = [run.scheduled_at for run in runs]
    assert len(set(fire_times)) == len(fire_times), "a fire time ran twice"
    assert all(t.microsecond == 0 for t in fire_times)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fire_times)]
    assert all(gap >= 1 for gap in gaps), gaps
    # Once a second: every second from the first run to the last has exactly one row, and
    # each agrees with itself (a run a loaded machine delayed past its grace is missed, and
    # says so by its own timestamps).
    wait_until_settled(job, fire_times[0], fire_times[-1], celery_processes)
    for run in runs:
        assert run.trigger == "schedule"
        assert run.worker == "w1@e2e"
        assert run.started_at >= run.scheduled_at
        assert run.finished_at >= run.started_at
        assert run.duration is not None and run.duration >= 0
        assert '"tick"' in run.result
    lateness = sorted(run.lateness for run in runs)
    # Load may delay some runs (each within its grace, checked above); the typical run
    # starts promptly: beat sends at the fire time, not at its next poll.
    assert lateness[len(lateness) // 2] < 0.5, lateness
    result = wait_for(
        lambda: TaskResult.objects.filter(task_id=runs[0].task_result_id).first(),
        timeout=10,
        what="the Celery task result",
    )
    assert result.status == "SUCCESS"
    assert result.task_name == "scheduling.run_job"
    assert result.periodic_task_name == job.name
    job.refresh_from_db()
    assert job.last_status == "success" and job.total_run_count >= 6
    assert job.next_run_at > runs[-1].scheduled_at


def test_paused_job_stops_running_and_resumed_job_runs_again(celery_processes):
    job = make_job(cron_expression="*/1 * * * * *")
    witness = make_job(name="witness", cron_expression="*/1 * * * * *")
    celery_processes.start_worker()
    celery_processes.start_beat()
    wait_for(
        lambda: len(executions(job)) >= 2, timeout=60, what="first runs", processes=celery_processes
    )

    services.job_pause(job=job)
    paused_at = dt.datetime.now(dt.UTC)
    wait_for_beat_past(witness, paused_at, celery_processes)
    # Beat sends a fire time only once it is due, and the pause is committed: none after it.
    late_runs = executions(job, scheduled_at__gt=paused_at)
    assert late_runs == [], "a paused job kept running"

    services.job_resume(job=job)
    resumed_at = dt.datetime.now(dt.UTC)
    wait_for(
        lambda: len([r for r in executions(job) if r.scheduled_at > resumed_at]) >= 2,
        timeout=60,
        what="runs after resume",
        processes=celery_processes,
    )


def test_schedule_edit_takes_effect_without_restart(celery_processes):
    job = make_job(cron_expression="0 0 0 1 1 *")  # once a year: never during the test
    celery_processes.start_worker()
    celery_processes.start_beat()
    time.sleep(3)
    assert executions(job) == []

    services.job_reschedule(job=job, cron_expression="*/1 * * * * *")
    edited_at = dt.datetime.now(dt.UTC)
    runs = wait_for(
        lambda: (r := executions(job)) and len(r) >= 3 and r,
        timeout=20,
        what="runs under the new schedule",
        processes=celery_processes,
    )
    assert (runs[0].scheduled_at - edited_at).total_seconds() < 5

    services.job_reschedule(
        job=job, trigger_type="interval", interval_every=3, interval_period="seconds"
    )
    switched_at = dt.datetime.now(dt.UTC)
    time.sleep(1.5)
    later = wait_for(
        lambda: (
            (
                r := [
                    x
                    for x in executions(job)
                    if x.scheduled_at > switched_at + dt.timedelta(seconds=1)
                ]
            )
            and len(r) >= 2
            and r
        ),
        timeout=20,
        what="runs under the interval schedule",
        processes=celery_processes,
    )
    gap = (later[1].scheduled_at - later[0].scheduled_at).total_seconds()
    assert gap == pytest.approx(3, abs=0.01)


def test_removed_job_stops_running(celery_processes):
    job = make_job(cron_expression="*/1 * * * * *")
    witness = make_job(name="witness", cron_expression="*/1 * * * * *")
    celery_processes.start_worker()
    celery_processes.start_beat()
    wait_for(
        lambda: len(executions(job)) >= 1,
        timeout=60,
        what="a first run",
        processes=celery_processes,
    )
    name = job.name
    services.job_remove(job=job)
    removed_at = dt.datetime.now(dt.UTC)
    wait_for_beat_past(witness, removed_at, celery_processes)
    late = JobExecution.objects.filter(job_name=name, scheduled_at__gt=removed_at)
    assert not late.exists()
    assert JobExecution.objects.filter(job_name=name).exists(), "history kept after removal"


def test_run_now_records_a_manual_run(celery_processes):
    job = make_job(cron_expression="0 0 0 1 1 *", kwargs={"who": "operator"})
    celery_processes.start_worker()
    task_id = services.job_run_now(job=job)
    run = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="success").first(),
        timeout=30,
        what="the manual run",
        processes=celery_processes,
    )
    assert run.trigger == "manual"
    assert run.task_result_id == task_id
    assert '"operator"' in run.result


def test_async_def_job_runs_on_a_worker(celery_processes):
    job = make_job(
        task="demo.async_sleep", cron_expression="*/2 * * * * *", kwargs={"seconds": 0.3}
    )
    celery_processes.start_worker()
    celery_processes.start_beat()
    run = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="success").first(),
        timeout=60,
        what="an async run",
        processes=celery_processes,
    )
    assert '"async": true' in run.result
    assert run.duration >= 0.3


def test_failing_job_records_its_traceback(celery_processes):
    job = make_job(
        task="demo.fail",
        trigger_type="interval",
        interval_every=1,
        interval_period="seconds",
        kwargs={"message": "disk on fire"},
    )
    celery_processes.start_worker()
    celery_processes.start_beat()
    run = wait_for(
        lambda: JobExecution.objects.filter(job=job, status="failure").first(),
        timeout=60,
        what="a failed run",
        processes=celery_processes,
    )
    assert run.exception == "RuntimeError: disk on fire"
    assert "Traceback (most recent call last)" in run.traceback
    assert "raise RuntimeError(message)" in run.traceback
    assert run.finished_at is not None and run.duration is not None
    result = wait_for(
        lambda: TaskResult.objects.filter(task_id=run.task_result_id).first(),
        timeout=10,
        what="the task result",
    )
    assert result.status == "FAILURE"


def test_job_whose_task_was_unregistered_is_refused_on_the_worker(celery_processes):
    job = make_job(cron_expression="*/1 * * * * *")
    # Tampered with behind the services' back: the worker must still refuse it.
    Job.objects.filter(pk=job.pk).update(task="os.system", args=["touch /tmp/pwned"])
    celery_processes.start_worker()
    celery_processes.start_beat()
    # Fire times that reach the worker past their grace (it starts slowly under load) are
    # recorded missed before any refusal: wait for the first one the worker tried.
    wait_for(
        lambda: JobExecution.objects.filter(job=job, status="failure").exists(),
        timeout=60,
        what="the refused run",
        processes=celery_processes,
    )
    rows = list(JobExecution.objects.filter(job=job).exclude(status__in=["running", "missed"]))
    assert rows and all(run.status == "failure" for run in rows), [r.status for r in rows]
    assert all("'os.system' is not registered" in run.exception for run in rows)
