"""API keys: stored hashed, refused when wrong, expired or revoked (401), scoped by
privilege and job glob (403), last-used time, rate limit, staff sessions."""

import datetime as dt

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.test import APIClient

from scheduling import services
from scheduling.models import ApiKey
from tests.factories import make_job

pytestmark = pytest.mark.django_db


def test_the_key_is_stored_only_as_a_salted_hash(api):
    row = ApiKey.objects.get(name="pipeline")
    secret = api.raw.split("_", 2)[2]
    assert api.raw.startswith(f"sj_{row.prefix}_")
    assert secret not in (row.key_hash, row.salt)
    assert row.key_hash == ApiKey.hash_secret(salt=row.salt, secret=secret)
    other, _raw = services.api_key_create(name="other", privileges=["read"])
    assert other.salt != row.salt


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sj_nope_nope",
        "Bearer ",
        "Bearer sj_",
        "Bearer garbage-\u00e9\u4e2d",
        "bearer sj_000000000000_" + "x" * 43,
    ],
)
def test_a_wrong_key_gets_401(header):
    client = APIClient()
    response = client.get("/api/v1/jobs/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_no_key_and_no_session_gets_401():
    assert APIClient().get("/api/v1/jobs/").status_code == 401


def test_a_key_with_a_changed_secret_gets_401(api):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api.raw[:-1]}{'A' if api.raw[-1] != 'A' else 'B'}")
    assert api.get("/api/v1/jobs/").status_code == 401


def test_a_revoked_key_gets_401(api):
    assert api.get("/api/v1/jobs/").status_code == 200
    services.api_key_revoke(key=api.key)
    response = api.get("/api/v1/jobs/")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_an_expired_key_gets_401(client_for):
    client = client_for(["read"], expires_days=1)
    assert client.get("/api/v1/jobs/").status_code == 200
    ApiKey.objects.filter(pk=client.key.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    response = client.get("/api/v1/jobs/")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_a_key_without_the_privilege_gets_403(client_for):
    job = make_job(name="nightly")
    reader = client_for(["read"])
    response = reader.post(f"/api/v1/jobs/{job.name}/pause/", {"reason": "x"}, format="json")
    assert response.status_code == 403
    assert "pause" in response.json()["detail"]
    assert reader.post(f"/api/v1/jobs/{job.name}/run/", {}, format="json").status_code == 403
    assert reader.delete(f"/api/v1/jobs/{job.name}/").status_code == 403
    runner = client_for(["run"])
    assert runner.get("/api/v1/jobs/").status_code == 403


def test_a_key_reaches_only_the_jobs_of_its_glob(client_for):
    make_job(name="reports.daily")
    outside = make_job(name="billing.close")
    client = client_for(["read", "edit", "run"], jobs="reports.*")
    listed = [job["name"] for job in client.get("/api/v1/jobs/").json()["results"]]
    assert listed == ["reports.daily"]
    assert client.get(f"/api/v1/jobs/{outside.name}/").status_code == 403
    assert client.post(f"/api/v1/jobs/{outside.pk}/run/", {}, format="json").status_code == 403
    created = client.post(
        "/api/v1/jobs/",
        {"name": "billing.other", "task": "demo.echo", "cron_expression": "0 0 * * * *"},
        format="json",
    )
    assert created.status_code == 403
    renamed = client.patch("/api/v1/jobs/reports.daily/", {"name": "billing.x"}, format="json")
    assert renamed.status_code == 403


def test_the_glob_matches_in_the_database_as_in_python(client_for):
    for name in ("a.b", "axb", "a.bc", "A.b"):
        make_job(name=name)
    client = client_for(["read"], jobs="a?b*")
    listed = sorted(job["name"] for job in client.get("/api/v1/jobs/").json()["results"])
    assert listed == sorted(n for n in ("a.b", "axb", "a.bc", "A.b") if client.key.reaches(n))
    assert listed == ["a.b", "a.bc", "axb"]


def test_last_used_is_recorded(api):
    assert api.key.last_used_at is None
    api.get("/api/v1/jobs/")
    api.key.refresh_from_db()
    assert api.key.last_used_at is not None


def test_requests_over_the_rate_get_429(api, settings):
    settings.SCHEDULING = {**getattr(settings, "SCHEDULING", {}), "API_RATE": "3/minute"}
    from django.core.cache import cache

    cache.clear()
    codes = [api.get("/api/v1/jobs/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    cache.clear()


def test_bad_key_definitions_are_refused():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="privileges"):
        services.api_key_create(name="k", privileges=["read", "admin"])
    with pytest.raises(ValidationError, match="privileges"):
        services.api_key_create(name="k", privileges=[])
    with pytest.raises(ValidationError, match="jobs"):
        services.api_key_create(name="k", privileges=["read"], jobs="[ab]*")
    services.api_key_create(name="k", privileges=["read"])
    with pytest.raises(ValidationError, match="name"):
        services.api_key_create(name="k", privileges=["read"])
    assert ApiKey.objects.count() == 1


def _staff(*codenames):
    user = User.objects.create_user("alice", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def test_a_staff_session_works_under_its_django_permissions():
    make_job(name="nightly")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(_staff("view_job"))
    assert client.get("/api/v1/jobs/").status_code == 200
    response = client.post("/api/v1/jobs/nightly/pause/", {}, format="json")
    assert response.status_code == 403


def test_a_session_write_needs_the_csrf_token():
    make_job(name="nightly")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(_staff("view_job", "pause_job"))
    refused = client.post("/api/v1/jobs/nightly/pause/", {"reason": "x"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    client.get("/admin/")  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    done = client.post(
        "/api/v1/jobs/nightly/pause/", {"reason": "x"}, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert done.status_code == 200
    assert done.json()["paused_by"] == "alice"


def test_a_non_staff_session_gets_401():
    user = User.objects.create_user("bob", password="pw")
    user.user_permissions.add(*Permission.objects.filter(codename="view_job"))
    client = APIClient()
    client.force_login(user)
    assert client.get("/api/v1/jobs/").status_code == 401
