"""Re-run, backfill and run now with overrides (issue 14, items 3 to 5): the services, the
commands and the worker's side, each run carried out in this process as a worker does
(the message that was sent, given to the task)."""

import datetime as dt
import io
import json
from unittest import mock

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from scheduling import backfills, explain, masking, services
from scheduling.models import (
    Backfill,
    BackfillRun,
    ExecutionStatus,
    JobExecution,
    RunOverride,
)
from scheduling.runs import rules
from scheduling.tasks import run_job
from tests.factories import make_finished_run, make_job, make_record, make_running

pytestmark = pytest.mark.django_db

UTC = dt.UTC


class Sent:
    """The messages ``run_job.apply_async`` was asked to send, and a way to run them."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict, dict]] = []

    def __call__(self, kwargs=None, task_id=None, producer=None, **options):
        self.messages.append((kwargs, {**options, "task_id": task_id}))
        return mock.Mock(id=task_id)

    def run(self, index: int = -1):
        """Run message ``index`` as a worker would (the task, in this process)."""
        kwargs, options = self.messages[index]
        run_job.apply(kwargs=kwargs, task_id=options["task_id"])
        return JobExecution.objects.get(task_result_id=options["task_id"])


@pytest.fixture
def sent(monkeypatch):
    """Messages are captured, and sent at once (as if each test's transaction committed)."""
    messages = Sent()
    monkeypatch.setattr(run_job, "apply_async", messages)
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    return messages


# --- run now with overrides -------------------------------------------------------------


def test_run_now_with_kwargs_runs_with_them_over_the_jobs_and_stores_them(sent):
    job = make_job(kwargs={"a": 1, "b": 2})
    task_id = services.job_run_now(job=job, kwargs={"b": 3})
    kwargs, _options = sent.messages[0]
    assert kwargs["override"] is True and "a" not in kwargs  # the message names the job only
    assert RunOverride.objects.filter(task_id=task_id).exists()
    run = sent.run()
    assert run.status == ExecutionStatus.SUCCESS
    assert run.kwargs == {"a": 1, "b": 3}
    assert "'b': 3" in run.result or '"b": 3' in run.result
    assert not RunOverride.objects.filter(task_id=task_id).exists()
    job.refresh_from_db()
    assert job.kwargs == {"a": 1, "b": 2}  # the job keeps its own


def test_run_now_secrets_are_masked_in_the_message_display_and_kept_when_sent_back_masked(sent):
    job = make_job(task="tests.login", kwargs={"user": "u", "password": "hunter2"})
    services.job_run_now(job=job, kwargs={"user": "v", "password": masking.MASK})
    kwargs, options = sent.messages[0]
    assert "hunter2" not in options["kwargsrepr"] and "'v'" in options["kwargsrepr"]
    assert "hunter2" not in json.dumps(kwargs)
    run = sent.run()
    assert run.kwargs == {"user": "v", "password": "hunter2"}  # the job's secret kept
    assert "hunter2" not in run.exception and "as v with password ********" in run.exception


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"kwargs": [1, 2]}, "kwargs"),
        ({"kwargs": {"a": "x\x00"}}, "kwargs"),
        ({"logical_at": dt.datetime(2026, 1, 1, 2, 0)}, "logical_at"),
        ({"overlap": "sometimes"}, "overlap"),
    ],
)
def test_run_now_refuses_bad_overrides_naming_the_field_and_sends_nothing(sent, options, field):
    job = make_job()
    with pytest.raises(ValidationError) as raised:
        services.job_run_now(job=job, **options)
    assert field in raised.value.message_dict
    assert sent.messages == [] and not RunOverride.objects.exists()


def test_run_now_logical_time_is_what_the_run_sees_and_is_not_late_by_it(sent):
    job = make_job(task="demo.echo", misfire_grace_time=5)
    logical = dt.datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    services.job_run_now(job=job, logical_at=logical)
    run = sent.run()
    assert run.status == ExecutionStatus.SUCCESS
    assert run.scheduled_at == logical and run.trigger == "manual"
    assert run.sent_at is not None and run.sent_at > logical


def test_a_run_not_sent_by_the_schedule_is_late_since_it_was_sent(sent):
    job = make_job(misfire_grace_time=5)
    services.job_run_now(job=job, logical_at=dt.datetime(2026, 1, 1, tzinfo=UTC))
    kwargs, _options = sent.messages[0]
    kwargs["sent_at"] = (timezone.now() - dt.timedelta(seconds=20)).isoformat()
    run = sent.run()
    assert run.status == ExecutionStatus.MISSED
    assert "after it was sent; the grace is 5s" in run.reason


def test_a_scheduled_run_records_when_it_was_sent_and_is_late_by_its_fire_time(sent):
    """The timeline's "sent" for a scheduled run: its sender's time, recorded on the run;
    its lateness still counts from its fire time, not from then."""
    job = make_job(task="demo.echo", misfire_grace_time=5)
    fire = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=2)
    services.job_dispatch(job=job, trigger="schedule", scheduled_at=fire, jitter=0)
    kwargs, _options = sent.messages[0]
    assert dt.datetime.fromisoformat(kwargs["sent_at"]) >= fire
    run_job.apply(kwargs=kwargs)
    run = JobExecution.objects.get(job=job, scheduled_at=fire)
    assert run.status == ExecutionStatus.SUCCESS and run.trigger == "schedule"
    assert run.sent_at == dt.datetime.fromisoformat(kwargs["sent_at"])
    assert run.lateness >= 2
    # Sent long after its fire time (beat behind): late by the fire time, so missed.
    late = fire - dt.timedelta(seconds=60)
    services.job_dispatch(job=job, trigger="schedule", scheduled_at=late, jitter=0)
    run_job.apply(kwargs=sent.messages[-1][0])
    assert JobExecution.objects.get(job=job, scheduled_at=late).status == ExecutionStatus.MISSED


def test_lateness_of_runs_not_sent_by_the_schedule_counts_from_their_send():
    now = timezone.now()
    old = now - dt.timedelta(days=300)
    for trigger in ("manual", "rerun", "backfill"):
        late = rules.lateness(
            trigger=trigger, scheduled_at=old, jitter=0, attempt=0, now=now, sent_at=now
        )
        assert late == 0
        assert (
            rules.lateness(trigger=trigger, scheduled_at=old, jitter=0, attempt=1, now=now) is None
        )
    assert rules.lateness(trigger="schedule", scheduled_at=old, jitter=0, attempt=0, now=now) > 1e6


def test_a_backfilled_run_of_a_coalescing_job_is_not_coalesced(sent):
    job = make_job(coalesce=True)
    fire = dt.datetime(2026, 1, 1, 5, tzinfo=UTC)
    job.coalesced_until = fire + dt.timedelta(days=1)
    job.save(update_fields=["coalesced_until"])
    services.job_dispatch(job=job, trigger="backfill", scheduled_at=fire, task_id="t-coalesce")
    assert sent.run().status == ExecutionStatus.SUCCESS


# --- re-run ------------------------------------------------------------------------------


def test_rerun_sends_a_linked_run_with_the_originals_arguments_and_logical_time(sent):
    job = make_job(kwargs={"a": 1})
    services.job_run_now(job=job, kwargs={"a": 2}, logical_at=dt.datetime(2026, 3, 1, tzinfo=UTC))
    original = sent.run()
    job.kwargs = {"a": 5}
    job.save(update_fields=["kwargs"])
    services.execution_rerun(execution=original, by="alice")
    rerun = sent.run()
    assert rerun.trigger == "rerun" and rerun.parent_id == original.pk
    assert rerun.scheduled_at == original.scheduled_at
    assert rerun.kwargs == {"a": 2} and rerun.status == ExecutionStatus.SUCCESS
    assert job.changes.filter(action="re-run", actor="alice").exists()


def test_rerun_of_a_scheduled_run_uses_the_jobs_arguments_and_its_fire_time(sent):
    job = make_job()
    original = make_finished_run(job, 0.1, status="failure")
    services.execution_rerun(execution=original)
    rerun = sent.run()
    assert rerun.kwargs is None and rerun.scheduled_at == original.scheduled_at
    assert rerun.status == ExecutionStatus.SUCCESS


def test_rerun_refuses_a_run_in_progress_and_one_whose_job_was_removed(sent):
    job = make_job()
    running = make_running(job)
    with pytest.raises(ValidationError, match="only a run that is over"):
        services.execution_rerun(execution=running)
    done = make_finished_run(job, 0.1)
    services.job_remove(job=job)
    done.refresh_from_db()
    with pytest.raises(ValidationError, match="its job was removed"):
        services.execution_rerun(execution=done)
    assert sent.messages == []


def test_rerun_command_prints_the_task_and_refuses_an_unknown_id(sent):
    job = make_job()
    original = make_finished_run(job, 0.1)
    out = io.StringIO()
    call_command("jobs", "rerun", str(original.pk), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["parent"] == original.pk and data["task_id"] == sent.messages[0][1]["task_id"]
    with pytest.raises(CommandError, match="No run with execution id '999999'"):
        call_command("jobs", "rerun", "999999")


# --- backfill ----------------------------------------------------------------------------


def _berlin_daily(**fields):
    return make_job(cron_expression="0 0 3 * * *", timezone="Europe/Berlin", **fields)


def test_backfill_dry_run_across_the_october_dst_change_lists_one_fire_time_a_day():
    job = _berlin_daily()
    out = io.StringIO()
    call_command(
        "jobs",
        "backfill",
        job.name,
        "--start",
        "2025-10-24 00:00:00",
        "--end",
        "2025-10-29 00:00:00",
        "--dry-run",
        "--json",
        stdout=out,
    )
    data = json.loads(out.getvalue())
    times = [run["scheduled_at"] for run in data["runs"]]
    assert times == [
        "2025-10-24T03:00:00+02:00",
        "2025-10-25T03:00:00+02:00",
        "2025-10-26T03:00:00+01:00",
        "2025-10-27T03:00:00+01:00",
        "2025-10-28T03:00:00+01:00",
    ]
    assert all(run["existing"] is None for run in data["runs"])
    assert not Backfill.objects.exists() and not JobExecution.objects.exists()


def test_backfill_range_is_start_inclusive_end_exclusive_and_reads_another_timezone():
    job = _berlin_daily()
    plan = services.job_backfill(
        job=job,
        start=dt.datetime(2025, 10, 24, 1, tzinfo=UTC),  # 03:00 Berlin summer time
        end=dt.datetime(2025, 10, 26, 2, tzinfo=UTC),  # 03:00 Berlin winter time
        dry_run=True,
    ).plan
    assert [item["scheduled_at"] for item in plan] == [
        dt.datetime(2025, 10, 24, 1, tzinfo=UTC),
        dt.datetime(2025, 10, 25, 1, tzinfo=UTC),
    ]


def test_backfill_reprocess_chooses_by_what_is_on_record():
    job = make_job(cron_expression="0 0 * * * *", timezone="UTC")
    base = dt.datetime(2025, 5, 1, tzinfo=UTC)
    outcomes = {1: "success", 2: "failure", 3: "missed", 4: "running"}
    for hour, status in outcomes.items():
        make_record(job, status, base + dt.timedelta(hours=hour))

    def sends(reprocess):
        plan = services.job_backfill(
            job=job, start=base, end=base + dt.timedelta(hours=5), reprocess=reprocess, dry_run=True
        ).plan
        assert [item["existing"] for item in plan] == [None, *outcomes.values()]
        return [item["send"] for item in plan]

    assert sends("missing") == [True, False, False, True, False]
    assert sends("failed") == [True, False, True, True, False]
    assert sends("all") == [True, True, True, True, False]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"end": dt.datetime(2025, 1, 1, tzinfo=UTC)}, "end"),  # before the start
        ({"end": timezone.now() + dt.timedelta(days=3)}, "end"),  # the future
        ({"start": dt.datetime(2025, 1, 2)}, "start"),  # naive
        ({"reprocess": "some"}, "reprocess"),
        ({"overlap": "never"}, "overlap"),
    ],
)
def test_backfill_refuses_bad_input_naming_the_field_and_writes_nothing(options, field):
    job = make_job()
    arguments = {
        "start": dt.datetime(2025, 1, 2, tzinfo=UTC),
        "end": dt.datetime(2025, 1, 3, tzinfo=UTC),
        **options,
    }
    with pytest.raises(ValidationError) as raised:
        services.job_backfill(job=job, **arguments)
    assert field in raised.value.message_dict
    assert not Backfill.objects.exists()


def test_backfill_refuses_more_fire_times_than_its_limit(settings):
    settings.SCHEDULING = {"BACKFILL_MAX_RUNS": 10}
    job = make_job(cron_expression="0 * * * * *")  # every minute
    with pytest.raises(ValidationError, match="more than 10 fire times"):
        services.job_backfill(
            job=job,
            start=dt.datetime(2025, 1, 1, tzinfo=UTC),
            end=dt.datetime(2025, 1, 1, 1, tzinfo=UTC),
        )


def test_backfill_command_refuses_a_bad_time_with_a_one_line_error():
    job = make_job()
    with pytest.raises(CommandError, match="--start 'yesterday' is not a date-time"):
        call_command("jobs", "backfill", job.name, "--start", "yesterday", "--end", "2025-01-01")


def test_backfill_sends_at_its_rate_below_the_jobs_priority_and_runs_each_fire_time(sent, settings):
    settings.SCHEDULING = {"BACKFILL_RATE": 2.0}
    job = make_job(cron_expression="0 0 * * * *", timezone="UTC", priority=5, max_instances=3)
    start = dt.datetime(2025, 5, 1, tzinfo=UTC)
    backfill = services.job_backfill(job=job, start=start, end=start + dt.timedelta(hours=6))
    assert backfill.total_count == 6
    # On commit, the first is sent at once; the rest as the rate allows.
    assert len(sent.messages) == 1
    assert backfills.backfills_send_due() == 0  # within the same half second: none due
    later = timezone.now() + dt.timedelta(seconds=1)
    with mock.patch("scheduling.backfills.timezone.now", return_value=later):
        assert backfills.backfills_send_due() == 2  # two a second
    for index in range(len(sent.messages)):
        run = sent.run(index)
        assert run.trigger == "backfill" and run.backfill_id == backfill.pk
        assert run.status == ExecutionStatus.SUCCESS
    kwargs, options = sent.messages[0]
    # One step below the job's 5, as the broker numbers it (kombu's Redis counts down).
    assert options["priority"] == services.message_routing(job, run_job.app, priority=4)["priority"]
    assert kwargs["backfill_id"] == backfill.pk
    assert [m[0]["scheduled_at"] for m in sent.messages] == [
        (start + dt.timedelta(hours=h)).isoformat() for h in range(3)
    ]


def test_backfill_waits_while_the_jobs_slots_are_taken(sent, settings):
    settings.SCHEDULING = {"BACKFILL_RATE": 100.0}
    job = make_job(cron_expression="0 0 * * * *", timezone="UTC", max_instances=1)
    make_running(job)
    start = dt.datetime(2025, 5, 1, tzinfo=UTC)
    backfill = services.job_backfill(job=job, start=start, end=start + dt.timedelta(hours=3))
    assert sent.messages == []
    JobExecution.objects.filter(status="running").update(status="success")
    assert backfills.backfills_send_due() == 1  # one slot: one at a time
    assert backfills.backfills_send_due() == 0  # its run is not over yet
    sent.run()
    assert backfills.backfills_send_due() == 1
    backfill.refresh_from_db()
    assert backfill.sent_count == 2 and backfill.state == "running"


def test_backfill_cancel_records_the_fire_times_not_sent_and_stops_sending(sent, settings):
    settings.SCHEDULING = {"BACKFILL_RATE": 1.0}
    job = make_job(cron_expression="0 0 * * * *", timezone="UTC")
    start = dt.datetime(2025, 5, 1, tzinfo=UTC)
    backfill = services.job_backfill(
        job=job, start=start, end=start + dt.timedelta(hours=5), by="alice"
    )
    out = io.StringIO()
    call_command("jobs", "backfill-cancel", str(backfill.pk), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["state"] == "cancelled"
    assert data["counts"] == {
        "total": 5,
        "not_sent_on_record": 0,
        "sent": 1,
        "cancelled": 4,
        "pending": 0,
    }
    later = timezone.now() + dt.timedelta(seconds=60)
    with mock.patch("scheduling.backfills.timezone.now", return_value=later):
        assert backfills.backfills_send_due() == 0
    states = list(BackfillRun.objects.filter(backfill=backfill).values_list("state", flat=True))
    assert states == ["sent", "cancelled", "cancelled", "cancelled", "cancelled"]
    assert "Cancelled by" in BackfillRun.objects.filter(state="cancelled").first().reason
    with pytest.raises(ValidationError, match="only one still sending"):
        services.backfill_cancel(backfill=backfill)
    assert job.changes.filter(action="cancel backfill").exists()
    assert job.changes.filter(action="backfill", actor="alice").exists()


def test_backfill_of_fire_times_all_on_record_is_done_at_once(sent):
    job = make_job(cron_expression="0 0 * * * *", timezone="UTC")
    fire = dt.datetime(2025, 5, 1, 1, tzinfo=UTC)
    make_record(job, "success", fire)
    backfill = services.job_backfill(job=job, start=fire, end=fire + dt.timedelta(minutes=30))
    assert backfill.state == "done" and backfill.skipped_count == 1 and sent.messages == []
    item = BackfillRun.objects.get(backfill=backfill)
    assert item.state == "skipped" and item.existing == "success"
    assert "On record as success" in item.reason


# --- admin -------------------------------------------------------------------------------


def test_admin_run_now_form_shows_masked_kwargs_and_sends_the_overrides(admin_client, sent):
    job = make_job(task="tests.login", kwargs={"user": "u", "password": "hunter2"})
    url = reverse("admin:scheduling_job_run_now", args=[job.pk])
    page = admin_client.get(url).content.decode()
    assert "hunter2" not in page and masking.MASK in page
    response = admin_client.post(
        url,
        {
            "kwargs": '{"user": "v", "password": "********"}',
            "logical_at": "2026-01-01 02:00:00",
            "overlap": "allow_all",
            "apply": "1",
        },
    )
    assert response.status_code == 302
    kwargs, _options = sent.messages[0]
    assert kwargs["overlap"] == "allow_all" and kwargs["override"] is True
    run = sent.run()
    assert run.kwargs == {"user": "v", "password": "hunter2"}
    page = admin_client.get(
        reverse("admin:scheduling_jobexecution_change", args=[run.pk])
    ).content.decode()
    assert "hunter2" not in page and "&quot;v&quot;" in page


def test_admin_run_now_refuses_bad_kwargs_on_the_form_and_sends_nothing(admin_client, sent):
    job = make_job()
    url = reverse("admin:scheduling_job_run_now", args=[job.pk])
    response = admin_client.post(url, {"kwargs": "[1, 2]", "apply": "1"})
    assert response.status_code == 200
    assert "Keyword arguments must be a JSON object" in response.content.decode()
    response = admin_client.post(url, {"kwargs": "{oops", "apply": "1"})
    assert response.status_code == 200 and sent.messages == []


def test_admin_backfill_page_previews_then_starts_and_the_backfill_is_listed(admin_client, sent):
    job = _berlin_daily()
    url = reverse("admin:scheduling_job_backfill", args=[job.pk])
    assert "Europe/Berlin" in admin_client.get(url).content.decode()
    data = {
        "start": "2025-10-25 00:00:00",
        "end": "2025-10-27 00:00:00",
        "timezone": "Europe/Berlin",
        "reprocess": "missing",
        "overlap": "",
    }
    page = admin_client.post(url, {**data, "preview": "1"}).content.decode()
    assert "2025-10-25T03:00:00+02:00" in page and "2025-10-26T03:00:00+01:00" in page
    assert not Backfill.objects.exists()
    response = admin_client.post(url, {**data, "start_backfill": "1"})
    backfill = Backfill.objects.get()
    assert response.status_code == 302 and str(backfill.pk) in response["Location"]
    page = admin_client.get(
        reverse("admin:scheduling_backfill_change", args=[backfill.pk])
    ).content.decode()
    assert "2025-10-25T03:00:00+02:00" in page
    # Its range in its timezone, to the second with the offset (not the server's zone).
    start = page[page.index("field-start_zoned") :][:1000]
    assert ">2025-10-25 00:00:00 +02:00</time>" in start
    assert ">2025-10-27 00:00:00 +01:00</time>" in page[page.index("field-end_zoned") :][:1000]
    admin_client.post(
        reverse("admin:scheduling_backfill_changelist"),
        {"action": "cancel_backfills", "_selected_action": [backfill.pk]},
    )
    backfill.refresh_from_db()
    assert backfill.state == "cancelled" and backfill.cancelled_count == 1


def test_admin_backfill_refuses_a_bad_range_on_the_form(admin_client):
    job = make_job()
    url = reverse("admin:scheduling_job_backfill", args=[job.pk])
    base = {"timezone": "UTC", "reprocess": "missing", "start_backfill": "1"}
    page = admin_client.post(url, {**base, "start": "nope", "end": "2025-01-01"}).content.decode()
    assert "is not a date-time" in page
    page = admin_client.post(
        url, {**base, "start": "2025-01-02", "end": "2025-01-01"}
    ).content.decode()
    assert "The end must be after the start" in page
    assert not Backfill.objects.exists()


def test_admin_rerun_action_sends_a_rerun_and_names_what_it_refuses(admin_client, sent):
    job = make_job()
    done, running = make_finished_run(job, 0.1), make_running(job)
    response = admin_client.post(
        reverse("admin:scheduling_jobexecution_changelist"),
        {"action": "rerun_runs", "_selected_action": [done.pk, running.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "1 re-run sent" in page and "only a run that is over can be re-run" in page
    assert sent.run().parent_id == done.pk


def test_run_control_pages_need_the_run_permission(client, django_user_model, sent):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_job"),
        Permission.objects.get(codename="view_jobexecution"),
    )
    client.force_login(user)
    job = make_job()
    done = make_finished_run(job, 0.1)
    assert client.get(reverse("admin:scheduling_job_run_now", args=[job.pk])).status_code == 403
    assert client.get(reverse("admin:scheduling_job_backfill", args=[job.pk])).status_code == 403
    client.post(
        reverse("admin:scheduling_jobexecution_changelist"),
        {"action": "rerun_runs", "_selected_action": [done.pk]},
    )
    assert sent.messages == []


def test_a_missed_fire_time_that_was_backfilled_is_explained_by_the_backfills_run(sent):
    job = make_job(cron_expression="0 0 * * * *", timezone="UTC")
    fire = (timezone.now() - dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    make_record(job, "missed", fire, reason="beat was down")
    services.job_backfill(job=job, start=fire, end=fire + dt.timedelta(minutes=1))
    run = sent.run()
    fates = explain.job_explain(job=job, since=fire - dt.timedelta(minutes=1))["recent"]
    fate = next(f for f in fates if f["scheduled_at"] == fire.isoformat())
    assert fate["fate"] == "ran" and fate["execution_id"] == run.pk


def test_a_run_with_overrides_that_waits_for_a_slot_keeps_them_when_sent_on(sent):
    from scheduling.runs import waiting

    job = make_job(task="tests.login", kwargs={"user": "u", "password": "pw1"}, max_instances=1)
    running = make_running(job)
    services.job_run_now(job=job, kwargs={"user": "w"}, overlap="buffer_one")
    assert sent.run().status == ExecutionStatus.WAITING
    JobExecution.objects.filter(pk=running.pk).update(status="success")
    assert waiting.execution_promote_waiting(job_id=job.pk) == 1
    _kwargs, options = sent.messages[-1]
    assert "'w'" in options["kwargsrepr"] and "pw1" not in options["kwargsrepr"]
    run = sent.run()
    assert run.status == ExecutionStatus.FAILURE  # tests.login always fails, naming its user
    assert "as w with password ********" in run.exception and run.kwargs["user"] == "w"


def test_run_now_keeps_a_jobs_secret_for_other_arguments_only_for_who_may_keep_secrets(
    sent, django_user_model
):
    job = make_job(task="tests.login", kwargs={"user": "u", "password": "hunter2"})
    operator = django_user_model.objects.create_user("operator", is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="run_job"))
    with pytest.raises(ValidationError, match="enter the secret again"):
        services.job_run_now(job=job, kwargs={"user": "elsewhere"}, user=operator)
    assert sent.messages == [] and not RunOverride.objects.exists()
    services.job_run_now(job=job, kwargs={"user": "elsewhere", "password": "own"}, user=operator)
    assert sent.run().kwargs == {"user": "elsewhere", "password": "own"}
    services.job_run_now(job=job, kwargs={"password": masking.MASK}, user=operator)
    assert sent.run().kwargs is None  # the job's own arguments: nothing stored


def test_run_now_with_overrides_needs_keep_secrets_in_the_admin_too(
    client, django_user_model, sent
):
    job = make_job(task="tests.login", kwargs={"user": "u", "password": "hunter2"})
    operator = django_user_model.objects.create_user("operator2", is_staff=True)
    operator.user_permissions.add(
        Permission.objects.get(codename="run_job"), Permission.objects.get(codename="view_job")
    )
    client.force_login(operator)
    url = reverse("admin:scheduling_job_run_now", args=[job.pk])
    page = client.post(
        url, {"kwargs": '{"user": "x", "password": "********"}', "apply": "1"}
    ).content.decode()
    assert "enter the secret again" in page and sent.messages == []
