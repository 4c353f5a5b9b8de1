"""Job groups through the API: list, read, update the settings, pause and resume, under
the keys' privileges and job globs (a group only when every job of it is inside)."""

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from scheduling import group_services
from scheduling.models import Job, JobChange, JobGroup
from tests.factories import make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def reports():
    make_job(name="reports.daily", group="reports")
    make_job(name="reports.weekly", group="reports")
    make_job(name="etl.load", group="etl")
    return "reports"


def test_list_shows_every_group_with_its_jobs_and_settings(api, reports):
    JobGroup.objects.create(name="empty", queue="spare")
    body = api.get("/api/v1/groups/").json()
    assert body["count"] == 3
    rows = {row["name"]: row for row in body["results"]}
    assert set(rows) == {"empty", "etl", "reports"}
    assert rows["reports"] == {
        "name": "reports",
        "jobs": 2,
        "enabled": 2,
        "max_instances": None,
        "queue": "",
        "alert_emails": "",
        "alert_webhooks": "",
        "paused": False,
        "pause_reason": "",
        "paused_by": "",
        "paused_at": None,
    }
    assert rows["empty"]["queue"] == "spare" and rows["empty"]["jobs"] == 0


def test_read_and_update_a_group_through_the_group_service(api, reports):
    assert api.get("/api/v1/groups/reports/").json()["jobs"] == 2
    changed = api.patch(
        "/api/v1/groups/reports/",
        {"max_instances": 2, "queue": "reports", "alert_emails": "ops@example.com"},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["max_instances"], changed.json()["queue"]) == (2, "reports")
    group = JobGroup.objects.get(name="reports")
    assert group.alert_recipients == (["ops@example.com"], [])
    cleared = api.put("/api/v1/groups/reports/", {"max_instances": None}, format="json")
    assert cleared.status_code == 200, cleared.json()
    assert JobGroup.objects.get(name="reports").max_instances is None
    assert JobGroup.objects.get(name="reports").queue == "reports"  # not sent: kept


@pytest.mark.parametrize(
    "body, field",
    [
        ({"max_instances": 0}, "max_instances"),
        ({"max_instances": "many"}, "max_instances"),
        ({"queue": "bad queue!"}, "queue"),
        ({"alert_webhooks": "http://127.0.0.1/hook"}, "alert_webhooks"),
        ({"alert_emails": "a\x00b"}, "alert_emails"),
    ],
)
def test_a_bad_setting_is_a_400_naming_the_field_and_nothing_is_saved(api, reports, body, field):
    response = api.patch("/api/v1/groups/reports/", {"queue": "q", **body}, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not JobGroup.objects.filter(name="reports").exclude(queue="").exists()


def test_an_unknown_group_is_a_json_404(api):
    for response in (
        api.get("/api/v1/groups/nope/"),
        api.patch("/api/v1/groups/nope/", {"queue": "q"}, format="json"),
        api.post("/api/v1/groups/nope/pause/", {}, format="json"),
        api.get("/api/v1/groups/a%00b/"),
    ):
        assert response.status_code == 404
        assert "detail" in response.json()
    assert not JobGroup.objects.exists()


def test_pause_and_resume_a_group_naming_the_key(api, reports):
    paused = api.post("/api/v1/groups/reports/pause/", {"reason": "migration"}, format="json")
    assert paused.status_code == 200, paused.json()
    assert paused.json()["jobs"] == ["reports.daily", "reports.weekly"]
    assert paused.json()["group"]["paused"] is True
    assert paused.json()["group"]["paused_by"] == "pipeline"
    job = Job.objects.get(name="reports.daily")
    assert not job.enabled and job.pause_reason == "Group reports paused by pipeline: migration"
    entry = JobChange.objects.filter(job=job, action="paused").get()
    assert (entry.source, entry.actor) == ("api", "pipeline")
    again = api.post("/api/v1/groups/reports/pause/", {}, format="json")
    assert again.status_code == 400 and "paused already" in again.json()["group"][0]
    resumed = api.post("/api/v1/groups/reports/resume/", format="json")
    assert resumed.status_code == 200
    assert resumed.json()["jobs"] == ["reports.daily", "reports.weekly"]
    assert Job.objects.get(name="reports.daily").enabled
    not_paused = api.post("/api/v1/groups/reports/resume/", format="json")
    assert not_paused.status_code == 400 and "group" in not_paused.json()


def test_a_pause_reason_too_long_is_a_400_on_reason(api, reports):
    response = api.post("/api/v1/groups/reports/pause/", {"reason": "x" * 301}, format="json")
    assert response.status_code == 400
    assert "301" in response.json()["reason"][0]
    assert Job.objects.get(name="reports.daily").enabled
    assert not JobGroup.objects.filter(paused_at__isnull=False).exists()


def test_each_action_needs_its_privilege(client_for, reports):
    reader = client_for(["read"])
    assert reader.get("/api/v1/groups/reports/").status_code == 200
    assert reader.patch("/api/v1/groups/reports/", {"queue": "q"}, format="json").status_code == 403
    assert reader.post("/api/v1/groups/reports/pause/", {}, format="json").status_code == 403
    pauser = client_for(["read", "pause"])
    assert pauser.patch("/api/v1/groups/reports/", {"queue": "q"}, format="json").status_code == 403
    assert pauser.post("/api/v1/groups/reports/pause/", {}, format="json").status_code == 200
    editor = client_for(["read", "edit"])
    assert editor.post("/api/v1/groups/reports/resume/", {}, format="json").status_code == 403
    assert editor.patch("/api/v1/groups/reports/", {"queue": "q"}, format="json").status_code == 200
    assert editor.delete("/api/v1/groups/reports/").status_code == 405
    assert editor.post("/api/v1/groups/", {"name": "x"}, format="json").status_code == 405


def test_a_key_with_a_glob_reaches_a_group_only_when_every_job_of_it_is_inside(client_for, reports):
    make_job(name="other.daily", group="mixed")
    make_job(name="reports.mixed", group="mixed")
    JobGroup.objects.create(name="empty")
    key = client_for(["read", "pause", "edit"], jobs="reports.*")
    names = [row["name"] for row in key.get("/api/v1/groups/").json()["results"]]
    assert names == ["reports"]
    assert key.get("/api/v1/groups/reports/").status_code == 200
    for name in ("mixed", "etl", "empty"):
        refused = key.post(f"/api/v1/groups/{name}/pause/", {}, format="json")
        assert refused.status_code == 403
        assert "every job of it" in refused.json()["detail"]
        assert key.get(f"/api/v1/groups/{name}/").status_code == 403
        assert (
            key.patch(f"/api/v1/groups/{name}/", {"queue": "q"}, format="json").status_code == 403
        )
    assert Job.objects.get(name="reports.mixed").enabled
    assert key.post("/api/v1/groups/reports/pause/", {}, format="json").status_code == 200


def test_a_staff_session_works_under_its_django_permissions(reports):
    user = User.objects.create_user("alice", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "pause_job"]))
    client = APIClient()
    client.force_login(user)
    assert client.get("/api/v1/groups/").status_code == 200
    assert client.patch("/api/v1/groups/reports/", {"queue": "q"}, format="json").status_code == 403
    assert client.post("/api/v1/groups/reports/pause/", {}, format="json").status_code == 200
    assert JobGroup.objects.get(name="reports").paused_by == "alice"
    group_services.group_resume(name="reports")
