"""Runs that wait for a free slot (scheduling.runs.waiting): recorded waiting, sent on
when a slot frees, started once in the slot kept for them, dropped by an operator.

The messages a promotion sends are caught at the broker's door (``job_dispatch``) and
delivered to the real run path in this process, as a worker would receive them.
"""

import datetime as dt
import time

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from scheduling import runs, services
from scheduling.models import JobChange, JobExecution
from scheduling.runs.finish import finish
from scheduling.task_results import TaskMessage
from tests.factories import make_job, make_running, run_scheduled, sent_message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch):
    """The messages sent for runs that waited: the keyword arguments of each."""
    messages: list[dict] = []

    def dispatch(**kwargs):
        messages.append(kwargs)
        return kwargs["task_id"]

    monkeypatch.setattr(services, "job_dispatch", dispatch)
    return messages


def deliver(message: dict):
    """Run a sent message as a worker does."""
    return runs.execution_run(
        job_id=message["job"].pk,
        trigger=message["trigger"],
        scheduled_at=message["scheduled_at"],
        task_id=message["task_id"],
        worker="w2@test",
        message=TaskMessage(task_id=message["task_id"], worker="w2@test"),
    )


def end(execution: JobExecution) -> None:
    """Finish a run in progress as its worker does."""
    execution.refresh_from_db()
    finish(execution, time.perf_counter(), "success", message=None)


def fire_times(count: int) -> list[dt.datetime]:
    start = timezone.now().replace(microsecond=0)
    return [start + dt.timedelta(seconds=i) for i in range(count)]


def test_a_buffered_fire_time_waits_then_runs_once_when_the_slot_frees(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_one")
    going = make_running(job)
    [fire] = fire_times(1)
    message = sent_message(job)

    assert run_scheduled(job, fire_time=fire, sent=message) == {"ran": False}
    waiting = JobExecution.objects.get(job=job, scheduled_at=fire)
    assert waiting.status == "waiting" and waiting.waiting_since is not None
    assert waiting.reason.startswith("Waiting for a free slot: 1 run(s) still going")
    assert sent == []

    going.job = job
    end(going)
    [again] = sent
    assert again["task_id"] == message.task_id and again["expires"] is False
    assert JobExecution.objects.get(pk=waiting.pk).status == "queued"

    deliver(again)
    ran = JobExecution.objects.get(job=job, scheduled_at=fire)
    assert ran.status == "success" and ran.worker == "w2@test"
    assert ran.reason.startswith("Waited ") and ran.waiting_since == waiting.waiting_since
    assert deliver(again) == {"ran": False}  # a second copy: dropped
    assert JobExecution.objects.filter(job=job, scheduled_at=fire).count() == 1


def test_buffer_one_skips_a_fire_time_while_one_waits(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_one")
    make_running(job)
    first, second = fire_times(2)
    run_scheduled(job, fire_time=first)
    run_scheduled(job, fire_time=second)
    skipped = JobExecution.objects.get(job=job, scheduled_at=second)
    assert skipped.status == "skipped"
    assert skipped.reason.endswith("the overlap policy buffer_one keeps one waiting.")
    assert JobExecution.objects.get(job=job, scheduled_at=first).status == "waiting"


def test_buffer_all_keeps_them_up_to_its_bound_and_sends_the_oldest_first(sent, settings):
    settings.SCHEDULING = {"BUFFER_ALL_LIMIT": 2}
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_all")
    going = make_running(job)
    fires = fire_times(3)
    for fire in reversed(fires):  # arriving out of order
        run_scheduled(job, fire_time=fire)
    statuses = [JobExecution.objects.get(job=job, scheduled_at=f).status for f in fires]
    assert statuses == ["skipped", "waiting", "waiting"]  # the first to arrive waited
    end(going)
    assert [m["scheduled_at"] for m in sent] == [fires[1]]  # the oldest fire time waiting
    deliver(sent[0])
    ran = JobExecution.objects.get(job=job, scheduled_at=fires[1])
    end(ran)
    assert [m["scheduled_at"] for m in sent] == [fires[1], fires[2]]


def test_allow_all_starts_whatever_runs(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="allow_all")
    make_running(job)
    make_running(job)
    run_scheduled(job)
    assert JobExecution.objects.filter(job=job, status="success").count() == 1


def test_a_run_that_waited_past_its_grace_still_runs(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_one", misfire_grace_time=5)
    going = make_running(job)
    fire = timezone.now() - dt.timedelta(seconds=2)
    run_scheduled(job, fire_time=fire)
    JobExecution.objects.filter(job=job, status="waiting").update(
        scheduled_at=fire - dt.timedelta(minutes=1)  # as if it had waited a minute
    )
    end(going)
    deliver(sent[0])
    assert JobExecution.objects.get(job=job, trigger="schedule").status == "success"


def test_run_now_follows_the_policy_unless_overridden(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="skip")
    make_running(job)

    def manual(task_id, overlap=None):
        return runs.execution_run(
            job_id=job.pk,
            trigger="manual",
            scheduled_at=timezone.now(),
            task_id=task_id,
            worker="w1@test",
            overlap=overlap,
        )

    manual("follows")
    manual("waits", overlap="buffer_one")
    manual("starts", overlap="allow_all")
    status = dict(JobExecution.objects.filter(job=job).values_list("task_result_id", "status"))
    assert status == {
        None: "running",
        "follows": "skipped",
        "waits": "waiting",
        "starts": "success",
    }


def test_run_now_refuses_an_unknown_override():
    job = make_job(task="demo.noop")
    with pytest.raises(ValidationError) as error:
        services.job_run_now(job=job, overlap="sometimes")
    assert "is not an overlap policy" in error.value.message_dict["overlap"][0]


def test_housekeeping_sends_a_waiting_run_whose_slot_is_free_and_a_lost_message_again(
    sent, settings
):
    settings.SCHEDULING = {"QUEUED_RESEND_SECONDS": 0.2}
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_one")
    going = make_running(job)
    run_scheduled(job)
    # The run that held the slot ended, but its worker died before it sent the next.
    JobExecution.objects.filter(pk=going.pk).update(status="success", lease_until=None)
    assert runs.executions_promote_due() == 1
    assert len(sent) == 1
    time.sleep(0.3)  # its message never arrives: sent again once its deadline passed
    assert runs.executions_promote_due() == 1
    assert [m["task_id"] for m in sent] == [sent[0]["task_id"]] * 2
    deliver(sent[1])
    deliver(sent[0])
    assert JobExecution.objects.get(job=job, trigger="schedule").status == "success"


def test_promotion_sends_a_run_once(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_all")
    going = make_running(job)
    run_scheduled(job)
    run_scheduled(job, fire_time=timezone.now() + dt.timedelta(seconds=1))
    JobExecution.objects.filter(pk=going.pk).update(status="success", lease_until=None)
    assert runs.execution_promote_waiting(job_id=job.pk) == 1
    assert runs.execution_promote_waiting(job_id=job.pk) == 0  # the queued run holds the slot
    assert len(sent) == 1


def test_a_start_that_reaps_a_dead_run_sends_the_waiting_one_first(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_all")
    dead = make_running(job, lease=1)
    first, second = fire_times(2)
    run_scheduled(job, fire_time=first)
    JobExecution.objects.filter(pk=dead.pk).update(
        lease_until=timezone.now() - dt.timedelta(seconds=5)
    )
    run_scheduled(job, fire_time=second)
    assert JobExecution.objects.get(pk=dead.pk).status == "lost"
    assert [m["scheduled_at"] for m in sent] == [first]
    assert JobExecution.objects.get(job=job, scheduled_at=second).status == "waiting"


def test_a_waiting_run_is_dropped_with_who_and_why(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_one")
    going = make_running(job)
    run_scheduled(job)
    waiting = JobExecution.objects.get(job=job, status="waiting")
    services.execution_drop(execution=waiting, by="alice", reason="not needed today")
    waiting.refresh_from_db()
    assert waiting.status == "skipped" and waiting.finished_at is not None
    assert waiting.reason == "Dropped while waiting by alice: not needed today"
    change = JobChange.objects.get(job=job, action="run dropped")
    assert change.changes["reason"] == [None, "not needed today"]
    end(going)
    assert sent == []  # nothing left to send
    with pytest.raises(ValidationError) as error:
        services.execution_drop(execution=waiting, by="alice")
    assert "only a run waiting for a free slot" in error.value.message_dict["execution"][0]


def test_cancel_other_cancels_the_run_going_and_starts_once_it_has_stopped(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="cancel_other")
    going = make_running(job)
    [fire] = fire_times(1)
    assert run_scheduled(job, fire_time=fire) == {"ran": False}
    going.refresh_from_db()
    assert going.status == "cancelling"
    assert going.cancelled_by == "overlap policy cancel_other"
    assert f"the run of {fire.isoformat()} takes its place" in going.reason
    assert JobExecution.objects.get(job=job, scheduled_at=fire).status == "waiting"
    # Its slot is free, but the waiting run is sent only once the cancelled one stopped.
    assert runs.executions_promote_due() == 0 and sent == []
    going.job = job
    finish(going, time.perf_counter(), "cancelled", message=None, from_status="cancelling")
    assert JobExecution.objects.get(pk=going.pk).status == "cancelled"
    [message] = sent
    deliver(message)
    assert JobExecution.objects.get(job=job, scheduled_at=fire).status == "success"


def test_terminate_other_terminates_the_run_going_and_starts_now(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="terminate_other")
    going = make_running(job)
    [fire] = fire_times(1)
    run_scheduled(job, fire_time=fire)
    going.refresh_from_db()
    assert going.status == "terminated"
    assert going.reason.startswith("Terminated by overlap policy terminate_other")
    assert JobExecution.objects.get(job=job, scheduled_at=fire).status == "success"


def manual(job, task_id, overlap=None):
    return runs.execution_run(
        job_id=job.pk,
        trigger="manual",
        scheduled_at=timezone.now(),
        task_id=task_id,
        worker="w1@test",
        overlap=overlap,
    )


def test_run_now_with_cancel_other_waits_for_the_cancelled_run_to_stop(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="skip")
    going = make_running(job)
    manual(job, "new", overlap="cancel_other")
    going.refresh_from_db()
    # cancelled run has NOT stopped yet; housekeeping must not send the waiting run
    promoted = runs.executions_promote_due()
    going.refresh_from_db()
    assert promoted == 0, "waiting run sent while the cancelled run is still running"


def test_run_now_with_cancel_other_is_sent_when_the_cancelled_run_stops(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="skip")
    going = make_running(job)
    manual(job, "new", overlap="cancel_other")
    going.refresh_from_db()
    going.job = job
    finish(going, time.perf_counter(), "cancelled", message=None, from_status="cancelling")
    assert len(sent) == 1, "the waiting run is not sent when the run it cancelled stops"


def test_terminating_the_run_going_sends_the_waiting_run(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_one")
    going = make_running(job, task_result_id="going-task")
    run_scheduled(job)
    assert JobExecution.objects.get(job=job, status="waiting")
    services.execution_cancel(execution=going, terminate=True, by="alice")
    going.refresh_from_db()
    assert len(sent) == 1, "slot freed by terminate, but the waiting run is not sent"


def test_the_terminate_after_the_cancel_grace_sends_cancel_others_waiting_run(sent, settings):
    settings.SCHEDULING = {"CANCEL_GRACE_SECONDS": 0.0}
    job = make_job(task="demo.noop", max_instances=1, overlap="cancel_other")
    going = make_running(job, task_result_id="going-task")
    run_scheduled(job)
    assert runs.execution_terminate_overdue() == 1
    going.refresh_from_db()
    assert len(sent) == 1, "the cancelled run was terminated, its replacement still waits"


def test_terminate_other_drops_a_queued_run_so_max_instances_holds(sent):
    job = make_job(task="demo.noop", max_instances=1, overlap="buffer_one")
    going = make_running(job)
    run_scheduled(job)
    going.refresh_from_db()
    going.job = job
    finish(going, time.perf_counter(), "success", message=None)  # -> the waiting run is queued
    [queued_msg] = sent
    # Run now with terminate other while a run sent after waiting holds the slot.
    runs.execution_start(
        job_id=job.pk,
        trigger="manual",
        scheduled_at=timezone.now(),
        jitter=0,
        attempt=0,
        task_id="now",
        worker="w1",
        overlap="terminate_other",
    )
    runs.execution_start(
        job_id=job.pk,
        trigger=queued_msg["trigger"],
        scheduled_at=queued_msg["scheduled_at"],
        jitter=0,
        attempt=0,
        task_id=queued_msg["task_id"],
        worker="w2",
    )
    live = list(
        JobExecution.objects.filter(job=job, status="running").values_list("pk", "task_result_id")
    )
    assert len(live) <= 1
