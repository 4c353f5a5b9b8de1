"""The cap of a job group on its runs at once (its *max instances*), across every worker.

A start, a take-over and a promotion of a job whose group has a cap lock the group's row
(``SELECT ... FOR UPDATE``; on SQLite the write lock) before the job's, and count the
runs of the group's jobs that hold a slot (:data:`scheduling.runs.rules.SLOT_SQL`: a live
lease, or queued after waiting) under that lock: the same guarantee across workers and
machines as the job's own max instances, decided in the database when the run starts.
The group's row is locked first, then the job's, as a group pause does, so the two
never wait on each other in opposite orders.

A run's start notes on the execution whether its group capped its runs then
(:data:`CAPPED`), so that its end looks for the group's other waiting runs only then:
a run of a job whose group has no cap costs no query more.
"""

from scheduling.models import ExecutionStatus, Job, JobExecution, JobGroup
from scheduling.runs import rules
from scheduling.runs.lease import db_now

#: The attribute of a started execution that says whether its group capped its runs at
#: its start (absent: not known, looked up at its end).
CAPPED = "group_capped"


def lock_group(job_id: int) -> rules.GroupSlots | None:
    """Lock the row of job ``job_id``'s group if the group caps its runs, and count the
    runs of its jobs that hold a slot; ``None``: no cap (nothing locked)."""
    name = Job.objects.filter(pk=job_id).values_list("group", flat=True).first()
    if name is None:
        return None
    cap = (
        JobGroup.objects.select_for_update()
        .filter(name=name, max_instances__isnull=False)
        .values_list("max_instances", flat=True)
        .first()
    )
    if cap is None:
        return None
    live = JobExecution.objects.filter(rules.slot_at(db_now()), job__group=name).count()
    return rules.GroupSlots(name=name, cap=cap, live=live)


def group_waiting_job_ids(*, execution: JobExecution) -> list[int]:
    """The other jobs of the group of ``execution``'s job that have runs waiting for a
    slot, if the group caps its runs: the run ended, and frees a slot of theirs too."""
    if not getattr(execution, CAPPED, True):
        return []
    job = execution.job
    capped = JobGroup.objects.filter(name=job.group, max_instances__isnull=False).values("name")
    return list(
        JobExecution.objects.filter(status=ExecutionStatus.WAITING, job__group__in=capped)
        .exclude(job_id=job.pk)
        .order_by("job_id")
        .values_list("job_id", flat=True)
        .distinct()
    )
