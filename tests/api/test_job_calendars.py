"""A job's exclusion calendars through the API, as the admin, the commands and the import
know them: read, set (by name) and refused when unknown (nothing saved)."""

import pytest

from scheduling import calendar_services
from scheduling.models import Job
from tests.factories import make_job

pytestmark = pytest.mark.django_db

NEW = {"name": "nightly", "task": "demo.echo", "cron_expression": "0 0 2 * * *"}


@pytest.fixture
def holidays():
    return calendar_services.calendar_add(
        name="holidays", rules=calendar_services.rules_parse(dates=["2026-12-25"])
    )


def test_a_job_is_created_and_updated_with_its_calendars_and_shows_them(api, holidays):
    created = api.post("/api/v1/jobs/", {**NEW, "calendars": ["holidays"]}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["calendars"] == ["holidays"]
    job = Job.objects.get(name="nightly")
    assert list(job.calendars.values_list("name", flat=True)) == ["holidays"]
    assert job.has_calendars
    assert api.get("/api/v1/jobs/nightly/").json()["calendars"] == ["holidays"]
    cleared = api.patch("/api/v1/jobs/nightly/", {"calendars": []}, format="json")
    assert cleared.status_code == 200, cleared.json()
    assert cleared.json()["calendars"] == []
    assert not job.calendars.exists()


def test_an_unknown_calendar_is_a_400_naming_it_and_nothing_is_saved(api, holidays):
    response = api.post("/api/v1/jobs/", {**NEW, "calendars": ["nope"]}, format="json")
    assert response.status_code == 400
    assert "nope" in response.json()["calendars"][0]
    assert not Job.objects.filter(name="nightly").exists()
    job = make_job(max_retries=0)
    response = api.patch(
        f"/api/v1/jobs/{job.name}/", {"max_retries": 3, "calendars": ["nope"]}, format="json"
    )
    assert response.status_code == 400
    job.refresh_from_db()
    assert job.max_retries == 0
