"""The alert delivery task, on its own ``alerts`` queue; the logic lives in ``deliveries``.

Imported when the app is ready (``SchedulingConfig.ready``), so every worker knows it;
``CELERY_TASK_ROUTES`` sends it to the ``alerts`` queue.
"""

from celery import shared_task

from scheduling import conf, deliveries


# acks_late: a worker that dies mid-delivery leaves the message to be delivered again (a
# receiver may then get an alert twice, never zero times). The time limits bound one
# attempt whatever a receiver does (e.g. answering one byte at a time); the retries and the
# overall deadline are counted by deliveries.alert_deliver.
@shared_task(
    name="scheduling.deliver_alert",
    bind=True,
    max_retries=None,
    acks_late=True,
    ignore_result=True,
    soft_time_limit=max(30, conf.get("WEBHOOK_TIMEOUT") * 6),
    time_limit=max(40, conf.get("WEBHOOK_TIMEOUT") * 6 + 10),
)
def deliver_alert(self, alert_id: int) -> None:
    """One attempt at every recipient of the alert not reached yet; retry later if needed."""
    countdown = deliveries.alert_deliver(alert_id=alert_id, attempt=self.request.retries)
    if countdown is not None:
        raise self.retry(countdown=countdown)
