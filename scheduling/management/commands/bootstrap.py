"""Prepare a fresh installation: an admin login and a few demo jobs (idempotent)."""

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from scheduling import services
from scheduling.models import Job

DEMO_JOBS = [
    {
        "name": "demo: echo every 10 seconds",
        "task": "demo.echo",
        "trigger_type": "cron",
        "cron_expression": "*/10 * * * * *",
        "args": ["hello"],
        "group": "demo",
        "description": "Cron with seconds: fires at :00, :10, :20 ... of every minute.",
    },
    {
        "name": "demo: async sleep every 30 seconds",
        "task": "demo.async_sleep",
        "trigger_type": "interval",
        "interval_every": 30,
        "interval_period": "seconds",
        "kwargs": {"seconds": 0.5},
        "group": "demo",
        "description": "An async def task on a fixed interval.",
    },
    {
        "name": "demo: failing job every 5 minutes",
        "task": "demo.fail",
        "trigger_type": "cron",
        "cron_expression": "0 */5 * * * *",
        "group": "demo",
        "description": "Fails on purpose, so the admin shows a recorded traceback.",
    },
]


class Command(BaseCommand):
    """``manage.py bootstrap``: the admin login and the first jobs of a fresh install."""

    help = (
        "Create the admin login (user 'admin'; password from $ADMIN_PASSWORD or generated and "
        "kept in VAR_DIR/admin-password.txt) and the demo jobs. Safe to run again: existing "
        "users and jobs are left as they are.\n\nExample: ./manage.py bootstrap --no-demo"
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="Do not create demo jobs.")
        parser.add_argument(
            "--config",
            default=os.environ.get("SCHEDULING_CONFIG_FILE"),
            help="Import this job config file (default: $SCHEDULING_CONFIG_FILE). Without "
            "one, the default maintenance jobs are installed.",
        )

    def handle(self, *args, no_demo: bool = False, config: str | None = None, **options):
        password = self._admin_password()
        if config:
            call_command("jobs", "import", config, stdout=self.stdout, stderr=self.stderr)
        else:
            created = services.defaults_install()
            if created:
                self.stdout.write(f"Installed default jobs: {', '.join(created)}")
        if not no_demo:
            for spec in DEMO_JOBS:
                if not Job.objects.filter(name=spec["name"]).exists():
                    services.job_create(**spec)
                    self.stdout.write(f"Created demo job {spec['name']!r}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Admin: http://127.0.0.1:8000/admin/  user: admin  password: {password}"
            )
        )

    def _admin_password(self) -> str:
        path = settings.VAR_DIR / "admin-password.txt"
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is not None:
            return path.read_text().strip() if path.exists() else "(unchanged; set before)"
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "admin@localhost", password)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password
