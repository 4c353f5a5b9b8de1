"""Each fire time's fate as the product recorded it, checked against the record itself.

Timing tests on a loaded machine cannot say how many fire times land on each side of a
misfire grace; they can say that every fire time has exactly one row, and that each row
agrees with itself: a run that ran started within its grace by its own timestamps, one
recorded missed for starting late was later than its grace by its own timestamps, one beat
did not send was older than the grace when beat recorded it, a coalesced one names a run
that covered it.
"""

import datetime as dt
import re

from django.db.models import Q

from scheduling.models import Job, JobExecution
from tests.e2e.processes import CeleryProcesses, wait_for

RAN = {"success", "failure", "timeout", "lost"}
# Reasons the product records, and what each one claims.
STARTED_LATE = re.compile(r"^Started (\d+\.\d)s after its fire time; the grace is (\d+)s\.$")
NOT_SENT = re.compile(
    r"^Not sent: beat was down or behind for longer than the misfire grace time \((\d+)s\)\.$"
)
COALESCED_BY_BEAT = re.compile(r"^Coalesced into the run at (\S+)\.$")
COALESCED_BY_RUN = re.compile(r"^Coalesced into the run that covered fire times up to (\S+)\.$")
NEVER_STARTED = "Sent to the broker but not started within its grace: "
EXPIRED = re.compile(
    r"^Expired in the queue '[\w.:@-]+': no worker took it within its misfire grace \((\d+)s\)\.$"
)
STILL_GOING = re.compile(r"^(\d+) run\(s\) still going; max instances is (\d+)\.$")
# Overlap policies that buffer: the reason a fire time was skipped with a run waiting.
BUFFER_FULL = re.compile(
    r"^(\d+) run\(s\) still going; max instances is (\d+) and (\d+) run\(s\) waiting; "
    r"the overlap policy (buffer_one keeps one waiting|buffer_all keeps at most (\d+) "
    r"waiting \(BUFFER_ALL_LIMIT\))\.$"
)
WAITED = re.compile(r"^Waited (\d+\.\d)s for a free slot\.$")
UNFINISHED = {"running", "waiting", "queued"}
LEDGER_MARGIN = 10  # scheduler.LEDGER_MARGIN, restated: the test checks the product
# Timestamps are stored to the microsecond; a lateness recomputed from them may differ from
# the one the worker compared by a float's rounding.
EPSILON = 0.001


def fire_times(job: Job, since: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """Every fire time of ``job`` in [since, until]."""
    trigger, times = job.trigger(), []
    fire = trigger.next_after(since - dt.timedelta(microseconds=1))
    while fire is not None and fire <= until:
        times.append(fire)
        fire = trigger.next_after(fire)
    return times


def first_attempts(job: Job, since: dt.datetime, until: dt.datetime):
    """The first attempts' rows of ``job`` that explain a fire time in [since, until]: its
    own, or a summary of missed fire times whose range meets it."""
    return JobExecution.objects.filter(
        Q(scheduled_at__gte=since) | Q(missed_until__gte=since),
        job=job,
        trigger="schedule",
        attempt=0,
        scheduled_at__lte=until,
    )


def explained_by(rows, times: list[dt.datetime]) -> dict[dt.datetime, list]:
    """``times`` with the rows that explain each: a row its own fire time; a summary every
    fire time of its range that has no row of its own (a run a beat sent before it died
    keeps its row; the summary's count leaves it out)."""
    by_time: dict[dt.datetime, list[JobExecution]] = {t: [] for t in times}
    summaries = []
    for row in rows:
        if row.missed_until is not None:
            summaries.append(row)
        else:
            by_time.setdefault(row.scheduled_at, []).append(row)
    for summary in summaries:
        for fire in [t for t in times if summary.covers(t) and not by_time[t]]:
            by_time[fire].append(summary)
    return by_time


def recorded(job: Job, since: dt.datetime, until: dt.datetime) -> dict[dt.datetime, list]:
    """The first attempts' rows of ``job``'s fire times in [since, until], by fire time
    (a summary under each fire time it explains)."""
    return explained_by(first_attempts(job, since, until), fire_times(job, since, until))


def wait_until_settled(
    job: Job,
    since: dt.datetime,
    until: dt.datetime,
    processes: CeleryProcesses,
    timeout: float = 90,
) -> dict[dt.datetime, JobExecution]:
    """Wait until every fire time of ``job`` in [since, until] has a finished row; return
    them by fire time, after checking there is exactly one each and that each is consistent
    with itself (:func:`problems`)."""

    def settled():
        by_time = recorded(job, since, until)
        done = all(rows and rows[0].status not in UNFINISHED for rows in by_time.values())
        return done and by_time

    try:
        by_time = wait_for(
            settled,
            timeout=timeout,
            what=f"every fire time of {job.name} to be run or recorded",
            processes=processes,
        )
    except AssertionError as exc:
        raise AssertionError(f"{table(recorded(job, since, until))}\n{exc}") from exc
    assert all(len(rows) == 1 for rows in by_time.values()), table(by_time)
    fates = {fire: rows[0] for fire, rows in by_time.items()}
    found = problems(job, {row.pk: row for row in fates.values()}.values())
    assert not found, (found, table(by_time))
    return fates


def table(by_time: dict) -> str:
    """One line per fire time: its row (or rows) with status, lateness and reason."""
    lines = []
    for fire, found in sorted(by_time.items()):
        found = [found] if isinstance(found, JobExecution) else found
        rows = "; ".join(f"{r.status} late {r.lateness:.2f} {r.reason}" for r in found)
        lines.append(f"{fire:%H:%M:%S} {rows}")
    return "\n".join(lines)


def late(row: JobExecution) -> float:
    """How late the row started (or began to wait for a free slot: the wait does not
    count against the grace), by its own timestamps, after its fire time and jitter."""
    began = row.waiting_since or row.started_at
    return (began - row.scheduled_at).total_seconds() - (row.jitter or 0)


def problems(job: Job, rows) -> list[str]:
    """The rows of ``job``'s fire times whose status, reason and timestamps disagree."""
    found = []
    for row in rows:
        problem = _problem(job, row)
        if problem:
            found.append(f"{row.scheduled_at:%H:%M:%S.%f} {row.status} {row.reason!r}: {problem}")
    return found


def _problem(job: Job, row: JobExecution) -> str | None:
    grace = job.misfire_grace_time
    if row.status in RAN:
        if late(row) > grace + EPSILON:
            return f"ran {late(row):.3f}s late, past its {grace}s grace"
        if row.status == "lost" and row.finished_at != row.lease_until:
            return "lost, but not at the end of its lease"
        if row.waiting_since is not None and (
            job.overlap not in ("buffer_one", "buffer_all")
            or not WAITED.match(row.reason)
            or row.started_at < row.waiting_since
        ):
            return "waited, but not for a slot under a buffering policy"
        return None
    if row.status == "skipped":
        if match := BUFFER_FULL.match(row.reason):
            going, limit, waiting = int(match[1]), int(match[2]), int(match[3])
            bound = 1 if job.overlap == "buffer_one" else int(match[5] or 0)
            if (
                not match[4].startswith(job.overlap)
                or waiting < bound
                or limit != job.max_instances
            ):
                return f"skipped with {going} going and {waiting} waiting: the buffer was not full"
            return None
        match = STILL_GOING.match(row.reason)
        if (
            job.overlap != "skip"
            or not match
            or int(match[2]) != job.max_instances
            or int(match[1]) < job.max_instances
        ):
            return "skipped without max instances reached"
        return None
    if row.status != "missed":
        return "not a fate"
    if match := STARTED_LATE.match(row.reason):
        said, said_grace = float(match[1]), int(match[2])
        if said_grace != grace or said < grace or late(row) <= grace or late(row) < said - 0.05:
            return f"started {late(row):.3f}s late by its own timestamps"
        return None
    if match := NOT_SENT.match(row.reason):
        # A summary: its last fire time was past the grace too, and its count is its range.
        last = row.missed_until or row.scheduled_at
        age = (row.started_at - last).total_seconds()
        if int(match[1]) != grace or age <= grace + job.jitter:
            return f"recorded {age:.3f}s after its fire time, within the grace"
        if row.missed_until is not None:
            inside = fire_times(job, row.scheduled_at, row.missed_until)
            if not inside or inside[-1] != row.missed_until:
                return "a summary whose last fire time is not one of the job's"
            already = JobExecution.objects.filter(
                job=job, trigger="schedule", attempt=0, missed_until__isnull=True
            ).filter(scheduled_at__gte=row.scheduled_at, scheduled_at__lte=row.missed_until)
            if row.missed_count != len(inside) - already.count():
                return f"a summary of {row.missed_count} fire times, {len(inside)} in its range"
        return None
    if row.reason.startswith(NEVER_STARTED):
        age = (row.started_at - row.scheduled_at).total_seconds()
        if age <= grace + job.jitter + LEDGER_MARGIN:
            return f"recorded lost {age:.3f}s after its fire time, before the ledger's margin"
        return None
    if match := EXPIRED.match(row.reason):
        age = (row.started_at - row.scheduled_at).total_seconds()
        if int(match[1]) != grace or age <= grace:
            return f"expired {age:.3f}s after its fire time, within the grace"
        return None
    if match := COALESCED_BY_BEAT.match(row.reason):
        into = dt.datetime.fromisoformat(match[1])
        run = JobExecution.objects.filter(
            job=job, trigger="schedule", attempt=0, scheduled_at=into
        ).first()
        if not job.coalesce or into <= row.scheduled_at or run is None:
            return "coalesced into no later run"
        if run.status not in RAN and not COALESCED_BY_RUN.match(run.reason):
            return f"coalesced into a run that was {run.status}: {run.reason!r}"
        return None
    if match := COALESCED_BY_RUN.match(row.reason):
        up_to = dt.datetime.fromisoformat(match[1])
        covering = JobExecution.objects.filter(
            job=job,
            status__in=RAN,
            scheduled_at__lte=up_to,
            started_at__gte=up_to,
            started_at__lte=row.started_at,
        )
        if not job.coalesce or row.scheduled_at > up_to or not covering.exists():
            return "coalesced, but no run started before it covered it"
        return None
    return "missed for no reason the product gives"
