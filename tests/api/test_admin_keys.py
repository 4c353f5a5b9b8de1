"""API keys in the admin: the new key is shown once, works, and can be revoked."""

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from scheduling.models import ApiKey, JobChange

pytestmark = pytest.mark.django_db

ADD = "/admin/scheduling/apikey/add/"


def test_creating_a_key_shows_it_once_and_it_works(admin_client):
    page = admin_client.post(ADD, {"name": "deploy", "privileges": ["read", "run"], "jobs": "*"})
    assert page.status_code == 200
    raw = page.context["raw"]
    assert raw in page.content.decode()
    key = ApiKey.objects.get(name="deploy")
    assert key.privileges == ["read", "run"] and key.created_by == "admin"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/jobs/").status_code == 200
    change = admin_client.get(f"/admin/scheduling/apikey/{key.pk}/change/").content.decode()
    assert raw not in change and key.prefix in change
    assert raw not in admin_client.get("/admin/scheduling/apikey/").content.decode()
    admin_client.post(
        "/admin/scheduling/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]}
    )
    assert client.get("/api/v1/jobs/").status_code == 401
    assert not JobChange.objects.exists()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "k", "privileges": ["root"], "jobs": "*"}, "privileges"),
        ({"name": "k", "privileges": ["read"], "jobs": "[a]"}, "jobs"),
        (
            {
                "name": "k",
                "privileges": ["read"],
                "jobs": "*",
                "expires_at_0": (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%d"),
                "expires_at_1": "00:00:00",
            },
            "expires_at",
        ),
    ],
)
def test_bad_keys_are_refused_in_the_form(admin_client, data, field):
    page = admin_client.post(ADD, data)
    assert page.status_code == 200
    assert field in page.context["adminform"].form.errors
    assert not ApiKey.objects.exists()
