"""Shared fixtures of every test: the test-only job tasks and a reset language."""

import pytest

# Registered in this process; the processes the end-to-end tests start import them
# through SCHEDULING_EXTRA_JOB_MODULES (tests/e2e/processes.py).
import tests.jobs  # noqa: F401


@pytest.fixture(autouse=True)
def _default_language(settings):
    """A request with Accept-Language activates a language for the thread: reset it."""
    from django.utils import translation

    yield
    translation.activate(settings.LANGUAGE_CODE)
