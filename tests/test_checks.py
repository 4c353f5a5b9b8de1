"""System checks (scheduling.checks)."""

from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.db import connection

from scheduling.checks import SCHEDULER, check_beat_scheduler, check_isolation_level

postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL")


def test_the_project_passes_its_checks():
    assert check_beat_scheduler(None) == []
    call_command("check", fail_level="WARNING")


def test_another_beat_scheduler_is_a_warning_naming_the_setting(settings):
    settings.CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
    [warning] = check_beat_scheduler(None)
    assert warning.id == "scheduling.W001"
    assert "CELERY_BEAT_SCHEDULER" in warning.msg and SCHEDULER in warning.hint
    settings.CELERY_BEAT_SCHEDULER = "scheduling.scheduler.JobScheduler"  # dotted form works too
    assert check_beat_scheduler(None) == []


@contextmanager
def database_defaulting_to(level: str, *, pinned: bool):
    """The test database's default isolation set to ``level``; this process's connection
    with or without the project's session pin to READ COMMITTED."""
    name = connection.settings_dict["NAME"]
    options = connection.settings_dict["OPTIONS"]
    kept = options.get("options")
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER DATABASE {connection.ops.quote_name(name)} SET default_transaction_isolation = %s",
            [level],
        )
    if not pinned:
        options.pop("options", None)
    connection.close()
    try:
        yield
    finally:
        connection.close()
        if kept is not None:
            options["options"] = kept
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER DATABASE {connection.ops.quote_name(name)} RESET default_transaction_isolation"
            )
        connection.close()


def isolation() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW transaction_isolation")
        return cursor.fetchone()[0]


@postgresql
@pytest.mark.django_db(transaction=True)
def test_runs_are_read_committed_whatever_the_databases_default():
    with database_defaulting_to("repeatable read", pinned=True):
        assert isolation() == "read committed"
        assert check_isolation_level(None, databases=["default"]) == []
    with database_defaulting_to("repeatable read", pinned=False):
        assert isolation() == "repeatable read"
        [error] = check_isolation_level(None, databases=["default"])
        assert error.id == "scheduling.E002" and "repeatable read" in error.msg
