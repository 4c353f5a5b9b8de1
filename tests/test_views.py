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
