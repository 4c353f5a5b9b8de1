"""The default maintenance jobs against real rows and files."""

import datetime as dt
import json
import os
import time

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from scheduling import maintenance, services
from scheduling.models import BeatHeartbeat, Job, JobExecution
from tests.factories import make_job

pytestmark = pytest.mark.django_db


def add_runs(job, count, *, days_ago):
    start = timezone.now() - dt.timedelta(days=days_ago)
    JobExecution.objects.bulk_create(
        JobExecution(
            job=job,
            job_name=job.name,
            task=job.task,
            trigger="schedule",
            status="success",
            started_at=start - dt.timedelta(minutes=i),
        )
        for i in range(count)
    )


def test_cleanup_deletes_old_runs_but_keeps_each_jobs_last_runs(settings):
    busy, quiet = make_job(name="busy"), make_job(name="quiet")
    add_runs(busy, 50, days_ago=40)
    add_runs(busy, 5, days_ago=1)
    add_runs(quiet, 3, days_ago=40)
    report = maintenance.cleanup(retention_days=30, keep_last=10, batch_size=7)
    # busy: 5 recent + the 5 newest old ones are its last 10; quiet keeps all 3.
    assert JobExecution.objects.filter(job=busy).count() == 10
    assert JobExecution.objects.filter(job=quiet).count() == 3
    assert report["executions_deleted"] == 45


def test_cleanup_deletes_old_task_results_and_orphan_runs():
    old = timezone.now() - dt.timedelta(days=40)
    TaskResult.objects.create(task_id="old", status="SUCCESS")
    TaskResult.objects.filter(task_id="old").update(date_done=old)
    TaskResult.objects.create(task_id="new", status="SUCCESS")
    job = make_job(name="gone")
    add_runs(job, 2, days_ago=40)
    services.job_remove(job=job)
    report = maintenance.cleanup(retention_days=30, keep_last=10)
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]
    assert report["task_results_deleted"] == 1
    assert not JobExecution.objects.exists()


def test_cleanup_deletes_unused_run_overrides_and_finished_backfills():
    """A run's override is deleted at its first start; one whose message never started
    stays, and so does every backfill with its explanations, until the cleanup."""
    from scheduling.models import Backfill, BackfillRun, BackfillState, RunOverride

    old = timezone.now() - dt.timedelta(days=40)
    job = make_job(name="filled")
    RunOverride.objects.create(task_id="never-started", kwargs={"x": 1})
    RunOverride.objects.create(task_id="waiting", kwargs={"x": 2})
    RunOverride.objects.filter(task_id="never-started").update(created_at=old)

    def backfill(state, finished_at):
        made = Backfill.objects.create(
            job=job,
            job_name=job.name,
            start=old,
            end=old + dt.timedelta(hours=1),
            timezone="UTC",
            reprocess="missing",
            state=state,
            finished_at=finished_at,
        )
        BackfillRun.objects.create(backfill=made, scheduled_at=old, state="sent")
        return made

    done = backfill(BackfillState.DONE, old)
    recent = backfill(BackfillState.DONE, timezone.now())
    sending = backfill(BackfillState.RUNNING, None)
    report = maintenance.cleanup(retention_days=30, keep_last=10)
    assert list(RunOverride.objects.values_list("task_id", flat=True)) == ["waiting"]
    assert report["run_overrides_deleted"] == 1
    assert set(Backfill.objects.values_list("pk", flat=True)) == {recent.pk, sending.pk}
    assert report["backfills_deleted"] == 1
    assert not BackfillRun.objects.filter(backfill_id=done.pk).exists()


def test_cleanup_disables_finished_one_off_jobs():
    job = services.job_register_date(
        name="once", task="demo.echo", run_at=timezone.now() + dt.timedelta(seconds=1)
    )
    Job.objects.filter(pk=job.pk).update(
        next_run_at=None, run_at=timezone.now() - dt.timedelta(minutes=1)
    )
    pending = services.job_register_date(
        name="later", task="demo.echo", run_at=timezone.now() + dt.timedelta(hours=1)
    )
    report = maintenance.cleanup()
    assert report["one_off_jobs_disabled"] == ["once"]
    assert not Job.objects.get(pk=job.pk).enabled
    assert Job.objects.get(pk=pending.pk).enabled


def test_backup_writes_an_importable_file_and_rotates(tmp_path, settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "BACKUP_DIR": str(tmp_path)}
    job = make_job(name="kept", cron_expression="0 0 1 * * *")
    add_runs(job, 2, days_ago=1)
    reports = [maintenance.backup(keep=2) for _ in range(3)]
    files = sorted(tmp_path.glob("backup-*.json"))
    assert [f.name for f in files] == [os.path.basename(r["file"]) for r in reports[1:]]
    assert reports[-1]["jobs"] == 1 and reports[-1]["executions"] == 2
    document = json.loads(files[-1].read_text())
    Job.objects.all().delete()
    assert services.config_import(data=document).created == ["kept"]


def test_cleanup_removes_old_backup_files(tmp_path, settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "BACKUP_DIR": str(tmp_path)}
    old, new = tmp_path / "backup-old.json", tmp_path / "backup-new.json"
    old.write_text("{}"), new.write_text("{}")
    long_ago = time.time() - 40 * 86400
    os.utime(old, (long_ago, long_ago))
    report = maintenance.cleanup(backup_retention_days=30)
    assert report["backup_files_removed"] == ["backup-old.json"]
    assert new.exists() and not old.exists()


def test_health_check_times_each_check_and_fails_naming_what_failed():
    # No worker answers and beat never ran here: those two fail, the rest pass.
    with pytest.raises(maintenance.HealthCheckFailed) as caught:
        maintenance.health_check(checks=["database", "beat", "disk", "memory"])
    message = str(caught.value)
    assert message.startswith("1 of 4 checks failed: beat (HealthCheckFailed: beat has never run)")
    BeatHeartbeat.objects.create(name="b", started_at=timezone.now(), last_tick_at=timezone.now())
    report = maintenance.health_check(checks=["database", "beat", "disk", "memory"])
    assert report["ok"] and [c["check"] for c in report["checks"]] == [
        "database",
        "beat",
        "disk",
        "memory",
    ]
    assert all(c["ok"] and c["seconds"] >= 0 for c in report["checks"])


def test_health_check_flags_a_silent_beat():
    stale = timezone.now() - dt.timedelta(minutes=5)
    BeatHeartbeat.objects.create(name="b", started_at=stale, last_tick_at=stale)
    with pytest.raises(maintenance.HealthCheckFailed, match="beat last ticked 300s ago"):
        maintenance.health_check(checks=["beat"])
