"""The misfire policy table of the README (*Misfire semantics*), the rows no other test
covers: which time a late run records, an interval's phase after a misfire (at beat and
at the worker), and what run now does with the grace. Each row's other tests are named
in the table."""

import datetime as dt

import pytest
from django.utils import timezone

from scheduling import runs, services
from scheduling.models import Job, JobExecution
from tests.factories import make_job, run_scheduled, sent_message
from tests.test_scheduler import leader, sent  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db


def now_s() -> dt.datetime:
    return timezone.now().replace(microsecond=0)


def test_a_late_run_records_its_fire_time_and_its_lateness_not_its_start():
    job = make_job(task="demo.noop", misfire_grace_time=15)
    fire = now_s() - dt.timedelta(seconds=10)
    run_scheduled(job, fire_time=fire)
    run = JobExecution.objects.get(job=job)
    assert run.status == "success"
    assert run.scheduled_at == fire  # the logical time, as the run context's scheduled_at
    assert (run.started_at - run.scheduled_at).total_seconds() >= 10


def test_a_run_past_its_grace_is_recorded_missed_under_its_own_fire_time():
    job = make_job(task="demo.noop", misfire_grace_time=15)
    fire = now_s() - dt.timedelta(seconds=20)
    run_scheduled(job, fire_time=fire)
    run = JobExecution.objects.get(job=job)
    assert (run.status, run.scheduled_at) == ("missed", fire)
    assert run.reason.startswith("Started 2") and "the grace is 15s" in run.reason


def test_an_interval_keeps_its_phase_after_beat_misses_fire_times(sent):  # noqa: F811
    """Beat down for an hour: the fire time it sends next and those after it stay on the
    interval's grid (anchor + n x interval), not on the moment beat came back."""
    job = make_job(
        trigger_type="interval", interval_every=10, interval_period="seconds", misfire_grace_time=5
    )
    anchor = now_s() - dt.timedelta(hours=1, seconds=3)  # the grid: ...:03, :13, :23, ...
    Job.objects.filter(pk=job.pk).update(
        schedule_anchor=anchor,
        next_run_at=anchor + dt.timedelta(seconds=10),
        dispatch_at=anchor + dt.timedelta(seconds=10),
    )
    scheduler = leader()
    scheduler.dispatch_due(timezone.now())
    job.refresh_from_db()
    [(_, fire, _)] = [entry for entry in sent if entry[0] == job.name]
    for moment in (fire, job.next_run_at):
        assert (moment - anchor).total_seconds() % 10 == 0, (anchor, moment)
    assert job.next_run_at == fire + dt.timedelta(seconds=10)
    assert job.missed_from == anchor + dt.timedelta(seconds=10)  # the span, for its summary


def test_an_interval_keeps_its_phase_after_a_run_missed_at_the_worker(sent):  # noqa: F811
    """A message that reached the worker past its grace is missed there; beat has already
    stored the next fire time from the fire time it sent, on the grid."""
    job = make_job(
        trigger_type="interval", interval_every=10, interval_period="seconds", misfire_grace_time=5
    )
    anchor = now_s() - dt.timedelta(seconds=7)
    fire = anchor + dt.timedelta(seconds=10)
    Job.objects.filter(pk=job.pk).update(schedule_anchor=anchor, next_run_at=fire, dispatch_at=fire)
    scheduler = leader()
    scheduler.dispatch_due(fire + dt.timedelta(seconds=1))  # beat on time
    job.refresh_from_db()
    assert job.next_run_at == fire + dt.timedelta(seconds=10)
    runs.execution_run(  # delivered 20 s late: missed
        job_id=job.pk,
        trigger="schedule",
        scheduled_at=fire - dt.timedelta(seconds=20),
        task_id="late",
        worker="w1@test",
        message=sent_message(job, "late"),
    )
    job.refresh_from_db()
    assert JobExecution.objects.get(job=job).status == "missed"
    assert job.next_run_at == fire + dt.timedelta(seconds=10)  # unchanged, on the grid


def test_run_now_is_never_late_however_long_its_message_waited(
    monkeypatch, django_capture_on_commit_callbacks
):
    """A manual run's logical time is when it was asked for; the grace does not apply
    (its message does not expire either: tests/test_routing.py)."""
    job = make_job(task="demo.noop", misfire_grace_time=1)
    sent_messages = []
    monkeypatch.setattr(services, "job_dispatch", lambda **kwargs: sent_messages.append(kwargs))
    with django_capture_on_commit_callbacks(execute=True):
        services.job_run_now(job=job)
    [message] = sent_messages
    asked = message["scheduled_at"]
    monkeypatch.setattr(timezone, "now", lambda: asked + dt.timedelta(hours=1))
    runs.execution_run(
        job_id=job.pk,
        trigger="manual",
        scheduled_at=asked,
        task_id=message["task_id"],
        worker="w1@test",
        message=sent_message(job, message["task_id"]),
    )
    run = JobExecution.objects.get(job=job)
    assert (run.status, run.trigger, run.scheduled_at) == ("success", "manual", asked)
