"""Where groups meet a job's edits and its runs: found by the review of the storm, groups
and console merges; each test but the first failed before its fix."""

import pytest

from scheduling import group_services, services
from scheduling.models import JobExecution, JobGroup
from scheduling.runs import finish, groups
from tests.factories import make_job, make_running, run_scheduled


# A run that started while its group had no cap does not look for the group's waiting
# runs at its end (the one-round-trip start and finish ask nothing of the group); one that
# waits because a cap was set meanwhile is sent by the housekeeping (README, groups).
@pytest.mark.django_db(transaction=True)
def test_a_cap_set_while_a_run_goes_lets_the_housekeeping_send_the_groups_waiting_run(
    monkeypatch,
):
    from scheduling import runs

    JobGroup.objects.create(name="reports")  # no cap yet
    a = make_job(name="a", group="reports", task="demo.noop", overlap="skip")
    b = make_job(name="b", group="reports", task="demo.noop", overlap="buffer_one")
    running = make_running(a)
    setattr(running, groups.CAPPED, False)  # what a's start noted: no cap then
    group_services.group_update(name="reports", max_instances=1)
    run_scheduled(b)
    waiting = JobExecution.objects.get(job=b)
    assert waiting.status == "waiting" and "group reports is full" in waiting.reason
    sent = []
    monkeypatch.setattr(services, "job_dispatch", lambda **kw: sent.append(kw["job"].name))
    JobExecution.objects.filter(pk=running.pk).update(status="success", lease_until=None)
    running.refresh_from_db()
    setattr(running, groups.CAPPED, False)
    finish.promote_after(running)
    assert sent == []  # not at the end of a run that started uncapped...
    runs.executions_promote_due()
    assert sent == ["b"]  # ... by the housekeeping


# A job held by its group's pause (paused with the group's words) that is moved
# out of the group stays paused for ever: the group's resume looks for its held jobs in
# the group only, and nothing else resumes it; its pause reason still says the group
# holds it. (Moving a job into a paused group pauses it; the reverse is not handled.)
@pytest.mark.django_db
def test_a_job_moved_out_of_a_paused_group_leaves_its_pause():
    from scheduling.audit import audit_context
    from scheduling.models import Job

    make_job(name="a", group="reports")
    with audit_context(source="command", actor="alice"):
        group_services.group_pause(name="reports", reason="migration")
    held = Job.objects.get(name="a")
    assert not held.enabled and held.pause_reason == "Group reports paused by alice: migration"
    services.job_update(job=held, group="etl")
    moved = Job.objects.get(name="a")
    assert moved.enabled and moved.pause_reason == "" and moved.next_run_at is not None
    group_services.group_resume(name="reports")
    # Into a paused group: from one group's hold to the other's, resumed by that one.
    make_job(name="b", group="ops")
    with audit_context(source="command", actor="bob"):
        group_services.group_pause(name="ops", reason="freeze")
    services.job_update(job=Job.objects.get(name="a"), group="ops")
    into = Job.objects.get(name="a")
    assert not into.enabled and into.pause_reason == "Group ops paused by bob: freeze"
    services.job_update(job=into, group="reports")  # held by ops, joins an unpaused group
    assert Job.objects.get(name="a").enabled
    services.job_update(job=Job.objects.get(name="a"), group="ops")
    assert [j.name for j in group_services.group_resume(name="ops")] == ["a", "b"]


# job_save read whether the job's new group is paused without locking the group's
# row (group_services.paused_group), while group_pause locks the group's row and pauses
# the jobs it then finds in the group. A job moved into the group while the pause runs is
# read "not paused" and committed after the pause's job query: it stays enabled in a
# paused group (the pause and the move each succeed). Needs PostgreSQL (row locks; SQLite
# serialises the two writers).
@pytest.mark.django_db(transaction=True)
def test_a_job_moved_into_a_group_while_it_is_paused_is_paused_too(monkeypatch):
    import threading
    import time

    from django.db import connection, connections

    from scheduling.models import Job

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    make_job(name="a", group="reports")
    mover = make_job(name="m", group="etl")
    read = threading.Event()
    original = group_services.hold_group

    def slow_hold_group(*, name):
        found = original(name=name)
        if threading.current_thread().name == "move":
            read.set()  # the move holds the group: the pause must wait for it
            time.sleep(1)
        return found

    monkeypatch.setattr(group_services, "hold_group", slow_hold_group)
    errors = []

    def move():
        try:
            services.job_update(job=Job.objects.get(pk=mover.pk), group="reports")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=move, name="move")
    thread.start()
    assert read.wait(10)
    try:
        group_services.group_pause(name="reports", reason="migration")
    finally:
        thread.join(20)
    assert not errors
    moved = Job.objects.get(pk=mover.pk)
    assert moved.group == "reports"
    assert JobGroup.objects.get(name="reports").paused
    assert not moved.enabled, "enabled in a paused group"
