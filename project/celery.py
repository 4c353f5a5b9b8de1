"""The Celery app, configured from Django settings (Celery's "First steps with Django")."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# scheduling.messages.AMQP: Flower keeps showing a run under its job's task name.
app = Celery("project", amqp="scheduling.messages:AMQP")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
