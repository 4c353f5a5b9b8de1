"""Job events: the documented extension point.

Connect a receiver to any of these Django signals to react to what happens to jobs; our
own audit trail and alerts are receivers like any other (:mod:`scheduling.receivers`);
the daily statistics are written with each run's record, in its transaction. Every signal is sent with ``sender=Job`` (job events) or
``sender=JobExecution`` (run events), after the change is written.

Job events, with keyword arguments ``job``, ``source`` (admin / command / import / api /
system), ``actor`` (user name or "") and ``changes`` (``{field: [old, new]}``):

- ``job_added``, ``job_changed``, ``job_removed``, ``job_paused``, ``job_resumed``
  (one event per change: an edit that also pauses or resumes is ``job_changed`` with
  ``enabled`` among its changes)
- ``run_dropped``: an operator dropped a run that waited for a free slot; ``changes``
  holds the run's id, fire time and the reason given
- ``job_stopped``: beat cannot compute the job's fire times any more (its timezone was
  removed from the system, say) and stopped scheduling it; ``changes`` holds the error
- ``job_finished``: beat disabled the job because its validity window is over (its end
  time passed, or it sent its max runs); ``changes`` holds ``enabled`` and the ``reason``
- ``run_cancel_requested``, ``run_terminate_requested``: someone asked one of the job's
  running runs to stop; ``changes`` holds the execution's id and the reason
- ``run_rerun_requested``: someone re-ran a past run; ``changes`` holds its execution id
  and the new run's task id
- ``backfill_started``, ``backfill_cancelled``: someone started (or cancelled) a backfill
  of the job; ``changes`` holds the backfill's id, range and counts

Run events, with keyword argument ``execution`` (a saved :class:`JobExecution`):

- ``run_started`` — a run began on a worker
- ``run_succeeded`` — it returned
- ``run_failed`` — it raised, timed out or was lost
- ``run_missed`` — a fire time was not run (misfire grace or coalesced)
- ``run_skipped`` — a fire time was not run (max instances reached, the job's overlap
  policy, or dropped while it waited)
- ``run_waiting`` — a fire time waits for a free slot (overlap policy buffer one or
  buffer all); ``run_started`` follows when it runs
- ``run_cancelled`` — a run was stopped: cancelled (its function stopped when asked) or
  terminated (its process killed); ``execution.cancelled_by`` says who asked

A worker's ``run_succeeded`` and ``run_failed`` also carry ``firing_alerts``: the kinds of
alert firing for the job, read with the run's outcome (for our alerts receiver; others
can ignore it through ``**kwargs``).

Receivers run in the process that made the change (web, command, beat or worker); an
exception in a receiver is logged and does not undo the change
(``send_robust``).
"""

from django.dispatch import Signal

job_added = Signal()
job_changed = Signal()
job_removed = Signal()
job_paused = Signal()
job_resumed = Signal()
job_stopped = Signal()
job_finished = Signal()
run_cancel_requested = Signal()
run_terminate_requested = Signal()
run_dropped = Signal()
run_rerun_requested = Signal()
backfill_started = Signal()
backfill_cancelled = Signal()

run_started = Signal()
run_succeeded = Signal()
run_failed = Signal()
run_missed = Signal()
run_skipped = Signal()
run_cancelled = Signal()
run_waiting = Signal()
