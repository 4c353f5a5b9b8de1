"""``jobs explain``: each recent and upcoming fire time with its fate, from the records."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from scheduling import explain, services
from scheduling.models import BeatHeartbeat, Job, JobChange, JobExecution, SentFireTime
from tests.factories import make_job

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 12, 1, 8, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def record(job: Job, seconds: float, status: str, **fields) -> JobExecution:
    return JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="schedule",
        status=status,
        scheduled_at=at(seconds),
        started_at=at(seconds),
        finished_at=at(seconds) if status != "running" else None,
        **fields,
    )


@pytest.fixture
def job():
    job = make_job(trigger_type="interval", interval_every=10, interval_period="seconds")
    Job.objects.filter(pk=job.pk).update(schedule_anchor=T0, next_run_at=at(90), dispatch_at=at(90))
    job.refresh_from_db()
    return job


def fates(report, key="recent"):
    return [(f["scheduled_at"], f["fate"], f["status"]) for f in report[key]]


def test_every_recent_fire_time_is_explained_from_what_is_on_record(job):
    record(job, 10, "success")
    record(job, 20, "failure", exception="ValueError: bad input\nTraceback...", attempt=0)
    record(job, 20, "success", attempt=1)
    record(job, 30, "missed", reason="Started 40.0s late, past its misfire grace of 15s.")
    record(job, 40, "skipped", reason="3 runs were still running (max instances 3).")
    record(job, 70, "running")
    SentFireTime.objects.create(job=job, scheduled_at=at(80), check_after=at(120))
    JobChange.objects.create(
        job=job,
        job_name=job.name,
        action="paused",
        source="admin",
        actor="alice",
        at=at(45),
        changes={"enabled": [True, False], "pause_reason": ["", "disk full"]},
    )
    JobChange.objects.create(
        job=job,
        job_name=job.name,
        action="resumed",
        source="admin",
        actor="alice",
        at=at(65),
        changes={"enabled": [False, True]},
    )
    BeatHeartbeat.objects.create(name="host:1", started_at=T0, last_tick_at=at(85))

    report = explain.job_explain(job=job, recent=20, upcoming=2, since=T0, now=at(105))
    by_time = {f["scheduled_at"]: f for f in report["recent"]}
    assert fates(report) == [
        (at(10).isoformat(), "ran", "success"),
        (at(20).isoformat(), "ran", "success"),  # its last attempt
        (at(30).isoformat(), "missed", "missed"),
        (at(40).isoformat(), "skipped", "skipped"),
        (at(50).isoformat(), "paused", None),
        (at(60).isoformat(), "paused", None),
        (at(70).isoformat(), "running", "running"),
        (at(80).isoformat(), "sent", None),
        (at(90).isoformat(), "not_sent", None),
        (at(100).isoformat(), "not_sent", None),
    ]
    assert by_time[at(20).isoformat()]["detail"] == "attempt 2"
    assert "past its misfire grace" in by_time[at(30).isoformat()]["detail"]
    assert "max instances" in by_time[at(40).isoformat()]["detail"]
    assert by_time[at(50).isoformat()]["detail"] == "Paused by alice: disk full"
    assert "no worker has started it" in by_time[at(80).isoformat()]["detail"]
    assert "host:1" in by_time[at(90).isoformat()]["detail"]
    assert [f["scheduled_at"] for f in report["upcoming"]] == [
        at(110).isoformat(),
        at(120).isoformat(),
    ]


def test_a_fire_time_with_no_record_says_so(job):
    Job.objects.filter(pk=job.pk).update(next_run_at=at(1000))
    job.refresh_from_db()
    record(job, 20, "success")
    report = explain.job_explain(job=job, recent=3, upcoming=0, since=T0, now=at(35))
    assert fates(report) == [
        (at(10).isoformat(), "no_record", None),
        (at(20).isoformat(), "ran", "success"),
        (at(30).isoformat(), "no_record", None),
    ]


def test_a_paused_job_has_no_upcoming_fire_times_until_its_resume_time(job):
    services.job_pause(job=job, reason="maintenance", until=timezone.now() + dt.timedelta(hours=1))
    job.refresh_from_db()
    report = explain.job_explain(job=job, upcoming=2)
    assert "maintenance" in report["paused"] and "resumes at" in report["paused"]
    upcoming = report["upcoming"]
    assert len(upcoming) == 2
    assert all(dt.datetime.fromisoformat(f["scheduled_at"]) > job.resume_at for f in upcoming)
    assert "After the resume at" in upcoming[0]["detail"]
    services.job_update(job=job, enabled=True)
    services.job_pause(job=job, reason="for good")
    job.refresh_from_db()
    assert explain.job_explain(job=job)["upcoming"] == []


def test_command_explain_prints_json_and_refuses_bad_input():
    job = make_job(trigger_type="interval", interval_every=10, interval_period="seconds")
    anchor = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=25)
    first = anchor + dt.timedelta(seconds=10)
    Job.objects.filter(pk=job.pk).update(
        schedule_anchor=anchor, next_run_at=first + dt.timedelta(seconds=10)
    )
    run = JobExecution.objects.create(
        job=job,
        job_name=job.name,
        task=job.task,
        trigger="schedule",
        status="success",
        scheduled_at=first,
        started_at=first,
        finished_at=first,
    )
    out = StringIO()
    call_command("jobs", "explain", job.name, "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["job"] == job.name
    assert report["recent"][0] == {
        "scheduled_at": first.isoformat(),
        "fate": "ran",
        "detail": "",
        "status": "success",
        "execution_id": run.pk,
    }
    assert report["recent"][1]["fate"] == "not_sent"
    with pytest.raises(CommandError, match="--since 'yesterday' is not a date-time"):
        call_command("jobs", "explain", job.name, "--since", "yesterday")
    with pytest.raises(CommandError, match="--recent must be at least 1"):
        call_command("jobs", "explain", job.name, "--recent", "0")


def test_the_job_page_shows_each_fire_times_fate(admin_client, job):
    from django.urls import reverse

    record(job, 10, "missed", reason="Started 40.0s late, past its misfire grace of 15s.")
    Job.objects.filter(pk=job.pk).update(schedule_anchor=timezone.now() - dt.timedelta(seconds=15))
    page = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk]))
    assert page.status_code == 200
    content = page.content.decode()
    assert "Why did (or didn&#x27;t) it run?" in content
    assert 'class="fate-due"' in content
    assert 'class="fate-missed"' in content and "past its misfire grace" in content


def test_waiting_and_stopped_runs_are_told_apart(job):
    record(job, 10, "waiting", reason="Waiting for a free slot: 1 run(s) still going")
    record(job, 20, "cancelled", reason="Cancelled by alice: wrong day")
    report = explain.job_explain(job=job, recent=2, upcoming=0, since=T0, now=at(25))
    assert fates(report) == [
        (at(10).isoformat(), "waiting", "waiting"),
        (at(20).isoformat(), "stopped", "cancelled"),
    ]
    assert report["recent"][1]["detail"] == "Cancelled by alice: wrong day"


def test_a_fire_time_inside_an_outage_summary_is_missed_with_the_summary(job):
    record(
        job,
        10,
        "missed",
        reason="Not sent: beat was down.",
        missed_until=at(40),
        missed_count=4,
    )
    report = explain.job_explain(job=job, recent=5, upcoming=0, since=T0, now=at(45))
    assert [f["fate"] for f in report["recent"]] == ["missed"] * 4
    assert "one of 4 fire times missed" in report["recent"][2]["detail"]
