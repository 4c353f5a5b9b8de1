"""Celery's message building, with the task-sent event naming a message as the worker does.

A run is sent as ``scheduling.run_job`` with the job's task name as its ``shadow``
(:func:`scheduling.services.message_display`). The worker's events (received, started,
succeeded, failed) carry the shadow name, but Celery's task-sent event carries the real
one; when it reaches Flower after the worker's events (they come from other processes,
over other connections), Flower's state merges it in and renames the run
``scheduling.run_job``. Selected in ``project/celery.py`` (``Celery(amqp=...)``).
"""

from celery.app import amqp


class AMQP(amqp.AMQP):
    """Celery's AMQP helper; a message's task-sent event names it by its shadow name."""

    def as_task_v2(self, task_id, name, *args, **kwargs):
        message = super().as_task_v2(task_id, name, *args, **kwargs)
        shadow = message.headers.get("shadow")
        if shadow and message.sent_event:
            message.sent_event["name"] = shadow
        return message
