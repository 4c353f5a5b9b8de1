"""Run control through the API: run now with overrides, re-run, backfill (with a dry run)
and its cancel, through the same services as the admin and ``manage.py jobs``."""

import datetime as dt

import pytest

from scheduling import services
from scheduling.models import Backfill, JobChange, JobExecution, RunOverride
from tests.factories import make_job, make_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    messages = []
    monkeypatch.setattr(services, "job_dispatch", lambda **kw: messages.append(kw) or kw["task_id"])
    return messages


def test_run_now_with_kwargs_and_a_logical_time(api, sent, django_capture_on_commit_callbacks):
    make_job(name="nightly", kwargs={"days": 7, "region": "eu"}, timezone="Asia/Shanghai")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/jobs/nightly/run/",
            {"kwargs": {"days": 1}, "logical_at": "2026-11-30 02:00:00"},
            format="json",
        )
    assert response.status_code == 202, response.json()
    task_id = response.json()["task_id"]
    assert RunOverride.objects.get(task_id=task_id).kwargs == {"days": 1, "region": "eu"}
    assert sent[0]["scheduled_at"] == dt.datetime(2026, 11, 29, 18, 0, tzinfo=dt.UTC)


def test_run_now_overrides_are_validated_naming_the_field(api, sent):
    make_job(name="nightly")
    bad = api.post("/api/v1/jobs/nightly/run/", {"kwargs": [1, 2]}, format="json")
    assert bad.status_code == 400 and "kwargs" in bad.json(), bad.json()
    bad = api.post("/api/v1/jobs/nightly/run/", {"logical_at": "yesterday"}, format="json")
    assert bad.status_code == 400 and "logical_at" in bad.json(), bad.json()
    assert sent == []


def test_a_run_only_key_cannot_keep_a_secret_while_pointing_the_run_elsewhere(client_for, sent):
    make_job(name="hook", kwargs={"url": "https://a.example", "api_token": "s3cret"})
    runner = client_for(["read", "run"])
    response = runner.post(
        "/api/v1/jobs/hook/run/", {"kwargs": {"url": "https://evil.example"}}, format="json"
    )
    assert response.status_code == 400 and "kwargs" in response.json(), response.json()
    editor = client_for(["read", "run", "edit"])
    response = editor.post(
        "/api/v1/jobs/hook/run/", {"kwargs": {"url": "https://b.example"}}, format="json"
    )
    assert response.status_code == 202, response.json()


def test_rerun_a_past_run(api, sent, django_capture_on_commit_callbacks):
    job = make_job(name="nightly")
    fire = dt.datetime(2026, 11, 1, 2, tzinfo=dt.UTC)
    original = make_record(job, "failure", fire)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/executions/{original.pk}/rerun/", format="json")
    assert response.status_code == 202, response.json()
    assert sent[0]["trigger"] == "rerun" and sent[0]["scheduled_at"] == fire
    assert sent[0]["parent_id"] == original.pk
    assert JobChange.objects.filter(job_name="nightly", actor="pipeline").exists()


def test_rerun_of_a_run_still_going_is_refused(api, sent):
    job = make_job(name="nightly")
    running = JobExecution.objects.create(
        job=job, job_name=job.name, task=job.task, trigger="schedule", status="running",
        scheduled_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), started_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    response = api.post(f"/api/v1/executions/{running.pk}/rerun/", format="json")
    assert response.status_code == 400 and "execution" in response.json(), response.json()


def test_backfill_dry_run_then_start_then_cancel(api, sent):
    make_job(name="daily", cron_expression="0 0 3 * * *", timezone="Europe/Berlin")
    body = {"start": "2025-10-22 00:00:00", "end": "2025-10-29 00:00:00", "dry_run": True}
    plan = api.post("/api/v1/jobs/daily/backfill/", body, format="json")
    assert plan.status_code == 200, plan.json()
    times = [run["scheduled_at"] for run in plan.json()["runs"]]
    # One run a day across the end of summer time (26 October 2025).
    assert times[0] == "2025-10-22T03:00:00+02:00" and times[-1] == "2025-10-28T03:00:00+01:00"
    assert len(times) == 7 and all(run["existing"] is None for run in plan.json()["runs"])
    assert Backfill.objects.count() == 0
    started = api.post("/api/v1/jobs/daily/backfill/", {**body, "dry_run": False}, format="json")
    assert started.status_code == 202, started.json()
    backfill_id = started.json()["id"]
    assert api.get(f"/api/v1/backfills/{backfill_id}/").json()["state"] == "running"
    cancelled = api.post(f"/api/v1/backfills/{backfill_id}/cancel/", format="json")
    assert cancelled.status_code == 200, cancelled.json()
    assert cancelled.json()["state"] == "cancelled"


def test_backfill_bad_input_names_the_field(api, client_for):
    make_job(name="daily")
    bad = api.post("/api/v1/jobs/daily/backfill/", {"start": "2025-10-22 00:00:00"}, format="json")
    assert bad.status_code == 400 and "end" in bad.json()
    bad = api.post(
        "/api/v1/jobs/daily/backfill/",
        {"start": "2025-10-22 00:00:00", "end": "2025-10-23 00:00:00", "timezone": "Mars/Base"},
        format="json",
    )
    assert bad.status_code == 400 and "timezone" in bad.json()
    reader = client_for(["read"])
    denied = reader.post(
        "/api/v1/jobs/daily/backfill/",
        {"start": "2025-10-22 00:00:00", "end": "2025-10-23 00:00:00", "dry_run": True},
        format="json",
    )
    assert denied.status_code == 403


def test_a_malformed_backfill_id_is_a_json_404_and_options_no_server_error(api):
    for path in ("/api/v1/backfills/%C3%AA/", "/api/v1/backfills/%C3%AA/cancel/"):
        answer = api.get(path) if path.endswith("s/%C3%AA/") else api.post(path, format="json")
        assert answer.status_code == 404 and answer["Content-Type"] == "application/json"
    assert api.options("/api/v1/backfills/0/cancel/").status_code in (404, 405)
