"""What recording a run costs, and that the cheaper recording still records everything.

A worker records every run: the execution row, the Celery task result, the daily
statistics and the alert states. The number of statements per run is held here, so that
it cannot grow back unnoticed (``benchmarks/worker_throughput.py`` measures the rate).
"""

import datetime as dt
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
from celery.exceptions import TimeLimitExceeded
from celery.result import AsyncResult
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.forms.models import model_to_dict
from django.utils import timezone
from django_celery_results.models import TaskResult

from project.celery import app
from scheduling import runs, sql
from scheduling.models import Job, JobAlertStatus, JobDailyStats, JobExecution
from scheduling.runs import lease
from scheduling.task_results import TaskMessage
from scheduling.tasks import run_job
from tests.factories import make_job, make_running

# Real transactions and their commit hooks (the run events), as on a worker.
pytestmark = pytest.mark.django_db(transaction=True)

# start: lock + read the job, count running, insert if the rules let it run; finish:
# execution, task result, statistics, alert states, job; on SQLite BEGIN and COMMIT of
# each too (PostgreSQL's are implicit: sql.one_trip_transaction).
QUERIES_PER_RUN = 8 if connection.vendor == "postgresql" else 12
ROUND_TRIPS_PER_RUN = 2  # PostgreSQL: the start, and the finish


def message(job: Job, task_id: str | None = None) -> TaskMessage:
    return TaskMessage(
        task_id=task_id or str(uuid.uuid4()),
        worker="w1@test",
        periodic_task_name=job.name,
        args_repr="()",
        kwargs_repr=f"{{'job_id': {job.pk}}}",
    )


def run(job: Job, *, fire_time: dt.datetime | None = None, sent: TaskMessage | None = None):
    sent = sent or message(job)
    return runs.execution_run(
        job_id=job.pk,
        trigger="schedule",
        scheduled_at=fire_time or timezone.now(),
        task_id=sent.task_id,
        worker=sent.worker,
        message=sent,
    )


def test_a_run_costs_a_fixed_number_of_statements(django_assert_max_num_queries):
    job = make_job(task="demo.noop", alert_emails="ops@example.com")
    for _ in range(3):  # history, statistics and alert rows exist: the steady state
        run(job)
    with django_assert_max_num_queries(QUERIES_PER_RUN):
        run(job)
    assert JobExecution.objects.filter(job=job, status="success").count() == 4


@pytest.mark.skipif(connection.vendor != "postgresql", reason="round trips: PostgreSQL")
def test_a_run_costs_two_round_trips():
    job = make_job(task="demo.noop", alert_emails="ops@example.com")
    for _ in range(3):
        run(job)
    with sql.round_trips() as trips:
        run(job)
    assert trips == [ROUND_TRIPS_PER_RUN]
    execution = JobExecution.objects.filter(job=job).latest("pk")
    assert execution.status == "success" and execution.finished_at is not None
    with sql.round_trips() as trips:  # the counter counts: statements sent one by one
        for _ in range(3):
            sql.row_get(Job, job.pk)
    assert trips == [3]


def test_one_trip_transaction_is_all_or_nothing():
    job = make_job(task="demo.noop")
    other = make_job(task="demo.noop")
    with pytest.raises(IntegrityError), sql.one_trip_transaction():
        sql.row_update(Job, job.pk, last_status="failure")
        sql.row_update(Job, job.pk, name=other.name)  # the unique name: fails
        sql.row_update(Job, other.pk, last_status="failure")
    assert set(Job.objects.values_list("last_status", flat=True)) == {""}
    with sql.round_trips() as trips, sql.one_trip_transaction():
        sql.row_update(Job, job.pk, last_status="success")
        sql.row_update(Job, other.pk, last_status="success")
    assert trips == [1 if connection.vendor == "postgresql" else 0]
    assert set(Job.objects.values_list("last_status", flat=True)) == {"success"}
    with transaction.atomic():  # inside a transaction, it is part of it
        with sql.one_trip_transaction():
            sql.row_update(Job, job.pk, last_status="failure")
        transaction.set_rollback(True)
    assert Job.objects.get(pk=job.pk).last_status == "success"


def test_a_refused_start_writes_nothing_and_the_full_start_records_why():
    job = make_job(task="demo.noop", max_instances=1, misfire_grace_time=5)
    make_running(job)
    run(job)  # max instances reached
    late = timezone.now() - dt.timedelta(seconds=30)
    JobExecution.objects.filter(status="running").update(status="success", lease_until=None)
    run(job, fire_time=late)  # past its misfire grace
    coalescing = make_job(task="demo.noop", coalesce=True)
    run(coalescing)  # the fast start never starts a coalescing job: the full start does
    assert list(
        JobExecution.objects.filter(job=job).order_by("pk").values_list("status", flat=True)
    ) == ["success", "skipped", "missed"]
    assert JobExecution.objects.get(job=coalescing).status == "success"
    coalescing.refresh_from_db()
    assert coalescing.coalesced_until is not None


def test_the_count_does_not_grow_with_history(django_assert_max_num_queries):
    job = make_job(task="demo.noop", max_instances=1)
    for _ in range(30):
        run(job)
    with django_assert_max_num_queries(QUERIES_PER_RUN):
        run(job)


def test_every_field_is_recorded_with_the_task_result():
    job = make_job(task="demo.echo", args=["hi"])
    fire = timezone.now().replace(microsecond=0)
    sent = message(job)
    value = run(job, fire_time=fire, sent=sent)
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
    run(job)
    run(job)
    assert JobDailyStats.objects.get(job=job, status="success").count == 2


def test_a_failure_is_the_task_result_too():
    job = make_job(task="demo.fail", kwargs={"message": "disk on fire"})
    sent = message(job)
    with pytest.raises(RuntimeError):
        run(job, sent=sent)
    result = TaskResult.objects.get(task_id=sent.task_id)
    assert result.status == "FAILURE" and "RuntimeError" in result.result
    assert "raise RuntimeError(message)" in result.traceback
    stored = AsyncResult(sent.task_id, app=app)
    assert isinstance(stored.result, RuntimeError) and "disk on fire" in str(stored.result)


def test_a_retried_attempt_is_a_retry_then_the_outcome_under_one_task_id():
    job = make_job(task="demo.fail", max_retries=1)
    sent = message(job)
    with pytest.raises(runs.RetryLater):
        run(job, sent=sent)
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


def test_a_fire_time_that_does_not_run_still_has_its_task_result():
    job = make_job(task="demo.noop", misfire_grace_time=1)
    sent = message(job)
    assert run(job, fire_time=timezone.now() - dt.timedelta(minutes=1), sent=sent) == {"ran": False}
    assert JobExecution.objects.get(job=job).status == "missed"
    assert TaskResult.objects.get(task_id=sent.task_id).result == '{"ran": false}'


def test_a_duplicate_message_is_dropped_and_leaves_the_first_result_alone():
    job = make_job(task="demo.noop")
    fire = timezone.now().replace(microsecond=0)
    sent = message(job)
    run(job, fire_time=fire, sent=sent)
    # Delivered again (same task id), and once more under another id: neither runs.
    assert run(job, fire_time=fire, sent=sent) == {"ran": False}
    other = message(job)
    assert run(job, fire_time=fire, sent=other) == {"ran": False}
    assert JobExecution.objects.filter(job=job).count() == 1
    assert TaskResult.objects.get(task_id=sent.task_id).status == "SUCCESS"
    assert TaskResult.objects.get(task_id=other.task_id).result == '{"ran": false}'


def test_a_job_removed_before_its_run_fails_its_task():
    job = make_job(task="demo.noop")
    sent = message(job)
    Job.objects.filter(pk=job.pk).delete()
    with pytest.raises(runs.JobNotFoundError):
        run(job, sent=sent)
    assert TaskResult.objects.get(task_id=sent.task_id).status == "FAILURE"


def test_a_run_killed_over_its_hard_limit_fails_its_task():
    job = make_job(task="demo.noop")
    make_running(job, worker="w1@test", task_result_id="killed")
    assert runs.execution_mark_timed_out(task_id="killed", limit=2) == 1
    result = TaskResult.objects.get(task_id="killed")
    assert result.status == "FAILURE" and "TimeLimitExceeded" in result.result
    assert isinstance(AsyncResult("killed", app=app).result, TimeLimitExceeded)


def test_a_healthy_run_only_reads_the_alert_states():
    job = make_job(task="demo.noop", alert_emails="ops@example.com")
    run(job)
    assert not JobAlertStatus.objects.exists()  # nothing to change, nothing written


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


def test_one_statement_rows_match_the_orm():
    job = make_job(
        task="demo.echo",
        args=[1, "a"],
        kwargs={"k": {"n": 1}},
        retry_on=["ConnectionError"],
        coalesce=True,
    )
    loaded = sql.row_get(Job, job.pk)
    assert model_to_dict(loaded) == model_to_dict(Job.objects.get(pk=job.pk))
    assert loaded.created_at == Job.objects.get(pk=job.pk).created_at
    assert sql.row_get(Job, job.pk + 1000) is None
    now = timezone.now()
    new = sql.row_insert(
        JobExecution(
            job=job,
            job_name=job.name,
            task=job.task,
            trigger="manual",
            status="running",
            started_at=now,
        )
    )
    assert JobExecution.objects.get(pk=new.pk).started_at == now
    assert sql.row_update(Job, job.pk, increment=["total_run_count"], last_status="failure")
    job.refresh_from_db()
    assert (job.last_status, job.total_run_count) == ("failure", 1)


def test_worker_processes_keep_their_database_connection():
    from celery.fixups.django import DjangoWorkerFixup

    assert DjangoWorkerFixup(app).db_reuse_max == 1000


def test_one_thread_per_process_renews_the_lease_of_every_run_in_progress(settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "LEASE_SECONDS": 1.5}  # renewed every 0.5 s
    job = make_job(task="demo.noop")
    start = timezone.now()

    long_run, short_run = (
        make_running(job, started_at=start, lease=1.5, task_result_id=name)
        for name in ("long", "short")
    )
    renewer = lease.LeaseRenewer()
    renewer.add(long_run.pk)
    renewer.add(short_run.pk)
    renewer.discard(short_run.pk)  # over before the first renewal
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        long_run.refresh_from_db()
        if long_run.lease_until > start + dt.timedelta(seconds=2):
            break
        time.sleep(0.1)
    assert long_run.lease_until > start + dt.timedelta(seconds=2), "never renewed"
    assert renewer._thread.name == "lease-renewer"
    short_run.refresh_from_db()
    assert short_run.lease_until == start + dt.timedelta(seconds=1.5)
    renewer.discard(long_run.pk)
    time.sleep(0.7)  # a round may have been under way when it was discarded
    long_run.refresh_from_db()
    last = long_run.lease_until
    time.sleep(1.2)
    long_run.refresh_from_db()
    assert long_run.lease_until == last  # no longer renewed


@contextmanager
def job_locked_for(job: Job, seconds: float):
    """Another transaction holds ``job``'s row lock for ``seconds`` from entering."""
    locked, release = threading.Event(), threading.Event()

    def hold_the_job_lock() -> None:
        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=job.pk)
                locked.set()
                release.wait(10)
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
        run(job)
    dead.refresh_from_db()
    assert dead.status == "lost"
    assert JobExecution.objects.filter(job=job, status="success").count() == 1


def test_a_start_that_waits_for_the_job_lock_past_its_grace_is_missed():
    # The one-trip start sends the lateness measured before it waited for the lock.
    job = make_job(task="demo.echo", args=["ran"], misfire_grace_time=1)
    sent = message(job)
    with job_locked_for(job, 1.5):
        value = run(job, fire_time=timezone.now(), sent=sent)
    assert value == {"ran": False}
    execution = JobExecution.objects.get(job=job)
    assert execution.status == "missed" and "the grace is 1s" in execution.reason
    assert TaskResult.objects.get(task_id=sent.task_id).status == "SUCCESS"


def test_an_exception_in_a_one_trip_transaction_commits_nothing():
    job = make_job(task="demo.noop")
    with pytest.raises(RuntimeError), sql.one_trip_transaction():
        sql.row_update(Job, job.pk, last_status="failure")
        raise RuntimeError("e.g. a soft time limit arriving mid-way")
    assert Job.objects.get(pk=job.pk).last_status == ""
    sql.row_update(Job, job.pk, last_status="success")  # the connection goes on working
    assert Job.objects.get(pk=job.pk).last_status == "success"


def test_statements_keep_working_after_a_one_trip_transaction_failed():
    # psycopg counts a statement as prepared when it sends it; after an error the server
    # skips it, so a connection kept as it was would later run a statement never prepared.
    job = make_job(task="demo.noop")
    other = make_job(task="demo.noop")
    threshold = settings.DATABASES["default"].get("OPTIONS", {}).get("prepare_threshold") or 5
    sql.row_get(Job, job.pk)  # psycopg counts its runs from here
    for _ in range(threshold + 1):
        with pytest.raises(IntegrityError), sql.one_trip_transaction():
            sql.row_update(Job, job.pk, name=other.name)  # fails: names are unique
            sql.row_get(Job, job.pk)  # skipped by the server
    assert sql.row_get(Job, job.pk).name == job.name


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pipelines: PostgreSQL")
def test_one_trip_transactions_do_not_nest():
    outer, inner = sql.one_trip_transaction(), sql.one_trip_transaction()
    with pytest.raises(RuntimeError, match="nested"), outer, inner:
        pass
