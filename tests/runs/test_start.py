"""The start of a run: the rules applied under the job's lock, duplicates, refusals."""

import datetime as dt
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_celery_results.models import TaskResult

from scheduling import runs
from scheduling.models import Job, JobExecution
from tests.factories import make_job, make_running, run_scheduled, sent_message

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_refused_start_writes_nothing_and_the_full_start_records_why():
    job = make_job(task="demo.noop", max_instances=1, misfire_grace_time=5)
    make_running(job)
    run_scheduled(job)  # max instances reached
    late = timezone.now() - dt.timedelta(seconds=30)
    JobExecution.objects.filter(status="running").update(status="success", lease_until=None)
    run_scheduled(job, fire_time=late)  # past its misfire grace
    coalescing = make_job(task="demo.noop", coalesce=True)
    run_scheduled(coalescing)  # the fast start never starts a coalescing job: the full start does
    assert list(
        JobExecution.objects.filter(job=job).order_by("pk").values_list("status", flat=True)
    ) == ["success", "skipped", "missed"]
    assert JobExecution.objects.get(job=coalescing).status == "success"
    coalescing.refresh_from_db()
    assert coalescing.coalesced_until is not None


def test_a_fire_time_that_does_not_run_still_has_its_task_result():
    job = make_job(task="demo.noop", misfire_grace_time=1)
    sent = sent_message(job)
    assert run_scheduled(job, fire_time=timezone.now() - dt.timedelta(minutes=1), sent=sent) == {
        "ran": False
    }
    assert JobExecution.objects.get(job=job).status == "missed"
    assert TaskResult.objects.get(task_id=sent.task_id).result == '{"ran": false}'


def test_a_duplicate_message_is_dropped_and_leaves_the_first_result_alone():
    job = make_job(task="demo.noop")
    fire = timezone.now().replace(microsecond=0)
    sent = sent_message(job)
    run_scheduled(job, fire_time=fire, sent=sent)
    # Delivered again (same task id), and once more under another id: neither runs.
    assert run_scheduled(job, fire_time=fire, sent=sent) == {"ran": False}
    other = sent_message(job)
    assert run_scheduled(job, fire_time=fire, sent=other) == {"ran": False}
    assert JobExecution.objects.filter(job=job).count() == 1
    assert TaskResult.objects.get(task_id=sent.task_id).status == "SUCCESS"
    assert TaskResult.objects.get(task_id=other.task_id).result == '{"ran": false}'


def test_a_job_removed_before_its_run_fails_its_task():
    job = make_job(task="demo.noop")
    sent = sent_message(job)
    Job.objects.filter(pk=job.pk).delete()
    with pytest.raises(runs.JobNotFoundError):
        run_scheduled(job, sent=sent)
    assert TaskResult.objects.get(task_id=sent.task_id).status == "FAILURE"


@contextmanager
def job_locked_for(job: Job, seconds: float, then=None):
    """Another transaction holds ``job``'s row lock for ``seconds`` from entering, and
    runs ``then`` in it before it commits."""
    locked, release = threading.Event(), threading.Event()

    def hold_the_job_lock() -> None:
        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=job.pk)
                locked.set()
                release.wait(10)
                if then is not None:
                    then()
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_job_lock)
    holder.start()
    timer = threading.Timer(seconds, release.set)
    try:
        assert locked.wait(10)
        timer.start()
        yield
    finally:
        timer.cancel()
        release.set()
        holder.join(10)


def test_a_lease_that_expires_while_the_start_waits_for_the_job_lock_frees_its_slot():
    # The lock and the count of running runs go to the database together; a lease that
    # expired while the start waited for the lock (another transaction held the job's
    # row) must count as expired, not as a run still going.
    job = make_job(task="demo.noop", max_instances=1)
    dead = make_running(job, worker="killed@test", lease=0.5)
    with job_locked_for(job, 1.0):  # past the dead run's lease
        run_scheduled(job)
    dead.refresh_from_db()
    assert dead.status == "lost"
    assert JobExecution.objects.filter(job=job, status="success").count() == 1


def test_a_start_that_waits_for_the_job_lock_past_its_grace_is_missed():
    # The one-trip start sends the lateness measured before it waited for the lock.
    job = make_job(task="demo.echo", args=["ran"], misfire_grace_time=1)
    sent = sent_message(job)
    with job_locked_for(job, 1.5):
        value = run_scheduled(job, fire_time=timezone.now(), sent=sent)
    assert value == {"ran": False}
    execution = JobExecution.objects.get(job=job)
    assert execution.status == "missed" and "the grace is 1s" in execution.reason
    assert TaskResult.objects.get(task_id=sent.task_id).status == "SUCCESS"


def test_coalesce_is_not_claimed_by_a_run_that_was_skipped():
    job = make_job(cron_expression="*/1 * * * * *", coalesce=True, max_instances=1)
    now = make_running(job).started_at
    fire = now.replace(microsecond=0) - dt.timedelta(seconds=1)
    started = runs.execution_start(
        job_id=job.pk,
        trigger="schedule",
        scheduled_at=fire,
        jitter=0,
        attempt=0,
        task_id="t",
        worker="w",
    )
    assert started is None
    assert JobExecution.objects.get(scheduled_at=fire).status == "skipped"
    job.refresh_from_db()
    assert job.coalesced_until is None


def test_the_same_fire_time_delivered_twice_runs_once():
    job = make_job(cron_expression="*/1 * * * * *")
    fire = timezone.now().replace(microsecond=0)
    kwargs = dict(
        job_id=job.pk, trigger="schedule", scheduled_at=fire, jitter=0, attempt=0, worker="w"
    )
    assert runs.execution_start(task_id="a", **kwargs) is not None
    assert runs.execution_start(task_id="b", **kwargs) is None
    assert JobExecution.objects.filter(job=job).count() == 1


def test_a_manual_runs_message_delivered_twice_runs_once():
    key = f"twice-{uuid.uuid4().hex}"
    job = make_job(task="tests.count_runs", kwargs={"key": key})
    sent = sent_message(job)
    for _ in range(2):
        runs.execution_run(
            job_id=job.pk,
            trigger="manual",
            scheduled_at=timezone.now(),
            task_id=sent.task_id,
            worker=sent.worker,
            message=sent,
        )
    assert JobExecution.objects.filter(job=job).count() == 1
    assert (Path(settings.VAR_DIR) / f"calls-{key}").read_text() == "x\n"  # called once
    assert TaskResult.objects.get(task_id=sent.task_id).status == "SUCCESS"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="isolation levels: PostgreSQL")
def test_max_instances_holds_when_the_database_defaults_to_repeatable_read():
    from tests.test_checks import database_defaulting_to

    job = make_job(task="demo.noop", max_instances=1)
    # Another worker starts a run while this one waits for the job's lock.
    another = job_locked_for(job, 1.0, then=lambda: make_running(job, worker="other@test"))
    with database_defaulting_to("repeatable read", pinned=True), another:
        run_scheduled(job)
    statuses = sorted(JobExecution.objects.filter(job=job).values_list("status", flat=True))
    assert statuses == ["running", "skipped"]


def on_record_as_running(job, sent, fire, *, lease_left: float) -> JobExecution:
    """The row a first delivery of ``sent`` started; its lease ends ``lease_left`` s from now."""
    return JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="schedule",
        status="running",
        scheduled_at=fire,
        started_at=fire,
        lease_until=timezone.now() + dt.timedelta(seconds=lease_left),
        worker="dead@test",
        task_result_id=sent.task_id,
    )


def test_a_message_delivered_again_runs_the_run_its_dead_worker_never_ran():
    key = f"dead-{uuid.uuid4().hex}"
    job = make_job(task="tests.count_runs", kwargs={"key": key}, misfire_grace_time=60)
    sent, fire = sent_message(job), timezone.now()
    on_record_as_running(job, sent, fire, lease_left=-1)
    assert run_scheduled(job, fire_time=fire, sent=sent) == 1
    run = JobExecution.objects.get(job=job)
    assert (run.status, run.worker) == ("success", "w1@test")
    assert (Path(settings.VAR_DIR) / f"calls-{key}").read_text() == "x\n"


def test_a_message_delivered_again_while_its_run_is_alive_is_dropped():
    job = make_job(task="demo.noop")
    sent, fire = sent_message(job), timezone.now()
    alive = on_record_as_running(job, sent, fire, lease_left=30)
    assert run_scheduled(job, fire_time=fire, sent=sent) == {"ran": False}
    alive.refresh_from_db()
    assert (alive.status, alive.worker) == ("running", "dead@test")


def test_a_dead_run_taken_over_past_its_grace_is_missed():
    job = make_job(task="demo.noop", misfire_grace_time=5)
    sent, fire = sent_message(job), timezone.now() - dt.timedelta(minutes=1)
    on_record_as_running(job, sent, fire, lease_left=-1)
    assert run_scheduled(job, fire_time=fire, sent=sent) == {"ran": False}
    run = JobExecution.objects.get(job=job)
    assert run.status == "missed" and run.reason.startswith("Started 6")


def test_a_late_message_for_a_fire_time_inside_a_summary_is_dropped():
    """Beat recorded the fire times of its outage as one summary; a message for one of
    them delivered late (sent before the outage) must not explain it a second time."""
    from scheduling.runs.rules import Missed

    job = make_job(trigger_type="interval", interval_every=10, interval_period="seconds")
    first = job.next_run_at - dt.timedelta(hours=1)
    runs.execution_record_missed_summaries(
        missed=[(job, job.trigger(), Missed(first=first, before=job.next_run_at))],
        reason="Not sent: beat was down.",
    )
    inside = first + dt.timedelta(seconds=600)
    sent = sent_message(job)
    started = runs.execution_start(
        job_id=job.pk,
        trigger="schedule",
        scheduled_at=inside,
        jitter=0,
        attempt=0,
        task_id=sent.task_id,
        worker="w",
        message=sent,
    )
    assert started is None
    assert not JobExecution.objects.filter(job=job, scheduled_at=inside).exists()
    assert TaskResult.objects.filter(task_id=sent.task_id).exists()
