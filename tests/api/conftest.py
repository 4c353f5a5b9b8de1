"""Fixtures of the API tests: a client and keys with the privileges a test names."""

import pytest
from rest_framework.test import APIClient

from scheduling import services

ALL = ["read", "run", "pause", "edit"]


@pytest.fixture
def client_for(db):
    """``client_for(privileges, jobs="*")``: a client sending a new key of those privileges."""

    def make(privileges=ALL, jobs="*", name=None, **options):
        key, raw = services.api_key_create(
            name=name or f"key-{'-'.join(privileges)}-{jobs}",
            privileges=privileges,
            jobs=jobs,
            **options,
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        client.key = key
        client.raw = raw
        return client

    return make


@pytest.fixture
def api(client_for):
    """A client with a key that may do everything."""
    return client_for(ALL, name="pipeline")
