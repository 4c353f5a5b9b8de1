"""Accounting for fault-injection runs: every fire time must end up explained, once."""

import datetime as dt
from pathlib import Path

from django.conf import settings

from scheduling.models import Job, JobExecution
from tests.e2e.fates import explained_by, first_attempts, problems

EXPLAINED = {"success", "failure", "timeout", "lost", "missed", "skipped"}
# Statuses of rows whose function was called (a run still going has been called too).
CALLED = {"success", "failure", "timeout", "lost", "running"}


def account(job: Job, key: str, since: dt.datetime, until: dt.datetime) -> dict:
    """Compare the fire times of ``job`` in [since, until] with what was recorded.

    ``duplicates``: real executions of the function (counted by the task itself) beyond one
    per run on record, plus fire times with more than one row; ``unexplained``: fire times
    with no row at all; ``inconsistent``: rows whose status, reason and timestamps disagree
    (:func:`tests.e2e.fates.problems`: say, missed for lateness yet started within grace).
    """
    job.refresh_from_db()
    # ``since`` itself counts: rows are taken from it on, inclusive.
    trigger, expected = job.trigger(), []
    fire = trigger.next_after(since - dt.timedelta(microseconds=1))
    while fire is not None and fire <= until:
        expected.append(fire)
        fire = trigger.next_after(fire)
    rows = first_attempts(job, since, until)
    # A summary of missed fire times explains every fire time of its range (that has no
    # row of its own): it counts once for each.
    by_time: dict[dt.datetime, list[str]] = {
        fire: [row.status for row in found]
        for fire, found in explained_by(rows, expected).items()
        if found
    }
    inconsistent = problems(job, rows.exclude(status="running"))
    calls_file = Path(settings.VAR_DIR) / f"calls-{key}"
    all_calls = len(calls_file.read_text().splitlines()) if calls_file.exists() else 0
    all_ran = JobExecution.objects.filter(job=job, status__in=CALLED).count()
    unexplained = [t for t in expected if not (set(by_time.get(t, [])) & EXPLAINED)]
    statuses: dict[str, int] = {}
    for values in by_time.values():
        for status in values:
            statuses[status] = statuses.get(status, 0) + 1
    return {
        "expected": len(expected),
        "recorded": sum(len(v) for v in by_time.values()),
        "outcomes": statuses,
        "duplicates": max(all_calls - all_ran, 0)
        + sum(len(v) - 1 for v in by_time.values() if len(v) > 1),
        "unexplained": len(unexplained),
        "unexplained_times": [t.isoformat() for t in unexplained[:5]],
        "inconsistent": inconsistent,
    }


def report_line(fault: str, result: dict) -> str:
    return (
        f"FAULT {fault:<34} expected {result['expected']:>4}  recorded {result['recorded']:>4}  "
        f"duplicates {result['duplicates']}  unexplained {result['unexplained']}  "
        f"inconsistent {len(result['inconsistent'])}  outcomes {result['outcomes']}"
    )
