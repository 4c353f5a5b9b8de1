"""A key with a job glob may not put a job of its own into a group it does not reach."""

import pytest

from scheduling.models import Job, JobGroup
from tests.factories import make_job

pytestmark = pytest.mark.django_db

NEW = {"name": "reports.hourly", "task": "demo.echo", "cron_expression": "0 0 * * * *"}


# The group API refuses a key a group unless every job of it is inside the key's
# glob ("a group's settings and pause act on all its jobs"), yet the job API lets the same
# key create (or move) a job of its own into such a group: the job then takes the group's
# capped slots (the other team's runs are skipped "group etl is full"), goes to the
# group's queue and alerts the group's recipients, and the group's own key (etl.*) no
# longer reaches its group.
def test_a_key_cannot_put_its_job_into_a_group_it_does_not_reach(client_for):
    JobGroup.objects.create(name="etl", max_instances=1, queue="etl-q", alert_emails="etl@x.org")
    make_job(name="etl.load", group="etl")
    make_job(name="reports.daily", group="reports")
    etl = client_for(["read", "pause", "edit"], jobs="etl.*")
    assert etl.get("/api/v1/groups/etl/").status_code == 200
    reports = client_for(["read", "pause", "edit"], jobs="reports.*")
    assert reports.get("/api/v1/groups/etl/").status_code == 403

    created = reports.post("/api/v1/jobs/", {**NEW, "group": "etl"}, format="json")
    moved = reports.patch("/api/v1/jobs/reports.daily/", {"group": "etl"}, format="json")

    assert created.status_code == 403, created.json()
    assert moved.status_code == 403, moved.json()
    assert not Job.objects.filter(name=NEW["name"]).exists()
    assert Job.objects.get(name="reports.daily").group == "reports"
    assert etl.get("/api/v1/groups/etl/").status_code == 200


def test_a_key_may_put_its_job_into_a_group_that_is_only_a_label(client_for):
    make_job(name="etl.load")  # the default group, no settings on record
    reports = client_for(["read", "edit"], jobs="reports.*")
    assert reports.post("/api/v1/jobs/", NEW, format="json").status_code == 201
    assert Job.objects.get(name=NEW["name"]).group == "default"
    JobGroup.objects.create(name="mine", queue="q")
    moved = reports.patch(f"/api/v1/jobs/{NEW['name']}/", {"group": "mine"}, format="json")
    assert moved.status_code == 200  # a group on record with none of the others' jobs
