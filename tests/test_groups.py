"""Job groups as a whole: pause every job of a group, resume the ones its pause paused."""

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
