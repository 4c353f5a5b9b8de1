"""The rules of a run's start (scheduling.runs.rules): decide() in Python, and the SQL
condition the one-statement start uses, which must agree with it."""

import datetime as dt
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scheduling import sql
from scheduling.models import ExecutionStatus, Job, JobExecution, OverlapPolicy
from scheduling.runs import rules
from tests.factories import make_job, make_running

UTC = dt.UTC
FIRE = dt.datetime(2026, 12, 1, 2, 0, 0, tzinfo=UTC)


def job_with(**fields) -> Job:
    job = Job(name="rules", task="demo.echo", cron_expression="0 0 * * * *")
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def test_a_run_past_its_grace_is_missed_and_says_how_late():
    decision = rules.decide(job_with(misfire_grace_time=15), scheduled_at=FIRE, late=15.5, live=0)
    assert decision.status == ExecutionStatus.MISSED
    assert decision.reason == "Started 15.5s after its fire time; the grace is 15s."
    assert rules.decide(job_with(misfire_grace_time=15), scheduled_at=FIRE, late=15, live=0).starts


def test_a_fire_time_a_coalescing_run_covered_is_missed():
    job = job_with(coalesce=True, coalesced_until=FIRE)
    decision = rules.decide(job, scheduled_at=FIRE, late=1, live=0)
    assert decision.status == ExecutionStatus.MISSED
    assert decision.reason.startswith("Coalesced into the run that covered fire times up to ")
    later = FIRE + dt.timedelta(seconds=1)
    assert rules.decide(job, scheduled_at=later, late=1, live=0).starts


def test_max_instances_skips_and_comes_after_the_misfire_rule():
    job = job_with(max_instances=2, misfire_grace_time=5)
    skipped = rules.decide(job, scheduled_at=FIRE, late=0, live=2)
    assert (skipped.status, skipped.reason) == (
        ExecutionStatus.SKIPPED,
        "2 run(s) still going; max instances is 2.",
    )
    assert rules.decide(job, scheduled_at=FIRE, late=6, live=2).status == ExecutionStatus.MISSED


def test_buffer_one_keeps_one_run_waiting_and_skips_the_next():
    job = job_with(max_instances=1, overlap="buffer_one")
    waits = rules.decide(job, scheduled_at=FIRE, late=0, live=1)
    assert waits.waits and waits.others is None
    assert waits.reason == (
        "Waiting for a free slot: 1 run(s) still going; max instances is 1 "
        "(overlap policy buffer_one)."
    )
    skipped = rules.decide(job, scheduled_at=FIRE, late=0, live=1, waiting=1)
    assert (skipped.status, skipped.reason) == (
        ExecutionStatus.SKIPPED,
        "1 run(s) still going; max instances is 1 and 1 run(s) waiting; the overlap policy "
        "buffer_one keeps one waiting.",
    )


def test_buffer_all_is_bounded_by_its_setting(settings):
    settings.SCHEDULING = {"BUFFER_ALL_LIMIT": 2}
    job = job_with(max_instances=1, overlap="buffer_all")
    assert rules.decide(job, scheduled_at=FIRE, late=0, live=1, waiting=1).waits
    skipped = rules.decide(job, scheduled_at=FIRE, late=0, live=1, waiting=2)
    assert skipped.status == ExecutionStatus.SKIPPED
    assert skipped.reason.endswith("buffer_all keeps at most 2 waiting (BUFFER_ALL_LIMIT).")


def test_a_free_slot_goes_to_the_runs_waiting_first():
    for policy in ("skip", "buffer_one", "buffer_all"):
        job = job_with(max_instances=2, overlap=policy)
        assert rules.decide(job, scheduled_at=FIRE, late=0, live=1).starts_at_once
        decision = rules.decide(job, scheduled_at=FIRE, late=0, live=1, waiting=1)
        assert not decision.starts, policy
    assert rules.promotable(job_with(max_instances=3), live=1, waiting=5) == 2
    assert rules.promotable(job_with(max_instances=1), live=2, waiting=5) == 0
    assert rules.promotable(job_with(max_instances=1, overlap="allow_all"), live=2, waiting=5) == 5


def test_allow_all_ignores_max_instances_but_not_the_grace():
    job = job_with(max_instances=1, overlap="allow_all", misfire_grace_time=5)
    assert rules.decide(job, scheduled_at=FIRE, late=0, live=7, waiting=2).starts_at_once
    assert rules.decide(job, scheduled_at=FIRE, late=6, live=0).status == ExecutionStatus.MISSED


def test_an_override_replaces_the_jobs_policy_and_a_retry_never_waits():
    job = job_with(max_instances=1, overlap="skip")
    assert rules.decide(job, scheduled_at=None, late=None, live=1).status == "skipped"
    assert rules.decide(job, scheduled_at=None, late=None, live=1, overlap="buffer_one").waits
    assert rules.decide(job, scheduled_at=None, late=None, live=1, overlap="allow_all").starts
    retry = rules.decide(
        job, scheduled_at=None, late=None, live=1, overlap="buffer_all", retry=True
    )
    assert retry.status == ExecutionStatus.SKIPPED


def test_cancel_and_terminate_other_say_what_to_do_with_the_runs_going():
    job = job_with(max_instances=1, overlap="cancel_other")
    cancel = rules.decide(job, scheduled_at=FIRE, late=0, live=1)
    assert cancel.waits and cancel.others is rules.Others.CANCEL
    assert rules.decide(job, scheduled_at=FIRE, late=0, live=1, waiting=1).status == "skipped"
    terminate = rules.decide(
        job_with(max_instances=1, overlap="terminate_other"), scheduled_at=FIRE, late=0, live=1
    )
    assert terminate.starts and terminate.others is rules.Others.TERMINATE
    assert not terminate.starts_at_once


def test_the_misfire_rule_spares_manual_runs_and_retries():
    def late(**run):
        values = {"trigger": "schedule", "scheduled_at": FIRE, "jitter": 0, "attempt": 0}
        return rules.lateness(**{**values, **run}, now=FIRE + dt.timedelta(minutes=5))

    assert late() == 300
    assert late(jitter=20) == 280
    assert late(trigger="manual") is None
    assert late(attempt=1) is None
    assert late(scheduled_at=None) is None
    job = job_with(misfire_grace_time=1, max_instances=1)
    assert rules.decide(job, scheduled_at=None, late=None, live=0).starts
    assert rules.decide(job, scheduled_at=None, late=None, live=1).status == "skipped"


def test_beat_and_the_worker_draw_the_grace_at_the_same_place():
    job = job_with(misfire_grace_time=15, jitter=10)
    now = FIRE + dt.timedelta(minutes=1)
    oldest = rules.oldest_allowed(job, now)
    just_in = rules.lateness(
        trigger="schedule", scheduled_at=oldest, jitter=job.jitter, attempt=0, now=now
    )
    assert not rules.misfired(job, just_in)
    older = oldest - dt.timedelta(microseconds=1)
    just_out = rules.lateness(
        trigger="schedule", scheduled_at=older, jitter=job.jitter, attempt=0, now=now
    )
    assert rules.misfired(job, just_out)


@contextmanager
def rolled_back():
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def sql_says_it_starts(job: Job, *, late, scheduled_at, now, overlap=None) -> bool:
    db = connection.ops.adapt_datetimefield_value
    with sql.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {Job._meta.db_table} j WHERE j.id = %s AND {rules.STARTS_WHERE}",
            [
                job.pk,
                *rules.starts_params(
                    late=late,
                    scheduled_at_in_db=db(scheduled_at),
                    now_in_db=db(now),
                    overlap=overlap,
                ),
            ],
        )
        return cursor.fetchone() is not None


POLICIES = st.sampled_from(OverlapPolicy.values)


def add_run(job: Job, status: str, started_at: dt.datetime, **fields) -> None:
    JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="manual",
        status=status,
        started_at=started_at,
        **fields,
    )


@pytest.mark.django_db
@settings(max_examples=200, deadline=None, database=None)
@given(
    coalesce=st.booleans(),
    grace=st.integers(min_value=1, max_value=30),
    max_instances=st.integers(min_value=1, max_value=3),
    covered_until=st.none() | st.integers(min_value=-3_000_000, max_value=3_000_000),
    late=st.none() | st.floats(min_value=-5, max_value=40, allow_nan=False),
    live=st.integers(min_value=0, max_value=4),
    expired=st.integers(min_value=0, max_value=2),
    queued=st.integers(min_value=0, max_value=2),
    waiting=st.integers(min_value=0, max_value=2),
    policy=POLICIES,
    override=st.none() | POLICIES,
    micro=st.integers(min_value=0, max_value=999_999),
)
@example(
    coalesce=False,
    grace=5,
    max_instances=1,
    covered_until=None,
    late=5.0,
    live=0,
    expired=0,
    queued=0,
    waiting=0,
    policy="skip",
    override=None,
    micro=0,
)
@example(
    coalesce=True,
    grace=5,
    max_instances=2,
    covered_until=0,
    late=1.0,
    live=1,
    expired=1,
    queued=0,
    waiting=0,
    policy="skip",
    override=None,
    micro=0,
)
@example(
    coalesce=True,
    grace=5,
    max_instances=1,
    covered_until=-1,
    late=1.0,
    live=0,
    expired=0,
    queued=0,
    waiting=0,
    policy="skip",
    override=None,
    micro=0,
)
@example(
    coalesce=False,
    grace=5,
    max_instances=2,
    covered_until=None,
    late=1.0,
    live=0,
    expired=0,
    queued=1,
    waiting=1,
    policy="buffer_all",
    override=None,
    micro=0,
)
@example(
    coalesce=False,
    grace=5,
    max_instances=1,
    covered_until=None,
    late=None,
    live=1,
    expired=0,
    queued=1,
    waiting=1,
    policy="skip",
    override="allow_all",
    micro=0,
)
def test_the_sql_condition_agrees_with_decide(
    coalesce,
    grace,
    max_instances,
    covered_until,
    late,
    live,
    expired,
    queued,
    waiting,
    policy,
    override,
    micro,
):
    now = timezone.now()
    scheduled_at = (now - dt.timedelta(minutes=1)).replace(microsecond=micro)
    until = (
        None if covered_until is None else scheduled_at + dt.timedelta(microseconds=covered_until)
    )
    with rolled_back():
        job = make_job(task="demo.noop", coalesce=coalesce, max_instances=max_instances)
        Job.objects.filter(pk=job.pk).update(
            misfire_grace_time=grace, coalesced_until=until, overlap=policy
        )
        job.refresh_from_db()
        for _ in range(live):
            make_running(job, started_at=now, lease=30)
        for _ in range(expired):
            make_running(job, started_at=now - dt.timedelta(minutes=2), lease=30)
        for _ in range(queued):  # sent after waiting: holds a slot, whatever its deadline
            add_run(job, "queued", now, lease_until=now - dt.timedelta(seconds=1))
        for _ in range(waiting):
            add_run(job, "waiting", now, waiting_since=now)
        # A finished run holds no slot
        add_run(job, "success", now, lease_until=now + dt.timedelta(seconds=30))
        in_python = rules.decide(
            job,
            scheduled_at=scheduled_at,
            late=late,
            live=live + queued,
            waiting=waiting,
            overlap=override,
        ).starts_at_once
        in_sql = sql_says_it_starts(
            job, late=late, scheduled_at=scheduled_at, now=now, overlap=override
        )
    assert in_sql == in_python


def test_an_outage_of_an_interval_job_with_a_validity_window_is_counted_not_walked():
    from scheduling.models import Job
    from scheduling.runs.rules import Missed, missed_span

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def job(**fields):
        return Job(
            name="w",
            task="demo.noop",
            trigger_type="interval",
            interval_every=1,
            interval_period="seconds",
            schedule_anchor=t0,
            **fields,
        )

    span = Missed(first=t0 + dt.timedelta(seconds=1), before=t0 + dt.timedelta(days=2))
    plain = missed_span(job().trigger(), span)
    assert plain == (t0 + dt.timedelta(days=2, seconds=-1), 172799)
    assert missed_span(job(start_at=t0 + dt.timedelta(seconds=1)).trigger(), span) == plain
    ended = job(end_at=t0 + dt.timedelta(days=1)).trigger()
    assert missed_span(ended, span) == (t0 + dt.timedelta(days=1), 86400)
