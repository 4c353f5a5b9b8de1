"""The default maintenance jobs' work: cleanup, health check and backup.

Registered as job tasks in :mod:`scheduling.jobs`; each returns a report of what it did.
"""

import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, QuerySet
from django.utils import timezone
from django_celery_results.models import TaskResult

from scheduling import conf, selectors, services
from scheduling.audit import audit_context
from scheduling.models import (
    Backfill,
    BackfillState,
    BeatHeartbeat,
    Job,
    JobExecution,
    RunOverride,
    TriggerType,
)


def backup_dir() -> Path:
    return Path(conf.get("BACKUP_DIR"))


def _delete_in_batches(queryset: QuerySet, batch_size: int) -> int:
    """Delete rows a batch at a time, each in its own short transaction; return how many of
    the queryset's own rows went (the rows they cascade to are not counted)."""
    deleted = 0
    label = queryset.model._meta.label
    while True:
        pks = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not pks:
            return deleted
        with transaction.atomic():
            deleted += queryset.model.objects.filter(pk__in=pks).delete()[1].get(label, 0)


def cleanup(
    *,
    retention_days: int | None = None,
    keep_last: int | None = None,
    batch_size: int | None = None,
    backup_retention_days: int | None = None,
) -> dict[str, Any]:
    """Delete old executions (keeping each job's last runs), task results, run overrides
    never used and finished backfills, disable finished one-off jobs and remove old backup
    files."""
    retention_days = (
        retention_days if retention_days is not None else conf.get("EXECUTION_RETENTION_DAYS")
    )
    keep_last = keep_last if keep_last is not None else conf.get("KEEP_LAST_RUNS")
    batch_size = batch_size or conf.get("CLEANUP_BATCH_SIZE")
    backup_retention_days = (
        backup_retention_days
        if backup_retention_days is not None
        else conf.get("BACKUP_RETENTION_DAYS")
    )
    now = timezone.now()
    cutoff = now - dt.timedelta(days=retention_days)

    executions_deleted = 0
    job_ids = list(
        JobExecution.objects.filter(started_at__lt=cutoff)
        .values_list("job_id", flat=True)
        .distinct()
    )
    for job_id in job_ids:
        runs = JobExecution.objects.filter(job_id=job_id)
        if job_id is None:
            runs = JobExecution.objects.filter(job__isnull=True)
        limit = cutoff
        if keep_last and job_id is not None:
            newest = runs.order_by("-started_at").values_list("started_at", flat=True)
            kept_oldest = newest[keep_last - 1 : keep_last].first()
            if kept_oldest is None:
                continue  # fewer runs than keep_last: keep them all
            limit = min(cutoff, kept_oldest)
        executions_deleted += _delete_in_batches(
            runs.filter(started_at__lt=limit).order_by("started_at"), batch_size
        )

    results_deleted = _delete_in_batches(
        TaskResult.objects.filter(date_done__lt=cutoff).order_by("date_done"), batch_size
    )
    # A run's override waits for its first start; one older than the history never started
    # (its message expired or was lost). A finished backfill goes with its explanations.
    overrides_deleted = _delete_in_batches(
        RunOverride.objects.filter(created_at__lt=cutoff).order_by("created_at"), batch_size
    )
    backfills_deleted = _delete_in_batches(
        Backfill.objects.exclude(state=BackfillState.RUNNING)
        .filter(finished_at__lt=cutoff)
        .order_by("finished_at"),
        batch_size,
    )

    disabled = []
    finished = Job.objects.filter(
        trigger_type=TriggerType.DATE, enabled=True, next_run_at__isnull=True, run_at__lt=now
    )
    with audit_context(source="system", actor="maintenance.cleanup"):
        for job in finished:
            services.job_pause(job=job)
            disabled.append(job.name)

    removed_files = []
    folder = backup_dir()
    if folder.is_dir():
        oldest = time.time() - backup_retention_days * 86400
        for path in sorted(folder.glob("backup-*.json")):
            if path.stat().st_mtime < oldest:
                path.unlink()
                removed_files.append(path.name)

    return {
        "executions_deleted": executions_deleted,
        "task_results_deleted": results_deleted,
        "run_overrides_deleted": overrides_deleted,
        "backfills_deleted": backfills_deleted,
        "one_off_jobs_disabled": disabled,
        "backup_files_removed": removed_files,
        "retention_days": retention_days,
        "keep_last": keep_last,
    }


class HealthCheckFailed(RuntimeError):
    """One or more health checks failed; the message names them."""


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _check_broker() -> str:
    from celery import current_app as app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)
        return conn.as_uri()


def _check_workers() -> str:
    from celery import current_app as app

    replies = app.control.ping(timeout=conf.get("HEALTH_WORKER_PING_TIMEOUT"))
    if not replies:
        raise HealthCheckFailed("no worker answered a ping")
    return ", ".join(sorted(name for reply in replies for name in reply))


def _check_beat() -> str:
    latest = BeatHeartbeat.objects.aggregate(latest=Max("last_tick_at"))["latest"]
    if latest is None:
        raise HealthCheckFailed("beat has never run")
    silence = (timezone.now() - latest).total_seconds()
    limit = conf.get("HEALTH_BEAT_MAX_SILENCE")
    if silence > limit:
        raise HealthCheckFailed(f"beat last ticked {silence:.0f}s ago (limit {limit}s)")
    return f"last tick {silence:.1f}s ago"


def _check_disk() -> str:
    usage = shutil.disk_usage(getattr(settings, "VAR_DIR", Path.cwd()))
    free = 100 * usage.free / usage.total
    minimum = conf.get("HEALTH_DISK_MIN_FREE_PERCENT")
    if free < minimum:
        raise HealthCheckFailed(f"{free:.1f}% disk free (minimum {minimum}%)")
    return f"{free:.1f}% free"


def _check_memory() -> str:
    info = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    available = 100 * info["MemAvailable"] / info["MemTotal"]
    minimum = conf.get("HEALTH_MEMORY_MIN_AVAILABLE_PERCENT")
    if available < minimum:
        raise HealthCheckFailed(f"{available:.1f}% memory available (minimum {minimum}%)")
    return f"{available:.1f}% available"


HEALTH_CHECKS = {
    "database": _check_database,
    "broker": _check_broker,
    "workers": _check_workers,
    "beat": _check_beat,
    "disk": _check_disk,
    "memory": _check_memory,
}


def health_check(*, checks: list[str] | None = None) -> dict[str, Any]:
    """Run each check, timing it; raise :class:`HealthCheckFailed` naming the failed ones.

    The report of every check (outcome, detail, seconds) is the run's result, or the
    message of its failure.
    """
    report = health_report(checks=checks)
    failed = [item for item in report if not item["ok"]]
    if failed:
        names = ", ".join(f"{item['check']} ({item['detail']})" for item in failed)
        raise HealthCheckFailed(
            f"{len(failed)} of {len(report)} checks failed: {names}. Report: {json.dumps(report)}"
        )
    return {"ok": True, "checks": report}


def health_report(*, checks: list[str] | None = None) -> list[dict[str, Any]]:
    """Each check's outcome, detail and seconds (all of :data:`HEALTH_CHECKS` by default)."""
    report = []
    for name in checks or list(HEALTH_CHECKS):
        started = time.perf_counter()
        try:
            detail, ok = HEALTH_CHECKS[name](), True
        except Exception as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        report.append(
            {
                "check": name,
                "ok": ok,
                "detail": detail,
                "seconds": round(time.perf_counter() - started, 4),
            }
        )
    return report


def backup(*, keep: int | None = None, history_days: int | None = None) -> dict[str, Any]:
    """Write a timestamped export of every job (and recent runs); keep the newest ``keep``."""
    keep = keep or conf.get("BACKUP_KEEP")
    history_days = history_days if history_days is not None else conf.get("BACKUP_HISTORY_DAYS")
    folder = backup_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # A backup must restore everything, secrets included: it is written for the owner only.
    document = selectors.config_export(history_days=history_days, include_secrets=True)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
    path = folder / f"backup-{stamp}.json"
    # Write to a temporary file and rename, so a half-written backup never exists.
    with tempfile.NamedTemporaryFile(
        "w", dir=folder, delete=False, suffix=".tmp", encoding="utf-8"
    ) as handle:
        json.dump(document, handle, ensure_ascii=False, indent=2)
        temporary = handle.name
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    rotated = sorted(folder.glob("backup-*.json"))[:-keep]
    for old in rotated:
        old.unlink()
    return {
        "file": str(path),
        "jobs": len(document["jobs"]),
        "executions": len(document.get("executions", [])),
        "rotated_out": [p.name for p in rotated],
    }
