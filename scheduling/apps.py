"""App config: fills the task registry when Django starts (web, beat and workers alike)."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SchedulingConfig(AppConfig):
    """The scheduling app."""

    name = "scheduling"
    verbose_name = _("Scheduled jobs")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # alert_tasks: the delivery task lives outside tasks.py; importing it registers it.
        from scheduling import alert_tasks, checks, receivers, registry  # noqa: F401

        registry.autodiscover()
