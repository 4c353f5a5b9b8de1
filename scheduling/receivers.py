"""Our own receivers of the job events: the audit trail, the alerts, pause on failure and
chains (the next jobs a finished run starts)."""

import logging

from django.dispatch import receiver

from scheduling import alerts, chain_services, services, signals
from scheduling.models import JobChange

logger = logging.getLogger(__name__)

ACTIONS = {
    signals.job_added: "added",
    signals.job_changed: "changed",
    signals.job_removed: "removed",
    signals.job_paused: "paused",
    signals.job_resumed: "resumed",
    signals.job_stopped: "stopped",
    signals.job_finished: "finished",
    signals.run_cancel_requested: "cancel run",
    signals.run_terminate_requested: "terminate run",
    signals.run_dropped: "run dropped",
    signals.run_rerun_requested: "re-run",
    signals.backfill_started: "backfill",
    signals.backfill_cancelled: "cancel backfill",
}


def record_change(sender, *, signal, job, source, actor, changes, **kwargs) -> None:
    from django.utils import timezone

    JobChange.objects.create(
        job_id=None if signal is signals.job_removed else job.pk,
        job_name=job.name,
        action=ACTIONS[signal],
        source=source,
        actor=actor,
        at=timezone.now(),
        changes=changes,
    )


for _signal in ACTIONS:
    _signal.connect(
        record_change, dispatch_uid=f"scheduling.audit.{ACTIONS[_signal].replace(' ', '_')}"
    )


@receiver(signals.run_succeeded, dispatch_uid="scheduling.run.succeeded")
@receiver(signals.run_failed, dispatch_uid="scheduling.run.failed")
@receiver(signals.run_missed, dispatch_uid="scheduling.run.missed")
@receiver(signals.run_skipped, dispatch_uid="scheduling.run.skipped")
def on_run_finished(sender, *, execution, firing_alerts=None, retrying=False, **kwargs) -> None:
    alerts.on_run(execution, firing=firing_alerts)
    if execution.job_id is not None and execution.job.pause_after_failures is not None:
        services.job_track_failures(execution=execution, retrying=retrying)


@receiver(signals.run_succeeded, dispatch_uid="scheduling.chain.succeeded")
@receiver(signals.run_failed, dispatch_uid="scheduling.chain.failed")
def on_run_ended(sender, *, execution, retrying=False, **kwargs) -> None:
    """Start the next jobs of a chain: once per finished run, after its last attempt
    (the event is sent once the run's record has committed). Its own receiver, so an
    alert that cannot be sent does not stop a chain."""
    chain_services.chain_start(execution=execution, retrying=retrying)


@receiver(signals.job_resumed, dispatch_uid="scheduling.job.resumed")
def on_job_resumed(sender, *, job, **kwargs) -> None:
    alerts.pause_resolve(job=job)
