"""Writes for the daily statistics rollup (one row per job, UTC day and outcome).

Every record of a run's end (:mod:`scheduling.runs`) adds it here with one upsert, in the
transaction that writes it, so a count is never lost or doubled; :func:`stats_rebuild`
recomputes the rollup from the executions.
"""

import datetime as dt

from django.db import connection, transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce

from scheduling import sql
from scheduling.models import (
    NOT_RUN_STATUSES,
    UNFINISHED_STATUSES,
    JobDailyStats,
    JobExecution,
)

TABLE = JobDailyStats._meta.db_table
BUCKETS = JobDailyStats.DURATION_BUCKETS


def bucket_index(duration: float) -> int:
    for index, bound in enumerate(BUCKETS):
        if duration <= bound:
            return index
    return len(BUCKETS)


_COLUMNS = """job_id, day, status, count, duration_count, duration_sum, duration_min,
    duration_max, lateness_count, lateness_sum, b0, b1, b2, b3, b4, b5, b6, b7"""
_VALUES = "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
_ON_CONFLICT = f"""
ON CONFLICT (job_id, day, status) DO UPDATE SET
    count = {TABLE}.count + excluded.count,
    duration_count = {TABLE}.duration_count + excluded.duration_count,
    duration_sum = {TABLE}.duration_sum + excluded.duration_sum,
    duration_min = CASE WHEN excluded.duration_min IS NOT NULL AND ({TABLE}.duration_min IS NULL
        OR excluded.duration_min < {TABLE}.duration_min) THEN excluded.duration_min
        ELSE {TABLE}.duration_min END,
    duration_max = CASE WHEN excluded.duration_max IS NOT NULL AND ({TABLE}.duration_max IS NULL
        OR excluded.duration_max > {TABLE}.duration_max) THEN excluded.duration_max
        ELSE {TABLE}.duration_max END,
    lateness_count = {TABLE}.lateness_count + excluded.lateness_count,
    lateness_sum = {TABLE}.lateness_sum + excluded.lateness_sum,
    b0 = {TABLE}.b0 + excluded.b0, b1 = {TABLE}.b1 + excluded.b1,
    b2 = {TABLE}.b2 + excluded.b2, b3 = {TABLE}.b3 + excluded.b3,
    b4 = {TABLE}.b4 + excluded.b4, b5 = {TABLE}.b5 + excluded.b5,
    b6 = {TABLE}.b6 + excluded.b6, b7 = {TABLE}.b7 + excluded.b7
"""
_UPSERT = f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES ({_VALUES}) {_ON_CONFLICT}"
# The same, only if a condition holds: SELECT ... WHERE instead of VALUES.
_UPSERT_IF = f"INSERT INTO {TABLE} ({_COLUMNS}) SELECT {_VALUES} WHERE {{}} {_ON_CONFLICT}"


def _row(execution: JobExecution) -> list:
    day = (execution.scheduled_at or execution.started_at).astimezone(dt.UTC).date()
    duration = execution.duration
    buckets = [0] * (len(BUCKETS) + 1)
    if duration is not None:
        buckets[bucket_index(duration)] = 1
    ran = execution.status not in NOT_RUN_STATUSES
    lateness = execution.lateness if ran else None
    return [
        execution.job_id,
        day,
        execution.status,
        execution.fire_time_count,  # a summary of missed fire times counts each of them
        1 if duration is not None else 0,
        duration or 0.0,
        duration,
        duration,
        1 if lateness is not None else 0,
        lateness or 0.0,
        *buckets,
    ]


def stats_record(*, execution: JobExecution, only_if: tuple[str, list] = ("", [])) -> None:
    """Add one run that ended (or missed, or skipped fire time) to its day's statistics;
    called once per run, in the transaction that records how it ended, and only if the SQL
    condition ``only_if`` (text, parameters) holds when it runs."""
    if execution.job_id is None:
        return
    condition, params = only_if
    with sql.cursor() as cursor:
        if condition:
            cursor.execute(_UPSERT_IF.format(condition), [*_row(execution), *params])
        else:
            cursor.execute(_UPSERT, _row(execution))


def stats_record_many(*, executions: list[JobExecution]) -> None:
    """:func:`stats_record` for many rows at once (one batch: psycopg pipelines it), each
    of a different job, day or status."""
    rows = [_row(execution) for execution in executions if execution.job_id is not None]
    if rows:
        with sql.cursor() as cursor:
            cursor.executemany(_UPSERT, rows)


@transaction.atomic
def stats_rebuild() -> int:
    """Recompute the rollup from the executions table in one statement; return the runs
    (a summary of missed fire times counts as that many)."""
    JobDailyStats.objects.all().delete()
    if connection.vendor == "postgresql":
        day = "(COALESCE(scheduled_at, started_at) AT TIME ZONE 'UTC')::date"
        lateness = "EXTRACT(EPOCH FROM (started_at - scheduled_at))"
    else:  # SQLite stores UTC text
        day = "date(COALESCE(scheduled_at, started_at))"
        lateness = "(julianday(started_at) - julianday(scheduled_at)) * 86400.0"
    not_run = ", ".join(f"'{status}'" for status in sorted(NOT_RUN_STATUSES))
    unfinished = ", ".join(f"'{status}'" for status in sorted(UNFINISHED_STATUSES))
    ran = f"status NOT IN ({not_run}) AND scheduled_at IS NOT NULL"
    bounds = [*BUCKETS]
    bucket_sql = []
    for index in range(len(bounds) + 1):
        low = f"duration > {bounds[index - 1]}" if index else "TRUE"
        high = f"duration <= {bounds[index]}" if index < len(bounds) else "TRUE"
        bucket_sql.append(
            f"SUM(CASE WHEN duration IS NOT NULL AND {low} AND {high} THEN 1 ELSE 0 END)"
        )
    executions = JobExecution._meta.db_table
    sql = f"""
        INSERT INTO {TABLE} (job_id, day, status, count, duration_count, duration_sum,
            duration_min, duration_max, lateness_count, lateness_sum,
            b0, b1, b2, b3, b4, b5, b6, b7)
        SELECT job_id, {day}, status, SUM(COALESCE(missed_count, 1)), COUNT(duration), COALESCE(SUM(duration), 0),
            MIN(duration), MAX(duration),
            SUM(CASE WHEN {ran} THEN 1 ELSE 0 END),
            COALESCE(SUM(CASE WHEN {ran} THEN {lateness} ELSE 0 END), 0),
            {", ".join(bucket_sql)}
        FROM {executions}
        WHERE status NOT IN ({unfinished}) AND job_id IS NOT NULL
        GROUP BY job_id, {day}, status
    """.replace("TRUE", "1=1")
    with connection.cursor() as cursor:
        cursor.execute(sql)
    runs = (
        JobExecution.objects.exclude(status__in=UNFINISHED_STATUSES)
        .filter(job__isnull=False)
        .aggregate(runs=Sum(Coalesce("missed_count", 1)))["runs"]
    )
    return runs or 0
