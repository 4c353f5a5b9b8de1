"""Delivering an alert to its job's e-mail addresses and webhooks, outside the run.

:func:`alert_deliver_later` queues the ``scheduling.deliver_alert`` task (on the
``alerts`` queue, :mod:`scheduling.alert_tasks`) once the alert is committed; the run that
raised the alert never waits for a receiver. Each call of :func:`alert_deliver` is one
attempt at every recipient not reached yet, and every attempt is appended to the alert's
``deliveries`` (shown in the admin). The task tries again with exponential backoff until
each recipient is reached, refused for good, or the retries or the overall deadline run
out.
"""

import datetime as dt
import json
import logging
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from scheduling import conf, webhooks
from scheduling.models import Alert

logger = logging.getLogger(__name__)


def alert_deliver_later(*, alert: Alert) -> None:
    """Queue the delivery of ``alert`` once the current transaction commits."""

    def send() -> None:
        from scheduling.alert_tasks import deliver_alert

        try:
            deliver_alert.apply_async(kwargs={"alert_id": alert.pk})
        except Exception as exc:
            # The broker is away: say so on the alert rather than fail the caller (a run's
            # event, the dead man's switch).
            logger.exception("Could not queue the delivery of alert %s", alert.pk)
            _record(alert.pk, [{"channel": "queue", "ok": False, "error": repr(exc)}])

    transaction.on_commit(send)


def _recipients(alert: Alert) -> tuple[list[str], list[str]]:
    """The e-mail addresses and webhook URLs of the alert's job as they are now (its own,
    else its group's; an operator who fixes a broken URL while its delivery is retried
    is heard)."""
    from scheduling import selectors

    return selectors.job_alert_recipients(job=alert.job) if alert.job is not None else ([], [])


def _settled(deliveries: list[dict[str, Any]], channel: str, to: Any) -> bool:
    """Whether an earlier attempt reached ``to`` or refused it for good."""
    return any(
        d.get("channel") == channel and d.get("to") == to and (d.get("ok") or d.get("final"))
        for d in deliveries
    )


def _record(alert_id: int, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append ``attempts`` to the alert's deliveries (under its row lock) and return all."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(pk=alert_id).first()
        if alert is None:
            return attempts
        alert.deliveries = [*(alert.deliveries or []), *attempts]
        Alert.objects.filter(pk=alert_id).update(deliveries=alert.deliveries)
        return alert.deliveries


def _email(alert: Alert, emails: list[str]) -> dict[str, Any]:
    subject = f"[scheduled jobs] {alert.job_name}: {alert.get_kind_display()} {alert.state}"
    try:
        send_mail(subject, alert.message, settings.DEFAULT_FROM_EMAIL, emails)
    except Exception as exc:
        logger.warning("Alert e-mail for %s failed: %r", alert.job_name, exc)
        return {"ok": False, "error": repr(exc)}
    return {"ok": True}


def _webhook(alert: Alert, url: str, timeout: float) -> dict[str, Any]:
    from scheduling.alerts import payload

    body = json.dumps(payload(alert)).encode()
    try:
        status = webhooks.webhook_post(url=url, body=body, timeout=timeout)
    except webhooks.WebhookRefused as exc:
        logger.warning("Alert webhook for %s refused: %s", alert.job_name, exc)
        return {"ok": False, "final": True, "error": str(exc)}
    except Exception as exc:
        logger.warning("Alert webhook %s for %s failed: %r", url, alert.job_name, exc)
        return {"ok": False, "error": repr(exc)}
    if 200 <= status < 300:
        return {"ok": True, "status": status}
    if 300 <= status < 400:
        return {"ok": False, "final": True, "status": status, "error": _("redirect not followed")}
    # 408, 429 and server errors may pass; any other client error will not.
    final = 400 <= status < 500 and status not in (408, 429)
    return {"ok": False, "final": final, "status": status}


def retry_countdown(*, attempt: int) -> float:
    """Seconds before try ``attempt + 1``: the backoff doubling per attempt, capped."""
    return min(
        conf.get("WEBHOOK_RETRY_BACKOFF") * 2**attempt, conf.get("WEBHOOK_RETRY_BACKOFF_MAX")
    )


def alert_deliver(*, alert_id: int, attempt: int = 0) -> float | None:
    """Try every recipient of the alert not reached yet, once; record each attempt.

    Returns the seconds to wait before trying again, or ``None`` when nothing is left to
    try: every recipient reached or refused for good, ``WEBHOOK_RETRIES`` used up, or the
    next try would fall after the alert's ``WEBHOOK_DEADLINE``.
    """
    alert = Alert.objects.select_related("job").filter(pk=alert_id).first()
    if alert is None:
        return None
    deadline = alert.created_at + dt.timedelta(seconds=conf.get("WEBHOOK_DEADLINE"))
    emails, urls = _recipients(alert)
    done = alert.deliveries or []
    attempts: list[dict[str, Any]] = []

    def note(channel: str, to: Any, outcome: dict[str, Any]) -> None:
        at = timezone.now().isoformat()
        attempts.append({"channel": channel, "to": to, "attempt": attempt + 1, "at": at, **outcome})

    if emails and not _settled(done, "email", emails):
        note("email", emails, _email(alert, emails))
    for url in urls:
        if _settled(done, "webhook", url):
            continue
        remaining = (deadline - timezone.now()).total_seconds()
        if remaining <= 0:
            note("webhook", url, {"ok": False, "final": True, "error": _("deadline passed")})
            continue
        note("webhook", url, _webhook(alert, url, min(conf.get("WEBHOOK_TIMEOUT"), remaining)))
    if not attempts:
        return None
    _record(alert_id, attempts)
    pending = [a for a in attempts if not (a["ok"] or a.get("final"))]
    if not pending:
        return None
    countdown = retry_countdown(attempt=attempt)
    too_late = timezone.now() + dt.timedelta(seconds=countdown) > deadline
    if attempt >= conf.get("WEBHOOK_RETRIES") or too_late:
        logger.warning("Alert %s: giving up on %d recipient(s)", alert_id, len(pending))
        return None
    return countdown
