"""Job groups as a whole: pause every job of a group, resume the ones its pause paused."""

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from scheduling import group_services
from scheduling.audit import audit_context
from scheduling.models import Job, JobChange, JobGroup
from tests.factories import make_job

pytestmark = pytest.mark.django_db


def test_pausing_a_group_pauses_its_jobs_and_resuming_it_resumes_only_those():
    a = make_job(name="a", group="reports")
    b = make_job(name="b", group="reports")
    alone = make_job(name="alone", group="reports")
    other = make_job(name="other", group="etl")
    from scheduling import services

    services.job_pause(job=alone, reason="broken on its own")
    with audit_context(source="command", actor="alice"):
        paused = group_services.group_pause(name="reports", reason="warehouse migration")
    assert sorted(job.name for job in paused) == ["a", "b"]
    for job in (a, b):
        job.refresh_from_db()
        assert not job.enabled and job.next_run_at is None
        assert job.pause_reason == "Group reports paused by alice: warehouse migration"
    assert Job.objects.get(pk=other.pk).enabled
    assert JobChange.objects.filter(job=a, action="paused").exists()  # each has its entry
    with pytest.raises(Exception, match="paused already"):
        group_services.group_pause(name="reports")
    resumed = group_services.group_resume(name="reports")
    assert sorted(job.name for job in resumed) == ["a", "b"]
    assert all(Job.objects.get(pk=job.pk).next_run_at for job in (a, b))
    alone.refresh_from_db()
    assert not alone.enabled and alone.pause_reason == "broken on its own"
    assert not JobGroup.objects.get(name="reports").paused


def test_group_command_lists_pauses_and_resumes_and_refuses_an_unknown_group():
    make_job(name="a", group="reports")
    out = io.StringIO()
    call_command("jobs", "group", "pause", "reports", "--reason", "migration", stdout=out)
    assert "Paused group reports: 1 job(s): a" in out.getvalue()
    out = io.StringIO()
    call_command("jobs", "group", "list", "--json", stdout=out)
    [row] = json.loads(out.getvalue())
    assert (row["name"], row["jobs"], row["enabled"]) == ("reports", 1, 0)
    assert row["paused"].endswith(": migration")
    call_command("jobs", "group", "resume", "reports", stdout=io.StringIO())
    assert Job.objects.get(name="a").enabled
    with pytest.raises(CommandError, match="No job is in group 'nope'"):
        call_command("jobs", "group", "pause", "nope")
    with pytest.raises(CommandError, match="is not paused"):
        call_command("jobs", "group", "resume", "reports")


def test_admin_pauses_and_resumes_a_group(admin_client):
    make_job(name="a", group="reports")
    group = JobGroup.objects.create(name="reports")
    url = reverse("admin:scheduling_jobgroup_changelist")
    assert admin_client.get(url).status_code == 200
    admin_client.post(url, {"action": "pause_groups", "_selected_action": [group.pk]})
    assert not Job.objects.get(name="a").enabled
    admin_client.post(url, {"action": "resume_groups", "_selected_action": [group.pk]})
    assert Job.objects.get(name="a").enabled


# --- the cap on a group's runs at once ---------------------------------------------------

from unittest import mock  # noqa: E402

from django.core.exceptions import ValidationError  # noqa: E402
from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from scheduling import alerts, selectors, services  # noqa: E402
from scheduling.models import AlertKind, JobExecution  # noqa: E402
from scheduling.runs import rules  # noqa: E402
from scheduling.tasks import run_job  # noqa: E402
from tests.factories import make_running, make_waiting, run_scheduled  # noqa: E402

FULL = rules.GroupSlots(name="reports", cap=2, live=2)


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        ("skip", "skipped"),
        ("allow_all", "skipped"),
        ("terminate_other", "skipped"),
        ("buffer_one", "waiting"),
        ("buffer_all", "waiting"),
        ("cancel_other", "waiting"),
    ],
)
def test_a_run_that_finds_its_group_full_follows_its_jobs_overlap_policy(policy, status):
    job = make_job(max_instances=3, overlap=policy)
    decision = rules.decide(job, scheduled_at=None, late=0.0, live=0, group=FULL)
    assert decision.status == status and decision.others is None
    assert "group reports is full: 2 run(s) of its jobs going; its max instances is 2" in (
        decision.reason.lower()
    )
    assert rules.decide(
        job, scheduled_at=None, late=0.0, live=0, retry=True, group=FULL
    ).status == ("skipped")
    free = rules.GroupSlots(name="reports", cap=2, live=1)
    assert rules.decide(job, scheduled_at=None, late=0.0, live=0, group=free).starts


def test_a_job_full_on_its_own_is_decided_by_its_max_instances_first():
    job = make_job(max_instances=1, overlap="skip")
    decision = rules.decide(job, scheduled_at=None, late=0.0, live=1, group=FULL)
    assert decision.status == "skipped" and "max instances is 1" in decision.reason


def test_promotion_sends_no_more_than_the_group_has_free():
    job = make_job(max_instances=5, overlap="buffer_all")
    assert rules.promotable(job, live=0, waiting=4) == 4
    assert rules.promotable(job, live=0, waiting=4, group=rules.GroupSlots("g", 3, 1)) == 2
    assert rules.promotable(job, live=0, waiting=4, group=FULL) == 0


@pytest.mark.django_db(transaction=True)
def test_a_run_of_a_job_whose_group_is_full_is_skipped_naming_the_group():
    JobGroup.objects.create(name="reports", max_instances=1)
    a = make_job(name="a", group="reports", task="demo.noop", max_instances=5)
    b = make_job(name="b", group="reports", task="demo.noop", max_instances=5)
    other = make_job(name="other", group="etl", task="demo.noop")
    make_running(a)
    run_scheduled(b)
    run_scheduled(other)  # another group: not held by this one's cap
    skipped = JobExecution.objects.get(job=b)
    assert skipped.status == "skipped"
    assert skipped.reason.startswith("Group reports is full: 1 run(s) of its jobs going")
    assert JobExecution.objects.get(job=other).status == "success"
    group_services.group_update(name="reports", max_instances=2)
    run_scheduled(b)
    assert JobExecution.objects.filter(job=b, status="success").count() == 1
    group_services.group_update(name="reports", max_instances=None)
    make_running(b)
    run_scheduled(b)  # no cap: the job's own max instances (5) only
    assert JobExecution.objects.filter(job=b, status="success").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_run_waiting_for_its_group_is_sent_when_a_run_of_another_job_of_the_group_ends(
    monkeypatch,
):
    JobGroup.objects.create(name="reports", max_instances=1)
    a = make_job(name="a", group="reports", task="demo.noop", overlap="skip")
    b = make_job(name="b", group="reports", task="demo.noop", overlap="buffer_one")
    running = make_running(a)
    run_scheduled(b)
    waiting = JobExecution.objects.get(job=b)
    assert waiting.status == "waiting" and "group reports is full" in waiting.reason
    sent = []
    monkeypatch.setattr(services, "job_dispatch", lambda **kw: sent.append(kw["job"].name))
    # The run of a ends (as its worker records it): b's waiting run is sent on.
    from scheduling.runs import finish

    JobExecution.objects.filter(pk=running.pk).update(status="success", lease_until=None)
    running.refresh_from_db()
    finish.promote_after(running)
    assert sent == ["b"]
    assert JobExecution.objects.get(pk=waiting.pk).status == "queued"


def test_the_housekeeping_promotes_no_more_than_the_group_has_free():
    JobGroup.objects.create(name="reports", max_instances=2)
    a = make_job(name="a", group="reports", overlap="buffer_all", max_instances=5)
    b = make_job(name="b", group="reports", overlap="buffer_all", max_instances=5)
    make_running(b)
    for _ in range(3):
        make_waiting(a)
    with mock.patch.object(services, "job_dispatch"):
        from scheduling.runs import waiting

        assert waiting.executions_promote_due() == 1
    assert JobExecution.objects.filter(job=a, status="queued").count() == 1


# --- the group's queue and alert recipients ------------------------------------------------


def test_a_job_without_a_queue_is_sent_to_its_groups_queue(monkeypatch):
    JobGroup.objects.create(name="reports", queue="reports-q")
    own = make_job(name="own", group="reports", queue="mine")
    bare = make_job(name="bare", group="reports")
    alone = make_job(name="alone", group="etl")
    assert [selectors.job_routed_queue(job=j) for j in (own, bare, alone)] == [
        "mine",
        "reports-q",
        "",
    ]
    assert selectors.job_status(job=bare)["queue"] == "reports-q"
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    with mock.patch.object(run_job, "apply_async") as apply_async:
        services.job_run_now(job=Job.objects.get(pk=bare.pk))
    assert apply_async.call_args.kwargs["queue"] == "reports-q"


def test_beat_sends_a_job_without_a_queue_to_its_groups_queue(monkeypatch):
    from scheduling import publish
    from tests.test_scheduler import leader, make_due, now_s

    JobGroup.objects.create(name="reports", queue="reports-q")
    job = make_job(name="bare", group="reports", cron_expression="*/1 * * * * *")
    make_due(job, now_s())
    queues = []
    monkeypatch.setattr(
        publish,
        "messages_publish",
        lambda producer, messages, **_: queues.extend(m.route.routing_key for m in messages),
    )
    leader().dispatch_due(timezone.now())
    assert queues == ["reports-q"]


def test_a_backfilled_run_goes_to_the_groups_queue(monkeypatch):
    JobGroup.objects.create(name="reports", queue="reports-q")
    job = make_job(name="bare", group="reports", cron_expression="0 0 * * * *")
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    with mock.patch.object(run_job, "apply_async") as apply_async:
        now = timezone.now().replace(minute=0, second=0, microsecond=0)
        services.job_backfill(job=job, start=now - dt.timedelta(hours=2), end=now)
    assert {call.kwargs["queue"] for call in apply_async.call_args_list} == {"reports-q"}


def test_alerts_of_a_job_without_recipients_go_to_its_groups():
    JobGroup.objects.create(
        name="reports",
        alert_emails="team@example.com",
        alert_webhooks="https://hooks.example.com/x",
    )
    own = make_job(name="own", group="reports", alert_emails="me@example.com")
    bare = make_job(name="bare", group="reports")
    alone = make_job(name="alone", group="etl")
    assert selectors.job_alert_recipients(job=own) == (["me@example.com"], [])
    assert selectors.job_alert_recipients(job=bare) == (
        ["team@example.com"],
        ["https://hooks.example.com/x"],
    )
    assert selectors.job_alert_recipients(job=alone) == ([], [])
    # The dead man's switch looks at the jobs whose alerts go somewhere: both of the group.
    assert set(selectors.job_list_with_alert_recipients().values_list("name", flat=True)) == {
        "own",
        "bare",
    }
    with mock.patch("scheduling.deliveries.alert_deliver_later") as deliver:
        alert = alerts.alert_set(job=bare, kind=AlertKind.FAILURE, firing=True, message="boom")
    assert deliver.called
    from scheduling import deliveries

    assert deliveries._recipients(alert) == (["team@example.com"], ["https://hooks.example.com/x"])


# --- setting a group ------------------------------------------------------------------------


def test_group_set_sets_and_clears_the_cap_queue_and_recipients():
    make_job(name="a", group="reports")
    out = io.StringIO()
    call_command(
        "jobs", "group", "set", "reports", "--max-instances", "2", "--queue", "reports-q",
        "--alert-emails", "team@example.com", "--json", stdout=out,
    )  # fmt: skip
    row = json.loads(out.getvalue())
    assert (row["max_instances"], row["queue"], row["alert_emails"]) == (
        2,
        "reports-q",
        ["team@example.com"],
    )
    call_command("jobs", "group", "set", "reports", "--max-instances", "", stdout=io.StringIO())
    group = JobGroup.objects.get(name="reports")
    assert (group.max_instances, group.queue) == (None, "reports-q")
    out = io.StringIO()
    call_command("jobs", "group", "list", "--json", stdout=out)
    assert json.loads(out.getvalue())[0]["max_instances"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-instances", "two"], "--max-instances 'two' is not a whole number"),
        (["--max-instances", "0"], "max_instances"),
        (["--queue", "two words"], "queue"),
        (["--alert-webhooks", "http://127.0.0.1/x"], "alert_webhooks"),
        ([], "give --max-instances, --queue"),
    ],
)
def test_group_set_refuses_bad_values_naming_the_field_and_saves_nothing(args, message):
    make_job(name="a", group="reports")
    with pytest.raises(CommandError, match=message):
        call_command("jobs", "group", "set", "reports", *args, stdout=io.StringIO())
    assert not JobGroup.objects.filter(name="reports").exclude(max_instances=None).exists()
    assert not JobGroup.objects.filter(name="reports").exclude(queue="").exists()


def test_admin_sets_a_groups_cap_and_refuses_a_bad_value_with_the_form(admin_client):
    group = JobGroup.objects.create(name="reports")
    url = reverse("admin:scheduling_jobgroup_change", args=[group.pk])
    assert admin_client.get(url).status_code == 200
    form = {"max_instances": "2", "queue": "reports-q", "alert_emails": "", "alert_webhooks": ""}
    assert admin_client.post(url, form).status_code == 302
    group.refresh_from_db()
    assert (group.max_instances, group.queue, group.name) == (2, "reports-q", "reports")
    response = admin_client.post(url, {**form, "max_instances": "0", "queue": "a b"})
    assert response.status_code == 200 and response.context["adminform"].form.errors.keys() == {
        "max_instances",
        "queue",
    }
    group.refresh_from_db()
    assert group.max_instances == 2


# --- joining a paused group, and a pause reason too long ---------------------------------


def test_a_job_created_in_or_moved_into_a_paused_group_is_paused_with_it():
    make_job(name="a", group="reports")
    with audit_context(source="command", actor="alice"):
        group_services.group_pause(name="reports", reason="migration")
    created = make_job(name="created", group="reports")
    moved = services.job_update(job=make_job(name="moved", group="etl"), group="reports")
    [bulk] = services.job_bulk_create(
        jobs=[Job(name="bulk", group="reports", task="demo.noop", trigger_type="cron",
                  cron_expression="0 0 * * * *")]
    )  # fmt: skip
    for job in (created, moved, bulk):
        job.refresh_from_db()
        assert not job.enabled and job.next_run_at is None, job.name
        assert job.pause_reason == "Group reports paused by alice: migration", job.name
    assert JobChange.objects.filter(job=moved, action="changed").exists()
    resumed = group_services.group_resume(name="reports")
    assert sorted(job.name for job in resumed) == ["a", "bulk", "created", "moved"]
    # A paused job moved into it keeps its own pause.
    group_services.group_pause(name="reports")
    mine = make_job(name="mine", group="etl", enabled=False)
    services.job_update(job=mine, group="reports")
    group_services.group_resume(name="reports")
    assert not Job.objects.get(name="mine").enabled


def test_a_group_pause_reason_too_long_is_refused_and_nothing_is_paused():
    make_job(name="a", group="reports")
    with pytest.raises(ValidationError, match="keep it to 300"):
        group_services.group_pause(name="reports", reason="x" * 301)
    with pytest.raises(CommandError, match="keep it to 300"):
        call_command("jobs", "group", "pause", "reports", "--reason", "x" * 301)
    # Within the group's 300, but with a long name and actor over a job's 500.
    long_name = "g" * 100
    make_job(name="b", group=long_name)
    too_long = "make its jobs' pause reason 502 characters"
    with (
        audit_context(source="command", actor="u" * 150),
        pytest.raises(ValidationError, match=too_long),
    ):
        group_services.group_pause(name=long_name, reason="x" * 233)
    assert Job.objects.filter(enabled=True).count() == 2
    assert not JobGroup.objects.filter(paused_at__isnull=False).exists()


def test_a_backfill_waits_while_its_groups_slots_are_taken(monkeypatch, settings):
    from scheduling import backfills
    from tests.test_run_control import Sent

    settings.SCHEDULING = {"BACKFILL_RATE": 100.0}
    sent = Sent()
    monkeypatch.setattr(run_job, "apply_async", sent)
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    JobGroup.objects.create(name="reports", max_instances=1)
    job = make_job(group="reports", cron_expression="0 0 * * * *", timezone="UTC", max_instances=3)
    other = make_running(make_job(name="other", group="reports"))
    start = dt.datetime(2025, 5, 1, tzinfo=dt.UTC)
    backfill = services.job_backfill(job=job, start=start, end=start + dt.timedelta(hours=3))
    assert sent.messages == []  # the other job's run holds the group's one slot
    JobExecution.objects.filter(pk=other.pk).update(status="success")
    assert backfills.backfills_send_due() == 1  # one slot in the group: one at a time
    assert backfills.backfills_send_due() == 0
    assert sent.run().status == "success"
    assert backfills.backfills_send_due() == 1
    backfill.refresh_from_db()
    assert backfill.sent_count == 2
