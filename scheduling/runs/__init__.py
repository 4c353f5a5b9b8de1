"""The worker's run path: how a message from beat becomes a recorded run.

1. :mod:`~scheduling.runs.start`: under the job's row lock, apply the rules
   (:mod:`~scheduling.runs.rules`: duplicate → misfire → coalesce → overlap policy and
   max instances) and write the *running* row with a lease, or record why the run does
   not start, or that it waits for a free slot (:mod:`~scheduling.runs.waiting`, which
   sends it on once one is free);
2. :mod:`~scheduling.runs.call`: call the registered function (sync or ``async def``,
   under its soft time limit) while :mod:`~scheduling.runs.lease` keeps the lease alive;
3. :mod:`~scheduling.runs.finish`: record the outcome, the Celery task result, the
   statistics and the job's last run in one transaction;
4. :mod:`~scheduling.runs.retries`: a failed attempt may be retried after a backoff.

A function may ask for its run's context (:mod:`~scheduling.runs.context`: names, times,
a logger, cancellation, progress); :mod:`~scheduling.runs.cancel` stops a run in
progress (cancel, terminate, and the terminate of a cancel not heeded in time).

:mod:`~scheduling.runs.run` strings these together for ``scheduling.run_job`` (the thin
Celery task in :mod:`scheduling.tasks`); :mod:`~scheduling.runs.records` writes the runs
that end otherwise (missed by beat, lost with their worker). Every record sends its run
event (:mod:`~scheduling.runs.events`) once committed.
"""

from scheduling.runs.cancel import execution_terminate_overdue
from scheduling.runs.context import RunCancelled, RunContext, current
from scheduling.runs.events import announce
from scheduling.runs.finish import execution_mark_timed_out
from scheduling.runs.records import (
    NOT_RUN,
    covered_by_summary,
    execution_reap_lost,
    execution_record_excluded,
    execution_record_missed,
    execution_record_missed_summaries,
)
from scheduling.runs.retries import RetryLater, retry_countdown
from scheduling.runs.run import DatabaseUnavailable, RunStopped, execution_run
from scheduling.runs.start import JobNotFoundError, execution_start
from scheduling.runs.waiting import execution_promote_waiting, executions_promote_due

__all__ = [
    "NOT_RUN",
    "DatabaseUnavailable",
    "JobNotFoundError",
    "RetryLater",
    "RunCancelled",
    "RunContext",
    "RunStopped",
    "announce",
    "covered_by_summary",
    "current",
    "execution_mark_timed_out",
    "execution_promote_waiting",
    "execution_reap_lost",
    "execution_record_excluded",
    "execution_record_missed",
    "execution_record_missed_summaries",
    "execution_run",
    "execution_start",
    "execution_terminate_overdue",
    "executions_promote_due",
    "retry_countdown",
]
