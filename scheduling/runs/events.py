"""The run events (:mod:`scheduling.signals`) a recorded run sends, once committed."""

from typing import Any

from django.db import transaction

from scheduling import signals
from scheduling.models import ExecutionStatus, JobExecution

#: The event sent for each status a run is recorded with.
STATUS_EVENTS = {
    ExecutionStatus.RUNNING: signals.run_started,
    ExecutionStatus.SUCCESS: signals.run_succeeded,
    ExecutionStatus.FAILURE: signals.run_failed,
    ExecutionStatus.TIMEOUT: signals.run_failed,
    ExecutionStatus.LOST: signals.run_failed,
    ExecutionStatus.MISSED: signals.run_missed,
    ExecutionStatus.SKIPPED: signals.run_skipped,
    ExecutionStatus.CANCELLED: signals.run_cancelled,
    ExecutionStatus.TERMINATED: signals.run_cancelled,
    ExecutionStatus.WAITING: signals.run_waiting,
}


def announce(execution: JobExecution, **extra: Any) -> None:
    """Send the event of ``execution``'s status once the transaction that wrote it
    commits (at once outside a transaction)."""
    signal = STATUS_EVENTS[execution.status]
    transaction.on_commit(
        lambda: signal.send_robust(sender=JobExecution, execution=execution, **extra)
    )
