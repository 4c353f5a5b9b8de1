"""The beat scheduler's passes, in one process (the e2e tests run real beats and workers).

Sending is observed at its boundary, ``publish.messages_publish`` (what would go to the
broker, a batch at a time) and ``services.job_dispatch`` (one message); everything else
(queries, locks, the lease, the stored fire times, the messages built) is real.
"""

import datetime as dt
import json
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from project.celery import app
from scheduling import publish, services, signals
from scheduling import scheduler as scheduler_module
from scheduling.models import Job, JobChange, JobExecution, SchedulerLease, SentFireTime
from scheduling.scheduler import JobScheduler, beat_broker_options, beat_database_options
from tests.factories import make_job

pytestmark = pytest.mark.django_db


def sent_runs(messages) -> list[tuple[str, dt.datetime, float]]:
    """(job name, fire time, jitter) of built run messages."""
    runs = []
    for message in messages:
        kwargs = json.loads(message.body)[1]
        runs.append(
            (
                message.headers["periodic_task_name"],
                dt.datetime.fromisoformat(kwargs["scheduled_at"]),
                kwargs["jitter"],
            )
        )
    return runs


@pytest.fixture
def sent(monkeypatch):
    """Runs the scheduler sends, as (job name, fire time, jitter)."""
    runs: list[tuple[str, dt.datetime, float]] = []

    def dispatch(*, job, scheduled_at, jitter, **kwargs):
        runs.append((job.name, scheduled_at, jitter))
        return "task-id"

    monkeypatch.setattr(services, "job_dispatch", dispatch)
    monkeypatch.setattr(
        publish,
        "messages_publish",
        lambda producer, messages, **_: runs.extend(sent_runs(messages)),
    )
    return runs


@pytest.fixture
def one_per_batch(monkeypatch):
    """Each batch holds one message, and sending it is ``services.job_dispatch``."""
    monkeypatch.setattr(scheduler_module, "PUBLISH_BATCH", 1)

    def publish_one(producer, messages, **_):
        for name, fire, jitter in sent_runs(messages):
            services.job_dispatch(
                job=Job.objects.get(name=name),
                trigger="schedule",
                scheduled_at=fire,
                jitter=jitter,
                retry_policy={"max_retries": 1},
            )

    monkeypatch.setattr(publish, "messages_publish", publish_one)


def new_scheduler() -> JobScheduler:
    scheduler = JobScheduler(app=app, lazy=True)
    return scheduler


def leader() -> JobScheduler:
    """A scheduler holding the lease: its passes send."""
    scheduler = new_scheduler()
    assert scheduler.lease.acquire()
    return scheduler


@pytest.fixture
def scheduler():
    return leader()


def make_due(job: Job, fire: dt.datetime) -> None:
    Job.objects.filter(pk=job.pk).update(next_run_at=fire, dispatch_at=fire)


def now_s() -> dt.datetime:
    return timezone.now().replace(microsecond=0)


def test_sends_due_jobs_only_and_stores_the_following_fire_time(scheduler, sent):
    due = make_job(name="due", cron_expression="*/1 * * * * *")
    make_job(name="later")
    services.job_pause(job=make_job(name="paused", cron_expression="*/1 * * * * *"))
    fire = now_s()
    make_due(due, fire)
    assert scheduler.dispatch_due(timezone.now()) == 1
    assert sent == [("due", fire, 0.0)]
    due.refresh_from_db()
    assert due.next_run_at == due.dispatch_at == fire + dt.timedelta(seconds=1)


def test_a_pass_costs_the_same_whatever_the_number_of_jobs(
    scheduler, sent, django_assert_max_num_queries
):
    due = make_job(cron_expression="*/1 * * * * *")
    make_due(due, now_s())
    with django_assert_max_num_queries(6) as few:
        scheduler.dispatch_due(timezone.now())
    services.job_bulk_create(
        jobs=[
            Job(
                name=f"idle-{i}",
                task="demo.echo",
                trigger_type="cron",
                cron_expression="0 0 0 1 1 *",
            )
            for i in range(300)
        ]
    )
    make_due(due, now_s())
    with django_assert_max_num_queries(len(few.captured_queries)):
        scheduler.dispatch_due(timezone.now())
    assert len(sent) == 2


def test_a_storm_is_locked_a_lot_at_a_time_and_sent_in_one_pass_before_any_write(
    scheduler, sent, monkeypatch
):
    """Due rows are read BEAT_BATCH_SIZE at a time (rows this transaction locked are not
    skipped by its own SKIP LOCKED: each lot starts after the last), all sent before the
    pass writes anything, up to PASS_ROWS rows a pass; the rest waits for the next pass."""
    monkeypatch.setattr(scheduler, "batch_size", 3)
    monkeypatch.setattr(scheduler_module, "PASS_ROWS", 12)
    fire = now_s()
    jobs = [make_job(name=f"storm-{i:02}", cron_expression="*/1 * * * * *") for i in range(14)]
    for job in jobs:
        make_due(job, fire)
    writes: list[int] = []
    update = scheduler_module.sql.rows_update

    def rows_update(instances, names):
        writes.append(len(sent))  # how many were sent when the writes began
        update(instances, names)

    monkeypatch.setattr(scheduler_module.sql, "rows_update", rows_update)
    assert scheduler.dispatch_due(timezone.now()) == 12  # 4 lots of 3
    assert writes == [12]
    assert sorted(name for name, *_ in sent) == [f"storm-{i:02}" for i in range(12)]
    assert scheduler.dispatch_due(timezone.now()) == 2
    assert sorted(name for name, *_ in sent) == [job.name for job in jobs]  # each once
    following = set(Job.objects.values_list("next_run_at", flat=True))
    assert following == {fire + dt.timedelta(seconds=1)}
    assert SentFireTime.objects.filter(scheduled_at=fire).count() == 14


def test_jobs_sharing_a_trigger_compute_their_following_fire_time_once(scheduler, sent):
    from scheduling import schedules

    fire = now_s()
    for i in range(5):
        make_due(make_job(name=f"shared-{i}", cron_expression="*/1 * * * * *"), fire)
    scheduler_module._shared_next_after.cache_clear()
    calls = []
    original = schedules.CronTrigger.next_after

    def counted(self, moment):
        calls.append(moment)
        return original(self, moment)

    schedules.CronTrigger.next_after = counted
    try:
        assert scheduler.dispatch_due(timezone.now()) == 5
    finally:
        schedules.CronTrigger.next_after = original
    assert calls == [fire]
    assert set(Job.objects.values_list("next_run_at", flat=True)) == {
        fire + dt.timedelta(seconds=1)
    }


def test_an_idle_pass_reads_one_row_and_sleeps_until_the_next_fire_time(
    scheduler, sent, django_assert_max_num_queries
):
    job = make_job(cron_expression="*/1 * * * * *")
    soon = timezone.now() + dt.timedelta(seconds=0.4)
    make_due(job, soon)
    # Heartbeats and the ledger's check (every few seconds), and the look for outages to
    # record (once a leader, then after a catch-up) are counted elsewhere.
    scheduler._last_heartbeat = scheduler._last_ledger_check = float("inf")
    scheduler._missed_pending = False
    with django_assert_max_num_queries(1):
        wait = scheduler.tick()
    assert 0 < wait <= 0.4
    make_due(job, timezone.now() + dt.timedelta(hours=1))
    assert scheduler.tick() == scheduler.poll_interval
    assert sent == []


def test_an_edit_is_seen_on_the_next_pass_without_any_reload(scheduler, sent):
    job = make_job(cron_expression="0 0 0 1 1 *")
    assert scheduler.tick() == scheduler.poll_interval
    services.job_reschedule(job=job, cron_expression="*/1 * * * * *")
    wait = scheduler.tick()
    assert wait <= 1.0
    scheduler.dispatch_due(timezone.now() + dt.timedelta(seconds=wait))
    assert [name for name, *_ in sent] == [job.name]


def test_a_finished_one_off_job_is_never_sent_again_even_by_a_new_beat(scheduler, sent):
    job = services.job_register_date(
        name="once", task="demo.echo", run_at=timezone.now() + dt.timedelta(seconds=1)
    )
    scheduler.dispatch_due(job.run_at)
    assert Job.objects.get(pk=job.pk).next_run_at is None
    scheduler.close()  # releases the lease
    restarted = new_scheduler()
    assert restarted.lease.acquire()
    assert restarted.dispatch_due(timezone.now() + dt.timedelta(days=1)) == 0
    assert sent == [("once", job.run_at, 0.0)]


def test_a_broken_row_is_recorded_and_stopped_and_beat_goes_on(scheduler, sent):
    good = make_job(name="good", cron_expression="*/1 * * * * *")
    bad = make_job(name="bad", cron_expression="*/1 * * * * *")
    fire = now_s()
    make_due(good, fire)
    make_due(bad, fire - dt.timedelta(seconds=60))  # late: planned before it is sent
    Job.objects.filter(pk=bad.pk).update(timezone="Mars/Olympus")
    scheduler.dispatch_due(timezone.now())
    assert [name for name, *_ in sent] == ["good"]
    record = JobExecution.objects.get(job=bad)
    assert record.status == "missed" and "Cannot be scheduled" in record.reason
    assert Job.objects.get(pk=bad.pk).dispatch_at is None
    assert Job.objects.get(pk=good.pk).dispatch_at == fire + dt.timedelta(seconds=1)


def test_a_row_that_breaks_after_its_fire_time_was_stored_is_sent_then_stopped(scheduler, sent):
    """On time, the stored fire time is sent before anything is computed; the following
    one cannot be, so the job stops and its audit trail says why."""
    bad = make_job(name="bad", cron_expression="*/1 * * * * *")
    fire = now_s()
    make_due(bad, fire)
    Job.objects.filter(pk=bad.pk).update(timezone="Mars/Olympus")
    scheduler.dispatch_due(timezone.now())
    assert sent == [("bad", fire, 0.0)]
    assert Job.objects.get(pk=bad.pk).dispatch_at is None
    change = JobChange.objects.get(job=bad, action="stopped")
    assert change.source == "system" and "Cannot be scheduled" in change.changes["error"]


def test_fire_times_missed_while_beat_was_down_are_recorded(scheduler, sent):
    job = make_job(cron_expression="*/1 * * * * *", misfire_grace_time=5)
    down_since = now_s() - dt.timedelta(seconds=30)
    make_due(job, down_since)
    scheduler.dispatch_due(timezone.now())
    # The pass sends, and keeps the span it did not send on the job's row...
    assert not JobExecution.objects.exists()
    assert Job.objects.get(pk=job.pk).missed_from == down_since
    # ... which a pass with nothing due records: one summary, the first and last fire
    # time beat did not send, and how many.
    scheduler._record_pending_missed(timezone.now(), None)
    assert Job.objects.get(pk=job.pk).missed_from is None
    [summary] = JobExecution.objects.filter(job=job, status="missed")
    assert summary.scheduled_at == down_since
    assert summary.reason.startswith("Not sent: beat was down")
    seconds = (summary.missed_until - summary.scheduled_at).total_seconds()
    assert summary.missed_count == seconds + 1 >= 24
    # The first fire time still within the grace is the one sent.
    [(_, fire, _)] = sent
    assert fire == summary.missed_until + dt.timedelta(seconds=1)
    assert (timezone.now() - fire).total_seconds() <= 6


def interval_jobs(count: int, every: int = 10) -> list[Job]:
    return services.job_bulk_create(
        jobs=[
            Job(
                name=f"every-{i}",
                task="demo.echo",
                trigger_type="interval",
                interval_every=every,
                interval_period="seconds",
            )
            for i in range(count)
        ]
    )


def test_an_outage_costs_a_pass_the_same_whatever_its_length(
    scheduler, sent, django_assert_max_num_queries
):
    """Each job's missed fire times are one summary row, written in a few statements for
    the whole pass: neither the length of the outage nor the number of jobs adds any."""
    jobs = interval_jobs(20)
    step = dt.timedelta(seconds=10)
    for hours in (1, 24):
        JobExecution.objects.all().delete()
        fire = now_s() - dt.timedelta(hours=hours)
        Job.objects.filter(pk__in=[j.pk for j in jobs]).update(
            next_run_at=fire, dispatch_at=fire, schedule_anchor=fire - step
        )
        sent.clear()
        with django_assert_max_num_queries(12):
            now = timezone.now()
            assert scheduler.dispatch_due(now) == 20
        with django_assert_max_num_queries(13):  # and one probe for rows left locked
            scheduler._record_pending_missed(timezone.now(), None)
        summaries = list(JobExecution.objects.filter(status="missed"))
        assert len(summaries) == 20
        oldest_allowed = now - dt.timedelta(seconds=15)
        for summary in summaries:
            assert summary.scheduled_at == fire
            assert summary.missed_until == fire + (summary.missed_count - 1) * step
            assert summary.missed_until < oldest_allowed <= summary.missed_until + step
        assert summaries[0].missed_count >= hours * 360 - 2
        # Sent: each job's first fire time within the grace, the one after the summary.
        assert sorted(f for _, f, _ in sent) == [summaries[0].missed_until + step] * 20


def test_an_outage_is_recorded_after_the_catch_up_in_bounded_passes(
    scheduler, sent, monkeypatch, django_capture_on_commit_callbacks
):
    """Recording an outage (a summary, its statistics and its event a job) never stands
    before a current fire time: the passes that send only keep each span on its job's
    row; passes with nothing due record them, within a time budget that never reaches
    the next due fire time, and announce each once committed."""
    events = []

    def on_missed(sender, *, execution, **kwargs):
        events.append(execution)

    signals.run_missed.connect(on_missed, dispatch_uid="test.outage")
    jobs = interval_jobs(5)
    fire = now_s() - dt.timedelta(hours=1)
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(
        next_run_at=fire, dispatch_at=fire, schedule_anchor=fire - dt.timedelta(seconds=10)
    )
    try:
        with django_capture_on_commit_callbacks(execute=True):
            scheduler.dispatch_due(timezone.now())
        assert len(sent) == 5 and events == [] and not JobExecution.objects.exists()
        assert Job.objects.filter(missed_from=fire).count() == 5
        later = timezone.now() + dt.timedelta(hours=1)
        Job.objects.update(next_run_at=later, dispatch_at=later)  # the next passes: idle
        now = timezone.now()
        scheduler._record_pending_missed(now, now)  # the next fire time is due: nothing
        monkeypatch.setattr(scheduler_module, "RECORD_BUDGET", 0.0)
        scheduler.tick()
        assert not JobExecution.objects.exists()
        monkeypatch.setattr(scheduler_module, "RECORD_BUDGET", 0.2)
        monkeypatch.setattr(scheduler_module, "RECORD_BATCH", 2)
        with django_capture_on_commit_callbacks(execute=True):
            scheduler.tick()  # nothing due: records, 2 jobs a transaction
        assert sorted(e.job_id for e in events) == sorted(j.pk for j in jobs)
        assert all(e.missed_count >= 358 for e in events)
        assert not Job.objects.filter(missed_from__isnull=False).exists()
        assert scheduler.tick() == scheduler.poll_interval  # all recorded: idle again
    finally:
        signals.run_missed.disconnect(dispatch_uid="test.outage")


def test_the_next_leader_records_an_outage_its_predecessor_caught_up_with(scheduler, sent):
    """A leader that dies after its catch-up left the spans on the job rows."""
    [job] = interval_jobs(1)
    fire = now_s() - dt.timedelta(hours=1)
    Job.objects.filter(pk=job.pk).update(
        next_run_at=fire, dispatch_at=fire, schedule_anchor=fire - dt.timedelta(seconds=10)
    )
    scheduler.dispatch_due(timezone.now())
    scheduler.lease.release()
    successor = new_scheduler()
    assert successor.lease.acquire()
    successor._record_pending_missed(timezone.now(), None)
    [summary] = JobExecution.objects.filter(job=job)
    assert summary.scheduled_at == fire and summary.missed_count >= 358


def test_a_fire_time_of_the_span_already_on_record_keeps_its_row_and_is_not_counted(
    scheduler, sent
):
    """A beat sent a fire time and died before storing what followed; a worker recorded
    it. The summary of the outage after it neither starts at it nor counts it."""
    [job] = interval_jobs(1)
    fire = now_s() - dt.timedelta(hours=1)
    Job.objects.filter(pk=job.pk).update(
        next_run_at=fire, dispatch_at=fire, schedule_anchor=fire - dt.timedelta(seconds=10)
    )
    for at in (fire, fire + dt.timedelta(seconds=100)):
        JobExecution.objects.create(
            job=job,
            job_name=job.name,
            task=job.task,
            trigger="schedule",
            status="missed",
            scheduled_at=at,
            started_at=timezone.now(),
            reason="Started late",
        )
    scheduler.dispatch_due(timezone.now())
    scheduler._record_pending_missed(timezone.now(), None)
    summary = JobExecution.objects.get(job=job, missed_until__isnull=False)
    assert summary.scheduled_at == fire + dt.timedelta(seconds=10)
    in_range = (summary.missed_until - summary.scheduled_at).total_seconds() / 10 + 1
    assert summary.missed_count == in_range - 1


def test_with_coalesce_beat_sends_only_the_newest_due_fire_time(scheduler, sent):
    job = make_job(cron_expression="*/1 * * * * *", misfire_grace_time=60, coalesce=True)
    make_due(job, now_s() - dt.timedelta(seconds=10))
    now = timezone.now()
    scheduler.dispatch_due(now)
    coalesced = JobExecution.objects.filter(job=job, status="missed")
    assert coalesced.count() >= 9
    assert all(r.reason.startswith("Coalesced into the run at") for r in coalesced)
    [(_, fire, _)] = sent
    assert fire == now.replace(microsecond=0)  # the newest fire time due at the pass


def test_jitter_longer_than_the_grace_is_not_a_misfire(scheduler, sent):
    job = make_job(cron_expression="0 */5 * * * *", misfire_grace_time=15, jitter=60)
    fire = timezone.now() - dt.timedelta(seconds=20)
    Job.objects.filter(pk=job.pk).update(
        next_run_at=fire, dispatch_at=fire + dt.timedelta(seconds=19)
    )
    scheduler.dispatch_due(timezone.now())
    assert sent == [(job.name, fire, 19.0)]
    assert not JobExecution.objects.filter(job=job).exists()


def test_jitter_is_drawn_per_fire_time_and_stored_with_it():
    job = make_job(cron_expression="0 */5 * * * *", jitter=30)
    assert 0 <= (job.dispatch_at - job.next_run_at).total_seconds() <= 30


# -- leadership ---------------------------------------------------------------------------


def test_only_one_beat_holds_the_lease():
    first, second = new_scheduler(), new_scheduler()
    second.lease.holder = "other-host:1"
    assert first.lease.acquire()
    assert not second.lease.acquire()
    assert second.tick() == second.poll_interval  # a standby only waits


def test_a_standby_takes_over_an_expired_lease_and_the_old_leader_sends_nothing(sent):
    first, second = new_scheduler(), new_scheduler()
    second.lease.holder = "other-host:1"
    assert first.lease.acquire()
    SchedulerLease.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert second.lease.acquire()
    assert SchedulerLease.objects.get().token == first.lease.token + 1
    job = make_job(cron_expression="*/1 * * * * *")
    make_due(job, now_s())
    # The old leader has not noticed yet: its sending pass is fenced by the lease.
    assert first.dispatch_due(timezone.now()) == 0
    assert sent == [] and not first.lease.held
    assert second.dispatch_due(timezone.now()) == 1


def test_a_clean_shutdown_hands_the_lease_over_at_once():
    first, second = new_scheduler(), new_scheduler()
    second.lease.holder = "other-host:1"
    assert first.lease.acquire()
    first.close()
    assert second.lease.acquire()


# -- bulk creation ------------------------------------------------------------------------


def test_bulk_create_validates_every_job_and_inserts_nothing_on_error():
    from django.core.exceptions import ValidationError

    make_job(name="taken")
    good = Job(name="new", task="demo.echo", trigger_type="cron", cron_expression="0 * * * * *")
    with pytest.raises(ValidationError, match="taken"):
        services.job_bulk_create(jobs=[good, Job(name="taken", task="demo.echo")])
    broken = Job(
        name="broken", task="demo.echo", trigger_type="cron", cron_expression="61 * * * * *"
    )
    with pytest.raises(ValidationError, match="broken"):
        services.job_bulk_create(jobs=[good, broken])
    assert not Job.objects.filter(name="new").exists()
    [created] = services.job_bulk_create(jobs=[good])
    assert created.next_run_at is not None and created.dispatch_at == created.next_run_at


# -- the ledger of sent fire times ----------------------------------------------------------


def test_a_fire_time_an_earlier_leader_sent_and_no_worker_started_is_missed(sent):
    job = make_job(cron_expression="*/1 * * * * *", misfire_grace_time=5)
    started = make_job(cron_expression="*/1 * * * * *", misfire_grace_time=5)
    fire = now_s()
    first = new_scheduler()
    assert first.lease.acquire()
    for due in (job, started):
        make_due(due, fire)
    first.dispatch_due(timezone.now())
    assert SentFireTime.objects.filter(scheduled_at=fire).count() == 2
    first.lease.release()  # that leader goes, and what it held in memory with it
    # A worker started one of the two runs; the other message was lost.
    JobExecution.objects.create(
        job=started,
        job_name=started.name,
        task=started.task,
        trigger="schedule",
        status="success",
        scheduled_at=fire,
        started_at=fire,
    )
    SentFireTime.objects.update(check_after=timezone.now())  # their grace + margin passed
    second = new_scheduler()
    assert second.lease.acquire()
    second._check_ledger()
    missed = JobExecution.objects.get(job=job, scheduled_at=fire)
    assert missed.status == "missed"
    assert missed.reason.startswith("Sent to the broker but not started within its grace")
    assert JobExecution.objects.filter(job=started).count() == 1
    assert not SentFireTime.objects.exists()  # checked, so forgotten


# -- failover cannot be blocked -----------------------------------------------------------


def due_jobs(count: int) -> list[Job]:
    fire = now_s()
    jobs = [make_job(name=f"due-{i}", cron_expression="0 0 0 1 1 *") for i in range(count)]
    for job in jobs:
        make_due(job, fire)
    return jobs


def still_due(jobs: list[Job]) -> list[str]:
    return [
        job.name
        for job in Job.objects.filter(pk__in=[j.pk for j in jobs], dispatch_at__lte=timezone.now())
    ]


def test_a_pass_stops_publishing_once_the_lease_is_too_short_for_another_message(
    scheduler, monkeypatch, one_per_batch
):
    """The fence, without a lock on the lease: a message leaves only while the lease
    surely outlasts it; the jobs not reached keep their fire time for the next leader."""
    jobs = due_jobs(3)
    sent = []

    def dispatch(*, job, **kwargs):
        sent.append(job.name)
        scheduler.lease.renewed -= scheduler.lease.seconds  # as if stopped right after

    monkeypatch.setattr(services, "job_dispatch", dispatch)
    assert scheduler.dispatch_due(timezone.now()) == 1
    assert sent == ["due-0"]
    assert still_due(jobs) == ["due-1", "due-2"]
    assert not JobExecution.objects.exists()  # nothing recorded missed: still to be sent


def test_a_pass_publishes_for_a_bounded_time_and_the_next_pass_sends_the_rest(
    scheduler, monkeypatch, one_per_batch
):
    jobs = due_jobs(3)
    sent = []

    def slow_dispatch(*, job, **kwargs):
        sent.append(job.name)
        time.sleep(0.35)

    monkeypatch.setattr(services, "job_dispatch", slow_dispatch)
    scheduler.pass_seconds = 0.3
    assert [scheduler.dispatch_due(timezone.now()) for _ in range(4)] == [1, 1, 1, 0]
    assert sorted(sent) == ["due-0", "due-1", "due-2"]
    assert still_due(jobs) == []


def test_a_broker_out_of_reach_stops_the_pass_and_hands_the_lease_over(
    scheduler, monkeypatch, one_per_batch
):
    """The fire time that could not go out is neither stored as sent nor recorded missed:
    the next leader sends it; this beat stands back for a term before trying again."""
    jobs = due_jobs(3)
    sent = []

    def dispatch(*, job, retry_policy, **kwargs):
        assert retry_policy["max_retries"] == 1  # bounded, not Celery's default 3
        if sent:
            raise KombuOperationalError("timed out")
        sent.append(job.name)

    monkeypatch.setattr(services, "job_dispatch", dispatch)
    assert scheduler.dispatch_due(timezone.now()) == 1
    assert still_due(jobs) == ["due-1", "due-2"]
    assert not JobExecution.objects.exists()
    assert not scheduler.lease.held and SchedulerLease.objects.get().holder == ""
    assert scheduler.tick() == scheduler.poll_interval and not scheduler.lease.held
    standby = new_scheduler()
    standby.lease.holder = "other-host:1"
    assert standby.lease.acquire()


def test_beat_database_options_bound_every_wait_and_keep_the_projects():
    options = beat_database_options(
        {"prepare_threshold": 5, "options": "-c default_transaction_isolation=read\\ committed"},
        lease_seconds=5,
    )
    assert options["prepare_threshold"] == 5
    assert options["options"].startswith("-c default_transaction_isolation=read\\ committed -c ")
    for setting in (
        "statement_timeout=2500",
        "idle_in_transaction_session_timeout=2500",
        "lock_timeout=1000",
        "tcp_user_timeout=2500",
    ):
        assert f"-c {setting}" in options["options"]
    assert options["keepalives"] == 1 and options["keepalives_idle"] == 1
    assert options["tcp_user_timeout"] == 2500 and options["connect_timeout"] == 2


def test_beat_broker_options_bound_each_publish():
    assert beat_broker_options("redis", 0.5)["socket_timeout"] == 0.5
    amqp = beat_broker_options("amqp", 0.5)
    assert amqp["confirm_publish"] and amqp["read_timeout"] == amqp["write_timeout"] == 0.5
    assert beat_broker_options("filesystem", 0.5)["max_retries"] == 1


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's session settings and row locks"
)


@postgresql_only
def test_postgresql_takes_the_beat_connection_options():
    beat_connection = connections.create_connection("default")
    beat_connection.settings_dict = {
        **connection.settings_dict,
        "OPTIONS": beat_database_options(connection.settings_dict["OPTIONS"], 5),
    }
    try:
        with beat_connection.cursor() as cursor:
            cursor.execute("SHOW idle_in_transaction_session_timeout")
            assert cursor.fetchone()[0] == "2500ms"
            cursor.execute("SHOW transaction_isolation")
            assert cursor.fetchone()[0] == "read committed"
    finally:
        beat_connection.close()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_take_over_never_waits_for_the_lease_row():
    """Whoever holds the row (say, a leader stopped inside a transaction), a standby's try
    returns at once, and succeeds on a later pass once the row is free."""
    first, second = new_scheduler(), new_scheduler()
    second.lease.holder = "other-host:1"
    assert first.lease.acquire()
    SchedulerLease.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    locked, release = threading.Event(), threading.Event()

    def hold_the_row():
        with transaction.atomic():
            list(SchedulerLease.objects.select_for_update())
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        assert not second.lease.acquire()
        assert time.monotonic() - started < 1
    finally:
        release.set()
        holder.join()
    assert second.lease.acquire()


def test_a_standby_tries_again_just_after_the_lease_runs_out():
    first, second = new_scheduler(), new_scheduler()
    second.lease.holder = "other-host:1"
    assert first.lease.acquire()
    SchedulerLease.objects.update(expires_at=timezone.now() + dt.timedelta(seconds=0.3))
    assert 0.2 < second.tick() <= 0.4
    SchedulerLease.objects.update(expires_at=timezone.now() + dt.timedelta(seconds=30))
    assert second.tick() == second.poll_interval


def test_a_paused_job_is_resumed_by_the_pass_that_reaches_its_resume_time(scheduler, sent):
    job = make_job(cron_expression="*/1 * * * * *")
    services.job_pause(job=job, reason="window", until=timezone.now() + dt.timedelta(seconds=0.5))
    # The idle pass sleeps until the resume time, not a whole poll interval.
    scheduler._last_heartbeat = scheduler._last_ledger_check = float("inf")
    assert 0 < scheduler.tick() <= 0.5
    time.sleep(0.6)
    assert scheduler.tick() == 0.0  # resumed: look again at once
    job.refresh_from_db()
    assert job.enabled and job.resume_at is None and job.next_run_at is not None
    change = job.changes.get(action="resumed")
    assert (change.source, change.actor) == ("system", scheduler.beat_name)


def test_sigterm_in_the_middle_of_a_statement_or_transaction_does_not_hang_beat(scheduler):
    """Celery's SIGTERM handler calls close() from inside whatever beat was doing: it must
    not wait for the connection lock the interrupted statement holds (it waited forever),
    nor release the lease in a transaction the handler's SystemExit then rolls back."""
    import signal

    from django.db import connection, transaction

    def timed_out(signum, frame):
        raise TimeoutError("close() waited for the connection lock")

    with transaction.atomic():
        scheduler.close()
        assert scheduler.lease.held
    lock = getattr(connection.connection, "lock", None)
    if lock is not None:  # psycopg: a statement in progress holds it, as here
        previous = signal.signal(signal.SIGALRM, timed_out)
        signal.alarm(3)
        try:
            with lock:
                scheduler.close()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert scheduler.lease.held
    scheduler.close()  # the second call, once it unwound
    assert not scheduler.lease.held
    assert SchedulerLease.objects.get().holder == ""


def test_sigterm_while_beat_records_an_outage_stops_it_between_transactions(
    scheduler, sent, monkeypatch
):
    """Recording an outage runs receivers (alerts, statistics) inside its transactions: a
    SystemExit raised there by the signal handler can be replaced by the error of the
    connection it interrupted and swallowed by ``send_robust``, and beat went on. The
    signal stops the recording after its current transaction, as it stops a pass."""
    import os
    import signal

    from django.db import connection

    from scheduling import runs
    from scheduling import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "RECORD_BATCH", 1)
    monkeypatch.setattr(scheduler_module, "RECORD_BUDGET", 30.0)
    jobs = interval_jobs(3)
    fire = now_s() - dt.timedelta(hours=1)
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(
        next_run_at=fire, dispatch_at=fire, schedule_anchor=fire - dt.timedelta(seconds=10)
    )
    scheduler.dispatch_due(timezone.now())
    later = timezone.now() + dt.timedelta(minutes=1)
    Job.objects.update(next_run_at=later, dispatch_at=later)  # nothing due: it records
    assert Job.objects.filter(missed_from__isnull=False).count() == 3
    record = runs.execution_record_missed_summaries

    def record_then_signal(**kwargs):
        record(**kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runs, "execution_record_missed_summaries", record_then_signal)
    exits = []

    def celery_handler(signum, frame):
        exits.append(len(connection.atomic_blocks) > scheduler._atomic_depth)
        raise SystemExit

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    try:
        signal.signal(signal.SIGTERM, celery_handler)
        signal.signal(signal.SIGINT, celery_handler)
        scheduler.install_stop()
        with pytest.raises(SystemExit):
            scheduler.tick()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert exits == [False]  # once, outside the recording's transaction
    # The transaction the signal came in committed; the rest waits for the next leader.
    assert JobExecution.objects.filter(status="missed").count() == 1
    assert Job.objects.filter(missed_from__isnull=False).count() == 2


def test_the_ledger_leaves_a_sent_fire_time_another_beat_summarized_alone(scheduler):
    """A fire time sent, then inside the summary another beat recorded of an outage: the
    ledger must not explain it a second time ("never started")."""
    from scheduling import runs
    from scheduling.runs.rules import Missed

    job = interval_jobs(1)[0]
    first = job.next_run_at - dt.timedelta(hours=1)
    runs.execution_record_missed_summaries(
        missed=[(job, job.trigger(), Missed(first=first, before=job.next_run_at))],
        reason="Not sent.",
    )
    inside = first + dt.timedelta(seconds=100)
    SentFireTime.objects.create(job=job, scheduled_at=inside, check_after=timezone.now())
    scheduler._record_lost_messages()
    assert JobExecution.objects.filter(job=job).count() == 1
    assert not SentFireTime.objects.exists()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_run_is_recorded_while_beat_holds_its_job_in_a_pass(monkeypatch):
    """Beat's pass keeps its due rows locked while it publishes; a worker recording a run of
    one of those jobs meanwhile (its row's foreign key is checked at commit) must not wait
    for the pass to end. A worker that falls behind records every expired message so."""
    from scheduling.runs import execution_record_missed

    job = make_job(cron_expression="* * * * * *")
    fire = now_s() - dt.timedelta(seconds=1)
    make_due(job, fire)
    scheduler = new_scheduler()
    assert scheduler.lease.acquire()
    publishing, recorded = threading.Event(), threading.Event()

    def slow_publish(*args, **kwargs):
        publishing.set()
        recorded.wait(10)  # a publish that takes until the worker has recorded its run
        return "task-id"

    monkeypatch.setattr(services, "job_dispatch", slow_publish)
    monkeypatch.setattr(publish, "messages_publish", slow_publish)

    def a_pass():
        try:
            scheduler.dispatch_due(timezone.now())
        finally:
            connection.close()

    beat = threading.Thread(target=a_pass)
    beat.start()
    try:
        assert publishing.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            assert execution_record_missed(
                job=job, fire_times=[fire - dt.timedelta(seconds=5)], reason="Expired."
            )
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
    finally:
        recorded.set()
        beat.join()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_an_outage_whose_job_row_is_locked_is_recorded_by_a_later_pass():
    import threading

    from django.db import connections

    job = make_job(cron_expression="*/1 * * * * *", misfire_grace_time=5)
    down = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=30)
    Job.objects.filter(pk=job.pk).update(
        missed_from=down, missed_before=down + dt.timedelta(seconds=25)
    )
    locked, release = threading.Event(), threading.Event()

    def a_start_holding_the_job_lock():  # as a worker's start does
        with transaction.atomic():
            list(Job.objects.select_for_update().filter(pk=job.pk))
            locked.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=a_start_holding_the_job_lock)
    holder.start()
    assert locked.wait(5)
    beat = JobScheduler(app=app, lazy=True)
    beat._record_pending_missed(timezone.now(), None)
    release.set()
    holder.join()
    assert beat._missed_pending, "the locked row was forgotten"
    beat._record_pending_missed(timezone.now(), None)
    assert JobExecution.objects.filter(job=job, status="missed").exists()
