"""Fixtures of the end-to-end tests: real beat, worker and Flower processes."""

import pytest

from project.celery import app
from tests.e2e.processes import CeleryProcesses, reset_broker_connections


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
