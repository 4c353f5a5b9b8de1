"""System checks (scheduling.checks)."""

from django.core.management import call_command

from scheduling.checks import SCHEDULER, check_beat_scheduler


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
