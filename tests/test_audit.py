"""The audit trail: every change to a job, who made it and through what."""

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from scheduling import services
from scheduling.audit import audit_context
from scheduling.models import Job, JobChange
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_change_is_audited_with_who_how_and_what():
    job = make_job(name="audited", cron_expression="0 0 1 * * *")
    services.job_update(job=job, kwargs={"days": 7})
    with audit_context(source="admin", actor="alice"):
        services.job_pause(job=job)
    call_command("jobs", "resume", "audited", stdout=io.StringIO())
    services.config_import(
        data=[
            {
                "task_id": "audited",
                "task_func": "demo.echo",
                "trigger_type": "cron",
                "trigger_args": {"expression": "0 0 2 * * *"},
            }
        ]
    )
    services.job_remove(job=Job.objects.get(name="audited"))
    changes = list(JobChange.objects.filter(job_name="audited").order_by("at", "pk"))
    assert [(c.action, c.source) for c in changes] == [
        ("added", "api"),
        ("changed", "api"),
        ("paused", "admin"),
        ("resumed", "command"),
        ("changed", "import"),
        ("removed", "api"),
    ]
    assert changes[1].changes == {"kwargs": [{}, {"days": 7}]}
    assert changes[2].actor == "alice"
    assert changes[4].changes["cron_expression"] == ["0 0 1 * * *", "0 0 2 * * *"]
    assert changes[4].changes["kwargs"] == [{"days": 7}, {}]


def test_admin_edits_are_audited_and_shown_on_the_job(admin_client):
    job = make_job(name="edited")
    url = reverse("admin:scheduling_job_changelist")
    admin_client.post(url, {"action": "pause_jobs", "_selected_action": [job.pk], "apply": "1"})
    change = JobChange.objects.get(job=job, action="paused")
    assert (change.source, change.actor) == ("admin", "admin")
    page = admin_client.get(reverse("admin:scheduling_job_change", args=[job.pk]))
    assert "paused" in page.content.decode()
