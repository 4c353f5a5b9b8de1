"""Shared fixtures: users for the admin and real Celery processes for end-to-end tests."""

import os

import pytest

from project.celery import app
from tests.e2e.processes import CeleryProcesses, reset_broker_connections

# Test-only job tasks: registered here, and in the beat and worker processes the tests start.
os.environ["SCHEDULING_EXTRA_JOB_MODULES"] = "tests.jobs"
import tests.jobs  # noqa: F401


@pytest.fixture
def celery_processes(transactional_db, tmp_path):
    """Beat and workers as real processes on the test database; stopped after the test.

    Depends on ``transactional_db`` so the rows a test writes are committed and visible to
    the processes, and so the processes stop before the tables are flushed.
    """
    reset_broker_connections()  # a previous test may have restarted the broker
    app.control.purge()
    processes = CeleryProcesses(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
def admin_client_logged_in(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def _default_language(settings):
    """A request with Accept-Language activates a language for the thread: reset it."""
    from django.utils import translation

    yield
    translation.activate(settings.LANGUAGE_CODE)
