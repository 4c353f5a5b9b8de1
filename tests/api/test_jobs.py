"""Jobs through the API: the same rules and messages as the admin, commands and import,
the version as conflict token, the actions, the audit trail naming the key."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from scheduling import services
from scheduling.models import Job, JobChange
from tests.factories import make_job, make_running

pytestmark = pytest.mark.django_db

NEW = {"name": "nightly", "task": "demo.echo", "cron_expression": "0 0 2 * * *"}


def test_create_read_update_delete(api):
    created = api.post("/api/v1/jobs/", {**NEW, "kwargs": {"days": 7}}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["name"] == "nightly"
    assert body["trigger_type"] == "cron"
    assert body["version"] == 1
    assert body["next_run_at"] is not None
    assert api.get("/api/v1/jobs/nightly/").json()["id"] == body["id"]
    assert api.get(f"/api/v1/jobs/{body['id']}/").json()["name"] == "nightly"
    changed = api.patch(
        "/api/v1/jobs/nightly/", {"max_retries": 2, "version": 1}, format="json"
    ).json()
    assert changed["max_retries"] == 2
    assert changed["version"] == 2
    assert api.delete("/api/v1/jobs/nightly/").status_code == 204
    assert not Job.objects.filter(name="nightly").exists()
    assert api.get("/api/v1/jobs/nightly/").status_code == 404


def test_minute_61_gets_a_400_naming_the_minute_field_as_the_services_do(api):
    response = api.post("/api/v1/jobs/", {**NEW, "cron_expression": "0 61 * * * *"}, format="json")
    assert response.status_code == 400
    message = response.json()["cron_expression"][0]
    assert "minute" in message
    with pytest.raises(ValidationError) as raised:
        services.job_register_cron(name="x", task="demo.echo", expression="0 61 * * * *")
    assert raised.value.message_dict["cron_expression"] == [message]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "not.registered"}, "task"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"max_instances": "many"}, "max_instances"),
        ({"args": {"a": 1}}, "args"),
        ({"trigger_type": "interval", "interval_every": 0}, "interval_every"),
        ({"trigger_type": "date"}, "run_at"),
        ({"trigger_type": "date", "run_at": "tomorrow"}, "run_at"),
        ({"soft_time_limit": 10, "time_limit": 5}, "time_limit"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"alert_webhooks": "ftp://x"}, "alert_webhooks"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_gets_a_400_naming_the_field(api, body, field):
    response = api.post("/api/v1/jobs/", {**NEW, **body}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Job.objects.exists()


def test_a_taken_name_gets_the_models_message(api):
    make_job(name="nightly")
    response = api.post("/api/v1/jobs/", NEW, format="json")
    assert response.status_code == 400
    assert response.json()["name"] == ["Job with this Name already exists."]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ("name=x", "application/x-www-form-urlencoded"),
        ('"text"', "application/json"),
    ],
)
def test_bad_bodies_get_4xx_never_500(api, body, content_type):
    response = api.generic("POST", "/api/v1/jobs/", body, content_type=content_type)
    assert 400 <= response.status_code < 500


def test_a_date_without_offset_is_read_in_the_jobs_timezone(api):
    body = {
        **NEW,
        "trigger_type": "date",
        "run_at": "2030-01-01 08:00:00",
        "timezone": "Europe/London",
    }
    job = api.post("/api/v1/jobs/", body, format="json").json()
    assert job["run_at"] == "2030-01-01T08:00:00+00:00"


def test_a_stale_version_gets_409_and_changes_nothing(api):
    make_job(name="nightly", max_retries=0)
    api.patch("/api/v1/jobs/nightly/", {"max_retries": 1, "version": 1}, format="json")
    stale = api.patch("/api/v1/jobs/nightly/", {"max_retries": 5, "version": 1}, format="json")
    assert stale.status_code == 409
    assert "version 2" in stale.json()["detail"]
    assert Job.objects.get(name="nightly").max_retries == 1


def test_put_needs_the_required_fields_and_keeps_the_version(api):
    make_job(name="nightly")
    job = api.get("/api/v1/jobs/nightly/").json()
    assert api.put("/api/v1/jobs/nightly/", {"max_retries": 1}, format="json").status_code == 400
    job["description"] = "the nightly report"
    done = api.put("/api/v1/jobs/nightly/", job, format="json")
    assert done.status_code == 200, done.json()
    assert done.json()["description"] == "the nightly report"


def test_masked_secrets_sent_back_keep_the_stored_ones(api):
    make_job(name="nightly", kwargs={"token": "s3cret", "days": 1})
    job = api.get("/api/v1/jobs/nightly/").json()
    assert job["kwargs"]["token"] != "s3cret"
    api.patch("/api/v1/jobs/nightly/", {"kwargs": job["kwargs"]}, format="json")
    assert Job.objects.get(name="nightly").kwargs == {"token": "s3cret", "days": 1}


def test_list_filters_and_pagination(api):
    make_job(name="a", group="reports")
    make_job(name="b", group="reports", enabled=False)
    make_job(name="c", trigger_type="interval", interval_every=5, interval_period="minutes")
    make_job(name="d", description="the billing close")

    def names(query):
        response = api.get(f"/api/v1/jobs/{query}")
        assert response.status_code == 200, response.json()
        return [job["name"] for job in response.json()["results"]]

    assert names("?group=reports") == ["a", "b"]
    assert names("?group=reports&enabled=false") == ["b"]
    assert names("?trigger_type=interval") == ["c"]
    assert names("?search=billing") == ["d"]
    page = api.get("/api/v1/jobs/?page_size=2&page=2").json()
    assert page["count"] == 4
    assert [job["name"] for job in page["results"]] == ["c", "d"]
    assert api.get("/api/v1/jobs/?enabled=perhaps").status_code == 400
    assert api.get("/api/v1/jobs/?page=99").status_code == 404


def test_pause_and_resume(api):
    make_job(name="nightly")
    paused = api.post(
        "/api/v1/jobs/nightly/pause/",
        {"reason": "upstream down", "resume_at": "2099-12-24 06:00:00"},
        format="json",
    ).json()
    assert paused["enabled"] is False
    assert paused["pause_reason"] == "upstream down"
    assert paused["paused_by"] == "pipeline"
    resume_at = dt.datetime.fromisoformat(paused["resume_at"])
    assert resume_at == dt.datetime(2099, 12, 23, 22, tzinfo=dt.UTC)  # read in Asia/Shanghai
    past = api.post(
        "/api/v1/jobs/nightly/pause/", {"resume_at": "2000-01-01T00:00:00Z"}, format="json"
    )
    assert past.status_code == 400
    assert "resume_at" in past.json()
    resumed = api.post("/api/v1/jobs/nightly/resume/", format="json").json()
    assert resumed["enabled"] is True
    assert resumed["next_run_at"] is not None


def test_enabling_through_an_update_needs_the_pause_privilege(client_for):
    make_job(name="nightly", enabled=False)
    editor = client_for(["read", "edit"])
    assert (
        editor.patch("/api/v1/jobs/nightly/", {"enabled": True}, format="json").status_code == 403
    )
    assert (
        editor.patch("/api/v1/jobs/nightly/", {"max_retries": 1}, format="json").status_code == 200
    )


def test_run_now(api, monkeypatch, django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(services, "job_dispatch", lambda **kw: sent.append(kw) or kw["task_id"])
    make_job(name="nightly")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/jobs/nightly/run/", {"overlap": "allow_all"}, format="json")
    assert response.status_code == 202
    assert sent and sent[0]["task_id"] == response.json()["task_id"]
    assert sent[0]["overlap"] == "allow_all"
    bad = api.post("/api/v1/jobs/nightly/run/", {"overlap": "never"}, format="json")
    assert bad.status_code == 400 and "overlap" in bad.json()


def test_cancel_a_run(api):
    job = make_job(name="nightly")
    run = make_running(job)
    response = api.post(
        f"/api/v1/executions/{run.pk}/cancel/", {"reason": "wrong day"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "cancelling"
    assert response.json()["cancelled_by"] == "pipeline"
    again = api.post(f"/api/v1/executions/{run.pk}/cancel/", {}, format="json")
    assert again.status_code == 200


def test_every_change_is_in_the_audit_trail_with_the_keys_name(api, monkeypatch):
    monkeypatch.setattr(services, "job_dispatch", lambda **kw: kw["task_id"])
    api.post("/api/v1/jobs/", NEW, format="json")
    api.patch("/api/v1/jobs/nightly/", {"max_retries": 3}, format="json")
    api.post("/api/v1/jobs/nightly/pause/", {"reason": "x"}, format="json")
    api.post("/api/v1/jobs/nightly/resume/", format="json")
    run = make_running(Job.objects.get(name="nightly"))
    api.post(f"/api/v1/executions/{run.pk}/cancel/", {}, format="json")
    api.delete("/api/v1/jobs/nightly/")
    changes = list(JobChange.objects.filter(job_name="nightly").order_by("at", "pk"))
    assert [c.action for c in changes] == [
        "added",
        "changed",
        "paused",
        "resumed",
        "cancel run",
        "removed",
    ]
    assert {(c.source, c.actor) for c in changes} == {("api", "pipeline")}


def test_upcoming_statistics_and_health(api):
    make_job(name="nightly")
    upcoming = api.get("/api/v1/jobs/nightly/upcoming/?count=3").json()
    assert len(upcoming["upcoming"]) == 3
    listed = api.get("/api/v1/upcoming/").json()
    assert [row["name"] for row in listed] == ["nightly"]
    stats = api.get("/api/v1/statistics/?window=week").json()
    assert [row["job"] for row in stats["jobs"]] == ["nightly"]
    assert api.get("/api/v1/statistics/?window=year").status_code == 400
    health = api.get("/api/v1/health/").json()
    assert {c["check"] for c in health["checks"]} == {"database", "broker", "workers", "beat"}
    assert health["checks"][0]["ok"] is True


def test_schema_and_docs_are_served_here():
    from rest_framework.test import APIClient

    client = APIClient()
    schema = client.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/jobs/{job}/pause/" in paths
    docs = client.get("/api/v1/docs/").content.decode()
    assert "swagger-ui" in docs
    assert "cdn" not in docs.lower()


def test_a_nul_in_the_path_or_the_key_is_a_4xx(api):
    assert api.get("/api/v1/jobs/a%00b/").status_code == 404
    assert api.get("/api/v1/jobs/a%00b/upcoming/").status_code == 404
    assert api.get("/api/v1/executions/1%00/").status_code == 404
    from rest_framework.test import APIClient

    assert (
        APIClient().get("/api/v1/jobs/", HTTP_AUTHORIZATION="Bearer sj_a\x00b_c").status_code == 401
    )


def test_a_jobs_chain_links_are_read_and_set_cycles_refused_naming_the_cycle(api):
    make_job(name="load")
    make_job(name="report")
    created = api.post(
        "/api/v1/jobs/",
        {**NEW, "then": [{"job": "load", "on": "success", "as": "rows"}]},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["then"] == [{"job": "load", "on": "success", "as": "rows"}]
    bad = api.patch(
        "/api/v1/jobs/nightly/", {"then": [{"job": "load", "on": "sometimes"}]}, format="json"
    )
    assert bad.status_code == 400 and "then" in bad.json(), bad.json()
    cycle = api.patch(
        "/api/v1/jobs/load/", {"then": [{"job": "nightly", "on": "always"}]}, format="json"
    )
    assert cycle.status_code == 400 and "then" in cycle.json(), cycle.json()
    assert "load -> nightly -> load" in str(
        cycle.json()["then"]
    ) or "nightly -> load -> nightly" in str(cycle.json()["then"])
    assert api.get("/api/v1/jobs/load/").json()["then"] == []
    cleared = api.patch("/api/v1/jobs/nightly/", {"then": []}, format="json")
    assert cleared.status_code == 200 and cleared.json()["then"] == []


def test_skip_next(api, client_for):
    job = make_job(name="nightly")
    due = job.next_run_at
    answer = api.post("/api/v1/jobs/nightly/skip-next/", format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert dt.datetime.fromisoformat(body["skipped"]) == due
    assert dt.datetime.fromisoformat(body["job"]["next_run_at"]) > due
    assert JobChange.objects.filter(job=job, source="api").exists()
    again = api.post("/api/v1/jobs/nightly/skip-next/", format="json")
    assert again.status_code == 400 and "already skips" in str(again.json())
    assert client_for(["read", "run"]).post("/api/v1/jobs/nightly/skip-next/").status_code == 403
    services.job_pause(job=Job.objects.get(pk=job.pk))
    make_job(name="idle", enabled=False)
    idle = api.post("/api/v1/jobs/idle/skip-next/", format="json")
    assert idle.status_code == 400 and "no next run" in str(idle.json())
