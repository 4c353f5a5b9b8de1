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
from scheduling.models import ExecutionStatus, Job, JobExecution
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


def sql_says_it_starts(job: Job, *, late, scheduled_at, now) -> bool:
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
                ),
            ],
        )
        return cursor.fetchone() is not None


@pytest.mark.django_db
@settings(max_examples=120, deadline=None, database=None)
@given(
    coalesce=st.booleans(),
    grace=st.integers(min_value=1, max_value=30),
    max_instances=st.integers(min_value=1, max_value=3),
    covered_until=st.none() | st.integers(min_value=-3_000_000, max_value=3_000_000),
    late=st.none() | st.floats(min_value=-5, max_value=40, allow_nan=False),
    live=st.integers(min_value=0, max_value=4),
    expired=st.integers(min_value=0, max_value=2),
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
    micro=0,
)
@example(
    coalesce=True, grace=5, max_instances=2, covered_until=0, late=1.0, live=1, expired=1, micro=0
)
@example(
    coalesce=True, grace=5, max_instances=1, covered_until=-1, late=1.0, live=0, expired=0, micro=0
)
def test_the_sql_condition_agrees_with_decide(
    coalesce, grace, max_instances, covered_until, late, live, expired, micro
):
    now = timezone.now()
    scheduled_at = (now - dt.timedelta(minutes=1)).replace(microsecond=micro)
    until = (
        None if covered_until is None else scheduled_at + dt.timedelta(microseconds=covered_until)
    )
    with rolled_back():
        job = make_job(task="demo.noop", coalesce=coalesce, max_instances=max_instances)
        Job.objects.filter(pk=job.pk).update(misfire_grace_time=grace, coalesced_until=until)
        job.refresh_from_db()
        for _ in range(live):
            make_running(job, started_at=now, lease=30)
        for _ in range(expired):
            make_running(job, started_at=now - dt.timedelta(minutes=2), lease=30)
        JobExecution.objects.create(  # a finished run holds no slot
            job=job,
            job_name=job.name,
            task=job.task,
            trigger="manual",
            status="success",
            started_at=now,
            lease_until=now + dt.timedelta(seconds=30),
        )
        in_python = rules.decide(job, scheduled_at=scheduled_at, late=late, live=live).starts
        in_sql = sql_says_it_starts(job, late=late, scheduled_at=scheduled_at, now=now)
    assert in_sql == in_python
