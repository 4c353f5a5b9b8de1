"""The service API: register, pause, resume, reschedule, remove, delay, status, run."""

import datetime as dt
import itertools
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from scheduling import selectors, services
from scheduling.models import Job, JobExecution
from tests.factories import make_job, make_running

pytestmark = pytest.mark.django_db


def test_register_cron_computes_next_run_in_the_jobs_timezone():
    job = services.job_register_cron(
        name="nightly", task="demo.echo", expression="0 0 2 * * *", timezone="Asia/Shanghai"
    )
    local = job.next_run_at.astimezone(job.trigger().tz)
    assert (local.hour, local.minute, local.second) == (2, 0, 0)
    assert job.next_run_at > timezone.now()


def test_guide_defaults_are_the_job_defaults():
    job = make_job()
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (False, 3, 15)
    assert job.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"cron_expression": "0 61 * * * *"}, "cron_expression", "minute field '61'"),
        ({"cron_expression": "0 0 0 30 2 *"}, "cron_expression", "never fires"),
        ({"task": "os.system"}, "task", "'os.system' is not registered"),
        ({"args": {"a": 1}}, "args", "JSON list"),
        ({"kwargs": [1, 2]}, "kwargs", "JSON object"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Unknown timezone 'Mars/Olympus'"),
        ({"trigger_type": "interval", "interval_every": None}, "interval_every", "at least 1"),
        ({"trigger_type": "date", "run_at": None}, "run_at", "date and time"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_saved(fields, field, message):
    with pytest.raises(ValidationError) as caught:
        make_job(name="bad", **fields)
    assert message in " ".join(caught.value.message_dict[field])
    assert not Job.objects.filter(name="bad").exists()


def test_duplicate_name_is_refused():
    make_job(name="same")
    with pytest.raises(ValidationError, match="already exists"):
        make_job(name="same")


def test_every_schedule_change_stores_when_beat_sends_next():
    job = make_job(cron_expression="0 0 * * * *")
    assert job.dispatch_at == job.next_run_at > timezone.now()
    services.job_reschedule(job=job, cron_expression="*/5 * * * * *")
    stored = Job.objects.get(pk=job.pk)
    assert stored.dispatch_at == stored.next_run_at
    assert (stored.next_run_at - timezone.now()).total_seconds() <= 5
    services.job_pause(job=job)
    stored = Job.objects.get(pk=job.pk)
    assert stored.dispatch_at is None and stored.next_run_at is None


def test_pause_clears_next_run_and_resume_restores_it():
    job = make_job(cron_expression="*/10 * * * * *")
    services.job_pause(job=job)
    job.refresh_from_db()
    assert (job.enabled, job.next_run_at) == (False, None)
    services.job_resume(job=job)
    job.refresh_from_db()
    assert job.enabled and job.next_run_at > timezone.now()
    assert job.version == 3


def test_reschedule_moves_the_next_run():
    job = make_job(cron_expression="0 0 0 1 1 *")
    services.job_reschedule(
        job=job, trigger_type="interval", interval_every=30, interval_period="seconds"
    )
    job.refresh_from_db()
    assert 0 < (job.next_run_at - timezone.now()).total_seconds() <= 30


def test_reschedule_rejects_non_trigger_fields():
    job = make_job()
    with pytest.raises(TypeError, match="Not trigger fields: args"):
        services.job_reschedule(job=job, args=[1])


def test_editing_arguments_keeps_the_pending_fire_time():
    job = make_job(cron_expression="0 0 * * * *")
    pending = job.next_run_at
    services.job_update(job=job, kwargs={"x": 1})
    job.refresh_from_db()
    assert job.next_run_at == pending and job.kwargs == {"x": 1}


def test_delay_registers_a_one_off_job():
    job = services.job_schedule_delay(task="demo.echo", delay_seconds=30)
    assert job.trigger_type == "date"
    assert 29 <= (job.next_run_at - timezone.now()).total_seconds() <= 30
    assert job.name.startswith("delayed:demo.echo:")


def test_register_date_in_the_past_never_fires():
    job = services.job_register_date(
        name="past", task="demo.echo", run_at=timezone.now() - dt.timedelta(hours=1)
    )
    assert job.next_run_at is None


def test_remove_keeps_execution_history():
    job = make_job()
    JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="manual",
        status="success",
        started_at=timezone.now(),
    )
    services.job_remove(job=job)
    assert not Job.objects.filter(name=job.name).exists()
    assert JobExecution.objects.get(job_name=job.name).job is None


def test_status_mirrors_the_guide():
    job = make_job(name="status", args=[1], kwargs={"k": "v"}, cron_expression="0 */5 * * * *")
    status = selectors.job_status(job=job)
    assert status["id"] == job.pk
    assert status["name"] == "status"
    assert status["next_run_time"] == job.next_run_at.isoformat()
    assert status["trigger"] == "cron[0 */5 * * * *] Asia/Shanghai"
    assert status["trigger_description"] == "Every 5 minutes (Asia/Shanghai)"
    assert (status["task"], status["args"], status["kwargs"]) == ("demo.echo", [1], {"k": "v"})
    assert [s["name"] for s in selectors.job_status_list()] == ["status"]


def test_upcoming_runs_lists_the_next_five():
    job = make_job(cron_expression="0 */5 * * * *")
    runs = selectors.job_upcoming_runs(job=job, count=5)
    assert len(runs) == 5
    assert all((b - a) == dt.timedelta(minutes=5) for a, b in itertools.pairwise(runs))


def test_run_now_refuses_an_unregistered_task():
    job = make_job()
    Job.objects.filter(pk=job.pk).update(task="os.system")
    job.refresh_from_db()
    with pytest.raises(ValidationError, match="not registered"):
        services.job_run_now(job=job)


def test_grace_of_zero_is_refused():
    with pytest.raises(ValidationError) as caught:
        make_job(misfire_grace_time=0)
    assert "greater than or equal to 1" in str(caught.value.message_dict["misfire_grace_time"])


def test_absurd_interval_is_refused_not_a_crash():
    with pytest.raises(ValidationError) as caught:
        make_job(trigger_type="interval", interval_every=2_000_000, interval_period="weeks")
    assert "at most 100 years" in " ".join(caught.value.message_dict["interval_every"])


def test_a_broken_job_can_still_be_paused():
    job = make_job()
    Job.objects.filter(pk=job.pk).update(task="gone.task", cron_expression="0 61 * * * *")
    job.refresh_from_db()
    services.job_pause(job=job)
    job.refresh_from_db()
    assert not job.enabled and job.next_run_at is None
    with pytest.raises(ValidationError):
        services.job_resume(job=job)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL")
def test_a_run_recorded_while_its_job_is_removed_is_kept():
    # A worker holds the job's row lock (its run's start) while the job is removed.
    job = make_job(name="removed-while-starting")
    locked, release = threading.Event(), threading.Event()

    def start_a_run() -> None:
        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=job.pk)
                locked.set()
                release.wait(10)
                make_running(job)
        finally:
            connection.close()

    worker = threading.Thread(target=start_a_run)
    worker.start()
    assert locked.wait(10)
    threading.Timer(0.5, release.set).start()
    services.job_remove(job=job)
    worker.join(10)
    run = JobExecution.objects.get(job_name="removed-while-starting")
    assert run.job_id is None and not Job.objects.filter(pk=job.pk).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="deadlocks: PostgreSQL")
def test_a_job_removed_while_a_run_of_it_is_recorded_is_removed_after_a_deadlock():
    # A worker's finish holds its run's row and then wants the job's row (to write the
    # job's last outcome) while the job is being removed: the removal holds the job's row
    # and wants the run's (to keep it on record without its job). PostgreSQL breaks the
    # deadlock by failing the removal's statement; the removal tries again and succeeds.
    import psycopg

    job = make_job(name="removed-while-finishing")
    run = make_running(job)
    params = connection.get_connection_params()
    wanted = {
        key: params[key]
        for key in ("dbname", "user", "password", "host", "port")
        if params.get(key)
    }
    outcome: dict[str, BaseException | None] = {}

    def remove() -> None:
        try:
            services.job_remove(job=Job.objects.get(pk=job.pk))
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    with psycopg.connect(**wanted) as worker:
        worker.execute("SET deadlock_timeout = '60s'")  # the removal is the one to give way
        worker.execute(
            "UPDATE scheduling_jobexecution SET reason = 'finishing' WHERE id = %s", [run.pk]
        )
        remover = threading.Thread(target=remove)
        remover.start()
        # The removal now holds the job's row and waits for the run's.
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while dt.datetime.now() < deadline:
            worker.execute("SELECT pg_stat_clear_snapshot()")  # a fresh look, in a transaction
            waiting = worker.execute(
                "SELECT state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            if any(wait == "Lock" for _state, wait, _event, _query in waiting):
                break
        worker.execute("UPDATE scheduling_job SET last_status = 'success' WHERE id = %s", [job.pk])
        worker.commit()
    remover.join(30)
    assert outcome == {"error": None}, outcome
    assert not Job.objects.filter(pk=job.pk).exists()
    kept = JobExecution.objects.get(pk=run.pk)
    assert (kept.job_id, kept.reason) == (None, "finishing")
