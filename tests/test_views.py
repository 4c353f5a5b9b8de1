"""Views outside the admin: the statistics endpoint."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from tests.factories import make_finished_run, make_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_statistics_endpoint_needs_staff_and_permission(django_user_model, admin_client):
    from django.test import Client

    client = Client()
    job = make_job(name="api-stats")
    make_finished_run(job, 2)
    url = reverse("scheduling-statistics")
    data = admin_client.get(url, {"window": "day", "job": "api-stats"}).json()
    assert data["jobs"][0]["runs"] == 1
    assert admin_client.get(url, {"window": "fortnight"}).status_code == 400
    assert client.get(url).status_code == 302  # to the login page
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(django_user_model.objects.get(pk=user.pk))
    assert client.get(url).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        {"since": "2026-11-01"},
        {"since": "2026-11-01T00:00:00"},
        {"since": "2026-11-01T00:00:00+08:00", "until": "2026-11-02"},
    ],
)
def test_statistics_refuse_a_date_without_a_timezone(admin_client, query):
    page = admin_client.get(reverse("scheduling-statistics"), query)
    assert page.status_code == 400
    error = page.json()["error"]
    name = "until" if "until" in query else "since"
    assert error.startswith(f"{name}:") and "timezone offset" in error


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"threshold": "fast"},
    ],
)
def test_statistics_answer_odd_input_with_400_naming_the_parameter(admin_client, query):
    page = admin_client.get(reverse("scheduling-statistics"), query)
    assert page.status_code == 400
    assert page.json()["error"].startswith(f"{next(iter(query))}:")
