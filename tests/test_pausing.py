"""Pausing with a reason and a resume time, resuming by itself, pausing after failures."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from scheduling import services
from scheduling.audit import audit_context
from scheduling.models import (
    Alert,
    AlertKind,
    ExecutionStatus,
    Job,
    JobAlertStatus,
    JobChange,
    JobExecution,
)
from tests.factories import make_job, make_record

pytestmark = pytest.mark.django_db


def soon(seconds: float = 3600) -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=seconds)


def test_pause_records_who_why_and_until_when_and_resume_clears_it():
    job = make_job(cron_expression="*/10 * * * * *")
    until = soon()
    with audit_context(source="command", actor="alice"):
        services.job_pause(job=job, reason="upstream down (OPS-42)", until=until)
    job.refresh_from_db()
    assert (job.enabled, job.next_run_at) == (False, None)
    assert (job.pause_reason, job.paused_by, job.resume_at) == (
        "upstream down (OPS-42)",
        "alice",
        until,
    )
    assert job.paused_at is not None
    change = JobChange.objects.filter(job=job, action="paused").get()
    assert change.actor == "alice"
    assert change.changes["pause_reason"] == ["", "upstream down (OPS-42)"]
    assert change.changes["resume_at"] == [None, until.isoformat()]

    services.job_resume(job=job)
    job.refresh_from_db()
    assert job.enabled and job.next_run_at is not None
    assert (job.pause_reason, job.paused_by, job.paused_at, job.resume_at) == ("", "", None, None)


def test_pausing_a_paused_job_gives_it_the_new_reason_and_time():
    job = make_job()
    services.job_pause(job=job, reason="first")
    services.job_pause(job=job, reason="second", until=soon())
    job.refresh_from_db()
    assert job.pause_reason == "second" and job.resume_at is not None
    assert JobChange.objects.filter(job=job, action="paused").count() == 2


@pytest.mark.parametrize(
    ("until", "message"),
    [
        (timezone.now() - dt.timedelta(seconds=1), "already passed"),
        (dt.datetime(2030, 1, 1, 6, 0), "with its timezone"),
    ],
)
def test_a_resume_time_in_the_past_or_without_timezone_is_refused(until, message):
    job = make_job()
    with pytest.raises(ValidationError) as caught:
        services.job_pause(job=job, reason="x", until=until)
    assert message in " ".join(caught.value.message_dict["resume_at"])
    job.refresh_from_db()
    assert job.enabled, "half-paused"


def test_a_paused_job_resumes_by_itself_at_its_resume_time_from_its_next_fire_time():
    job = make_job(cron_expression="0 */5 * * * *")
    other = make_job(name="later", cron_expression="0 */5 * * * *")
    services.job_pause(job=job, reason="window", until=soon(60))
    services.job_pause(job=other, reason="window", until=soon(7200))
    assert services.jobs_resume_due(now=soon(30)) == []
    with audit_context(source="system", actor="beat-1"):
        resumed = services.jobs_resume_due(now=soon(120))
    assert [j.pk for j in resumed] == [job.pk]
    job.refresh_from_db()
    other.refresh_from_db()
    assert job.enabled and job.next_run_at > timezone.now() and job.resume_at is None
    assert not other.enabled
    change = JobChange.objects.filter(job=job, action="resumed").get()
    assert (change.source, change.actor) == ("system", "beat-1")


def test_a_job_that_cannot_resume_stays_paused_and_says_why():
    job = make_job(cron_expression="0 */5 * * * *")
    services.job_pause(job=job, reason="window", until=soon(60))
    Job.objects.filter(pk=job.pk).update(task="gone.away")  # unregistered since
    assert services.jobs_resume_due(now=soon(120)) == []
    job.refresh_from_db()
    assert not job.enabled and job.resume_at is None
    stop = JobChange.objects.filter(job=job, action="stopped").get()
    assert "gone.away" in stop.changes["error"]
    assert services.jobs_resume_due(now=soon(180)) == []  # not tried again every pass


def run(job: Job, status: str, **fields) -> JobExecution:
    now = timezone.now()
    fields.setdefault("trigger", "")
    return make_record(job, status, now, finished_at=now, duration=0.1, **fields)


def failed(job: Job, **fields) -> JobExecution:
    return run(job, ExecutionStatus.FAILURE, **{"exception": "Boom: no", **fields})


def test_pause_after_failures_counts_final_failures_only_and_a_success_resets():
    job = make_job(pause_after_failures=3, alert_emails="ops@example.com")
    services.job_track_failures(execution=failed(job))
    services.job_track_failures(execution=failed(job), retrying=True)  # retried: not counted
    services.job_track_failures(execution=failed(job))
    job.refresh_from_db()
    assert (job.consecutive_failures, job.enabled) == (2, True)
    services.job_track_failures(execution=run(job, ExecutionStatus.SUCCESS))
    services.job_track_failures(execution=run(job, ExecutionStatus.MISSED))
    job.refresh_from_db()
    assert job.consecutive_failures == 0

    for _ in range(2):
        assert services.job_track_failures(execution=failed(job)) is None
    with audit_context(source="command", actor="nobody"):
        paused = services.job_track_failures(execution=failed(job))
    assert paused is not None
    job.refresh_from_db()
    assert not job.enabled and job.consecutive_failures == 3
    assert "3 failed runs in a row" in job.pause_reason and "Boom: no" in job.pause_reason
    change = JobChange.objects.filter(job=job, action="paused").get()
    assert (change.source, change.actor) == ("system", "pause_after_failures")
    alert = Alert.objects.get(job=job, kind=AlertKind.PAUSED)
    assert alert.state == "firing" and "3 failed runs in a row" in alert.message

    services.job_resume(job=job)
    job.refresh_from_db()
    assert job.enabled and job.consecutive_failures == 0
    assert not JobAlertStatus.objects.get(job=job, kind=AlertKind.PAUSED).firing
    assert Alert.objects.filter(job=job, kind=AlertKind.PAUSED, state="resolved").exists()


def test_runs_in_progress_when_the_job_paused_itself_do_not_count_again():
    # Beat sent three fire times at once (catching up); the second failure pauses the
    # job, the third run ends while it is paused: recorded, but the count stays the
    # one that paused it, and nothing pauses or alerts twice.
    job = make_job(pause_after_failures=2, alert_emails="ops@example.com")
    in_progress = [failed(job, exception=f"Boom: {n}") for n in range(3)]
    assert services.job_track_failures(execution=in_progress[0]) is None
    assert services.job_track_failures(execution=in_progress[1]) is not None
    assert services.job_track_failures(execution=in_progress[2]) is None
    job.refresh_from_db()
    assert (job.enabled, job.consecutive_failures) == (False, 2)
    assert "2 failed runs in a row" in job.pause_reason and "Boom: 1" in job.pause_reason
    assert JobChange.objects.filter(job=job, action="paused").count() == 1
    assert Alert.objects.filter(job=job, kind=AlertKind.PAUSED).count() == 1
    # A success ending while paused leaves it too; the resume starts it again.
    services.job_track_failures(execution=run(job, ExecutionStatus.SUCCESS))
    job.refresh_from_db()
    assert job.consecutive_failures == 2
    services.job_resume(job=job)
    services.job_track_failures(execution=failed(job))
    job.refresh_from_db()
    assert (job.enabled, job.consecutive_failures) == (True, 1)


def test_without_the_option_failures_are_not_counted():
    job = make_job()
    assert services.job_track_failures(execution=failed(job)) is None
    job.refresh_from_db()
    assert job.consecutive_failures == 0


def test_pause_after_failures_below_one_is_refused_naming_the_field():
    with pytest.raises(ValidationError) as caught:
        make_job(name="bad", pause_after_failures=0)
    assert "pause_after_failures" in caught.value.message_dict


def test_command_pause_with_reason_and_until_in_the_jobs_timezone():
    job = make_job(name="report", timezone="Asia/Shanghai")
    out = StringIO()
    call_command(
        "jobs",
        "pause",
        "report",
        "--reason",
        "maintenance",
        "--until",
        "2099-12-24 06:00:00",
        stdout=out,
    )
    assert "until 2099-12-24T06:00:00+08:00" in out.getvalue()
    shown = StringIO()
    call_command("jobs", "show", "report", "--json", stdout=shown)
    status = json.loads(shown.getvalue())
    assert status["pause_reason"] == "maintenance"
    assert dt.datetime.fromisoformat(status["resume_at"]) == dt.datetime.fromisoformat(
        "2099-12-24T06:00:00+08:00"
    )
    assert status["enabled"] is False
    with pytest.raises(CommandError, match="--until 'tomorrow' is not a date-time"):
        call_command("jobs", "pause", "report", "--until", "tomorrow")
    with pytest.raises(CommandError, match=r"resume_at: The resume time .* has already passed"):
        call_command("jobs", "pause", "report", "--until", "2020-01-01 00:00:00")
    job.refresh_from_db()
    assert job.pause_reason == "maintenance"


def test_command_sets_and_clears_pause_after_failures():
    make_job(name="report")
    call_command("jobs", "modify", "report", "--pause-after-failures", "5", stdout=StringIO())
    assert Job.objects.get(name="report").pause_after_failures == 5
    call_command("jobs", "modify", "report", "--pause-after-failures", "0", stdout=StringIO())
    assert Job.objects.get(name="report").pause_after_failures is None


def test_admin_pause_action_asks_why_and_until_then_pauses(admin_client):
    job = make_job(name="report")
    url = reverse("admin:scheduling_job_changelist")
    asked = admin_client.post(url, {"action": "pause_jobs", "_selected_action": [job.pk]})
    assert asked.status_code == 200
    assert b'name="reason"' in asked.content and b'name="until"' in asked.content
    job.refresh_from_db()
    assert job.enabled, "paused before the operator said why"

    refused = admin_client.post(
        url,
        {
            "action": "pause_jobs",
            "_selected_action": [job.pk],
            "apply": "1",
            "reason": "x",
            "until": "2020-01-01 00:00:00",
        },
    )
    assert refused.status_code == 200 and b"already passed" in refused.content
    job.refresh_from_db()
    assert job.enabled

    done = admin_client.post(
        url,
        {
            "action": "pause_jobs",
            "_selected_action": [job.pk],
            "apply": "1",
            "reason": "disk full",
            "until": "2099-01-01 00:00:00",
        },
    )
    assert done.status_code == 302
    job.refresh_from_db()
    assert (job.enabled, job.pause_reason, job.paused_by) == (False, "disk full", "admin")
    listing = admin_client.get(url)
    assert b"paused by admin until 2099-01-01 00:00:00" in listing.content
    assert b"disk full" in listing.content


def test_unticking_enabled_in_the_form_records_who_paused(admin_client):
    job = make_job(name="report", cron_expression="0 0 * * * *")
    with audit_context(source="admin", actor="bob"):
        job.enabled = False
        services.job_save(job=job, changed=["enabled"])
    job.refresh_from_db()
    assert (job.paused_by, job.pause_reason) == ("bob", "")
    assert job.paused_at is not None
