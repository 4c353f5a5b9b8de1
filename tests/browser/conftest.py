"""Browser tests: their marker, and the real processes of the end-to-end tests."""

from tests.e2e.conftest import celery_processes  # noqa: F401


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives headless Chromium")
