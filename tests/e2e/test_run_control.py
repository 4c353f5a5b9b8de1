"""Re-run, run now with overrides and backfill with real beat and worker processes: the
arguments and logical time a run sees, backfill across a daylight-saving change, its
throttling (measured) and a backfill cancelled half-way. Each fire time ends up
explained."""

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from scheduling import services
from scheduling.models import Backfill, BackfillRun, JobExecution
from tests.e2e.processes import wait_for
from tests.factories import make_job

pytestmark = [pytest.mark.e2e]

UTC = dt.UTC
BERLIN = "Europe/Berlin"


def _seen(key: str) -> list[dict]:
    path = Path(django_settings.VAR_DIR) / f"record-{key}"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _finished(processes, count: int, timeout: float = 90, **filters) -> list[JobExecution]:
    def done():
        runs = list(
            JobExecution.objects.filter(**filters)
            .exclude(status__in=["running", "cancelling", "waiting", "queued"])
            .order_by("scheduled_at", "pk")
        )
        return runs if len(runs) >= count else None

    return wait_for(done, timeout=timeout, what=f"{count} runs to end", processes=processes)


def _record_job(key: str, **fields):
    """A job whose runs record what they saw under ``key`` (a fresh file per test run)."""
    (Path(django_settings.VAR_DIR) / f"record-{key}").unlink(missing_ok=True)
    fields.setdefault("cron_expression", "0 0 3 1 1 *")  # once a year: beat stays idle
    return make_job(task="tests.record_run", kwargs={"key": key, "value": 1}, **fields)


def test_a_rerun_runs_with_the_originals_overrides_and_logical_time(celery_processes):
    job = _record_job("rerun", misfire_grace_time=1)
    celery_processes.start_beat(ready=True)
    celery_processes.start_worker()
    logical = dt.datetime(2024, 2, 29, 12, 0, tzinfo=UTC)
    services.job_run_now(job=job, kwargs={"value": 2}, logical_at=logical)
    [original] = _finished(celery_processes, 1, job=job)
    assert original.status == "success", original.reason
    assert original.kwargs == {"key": "rerun", "value": 2}
    # The job changes meanwhile; the re-run keeps what the original ran with.
    services.job_update(job=job, kwargs={"key": "rerun", "value": 3})
    services.execution_rerun(execution=original, by="alice")
    runs = _finished(celery_processes, 2, job=job)
    rerun = next(run for run in runs if run.pk != original.pk)
    # Not late by its logical time (years ago, with a grace of 1 s): it ran.
    assert rerun.status == "success", rerun.reason
    assert rerun.trigger == "rerun" and rerun.parent_id == original.pk
    assert rerun.scheduled_at == logical and rerun.kwargs == original.kwargs
    seen = _seen("rerun")
    assert [(s["trigger"], s["value"], s["scheduled_at"]) for s in seen] == [
        ("manual", 2, logical.isoformat()),
        ("rerun", 2, logical.isoformat()),
    ]


def test_a_run_now_that_waits_in_the_queue_past_its_grace_is_missed(celery_processes):
    job = _record_job("late", misfire_grace_time=2)
    services.job_run_now(job=job, logical_at=dt.datetime(2020, 1, 1, tzinfo=UTC))
    time.sleep(4)  # no worker yet: the message waits in the queue past the grace
    celery_processes.start_worker()
    [run] = _finished(celery_processes, 1, job=job)
    assert run.status == "missed"
    assert "after it was sent; the grace is 2s" in run.reason
    assert _seen("late") == []


def test_a_backfill_across_the_october_dst_change_runs_once_a_day(celery_processes):
    job = _record_job("dst", cron_expression="0 0 3 * * *", timezone=BERLIN)
    celery_processes.start_beat(ready=True)
    celery_processes.start_worker(env={"SCHEDULING_BACKFILL_RATE": "5"})
    start = dt.datetime(2025, 10, 22)  # wall clock, Berlin
    backfill = services.job_backfill(
        job=job,
        start=start.replace(tzinfo=dt.timezone(dt.timedelta(hours=2))),
        end=dt.datetime(2025, 10, 29, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    )
    assert backfill.total_count == 7
    runs = _finished(celery_processes, 7, job=job)
    assert all(run.status == "success" and run.trigger == "backfill" for run in runs)
    assert all(run.backfill_id == backfill.pk for run in runs)
    from zoneinfo import ZoneInfo

    local = [run.scheduled_at.astimezone(ZoneInfo(BERLIN)) for run in runs]
    assert [moment.day for moment in local] == list(range(22, 29))
    assert all((moment.hour, moment.minute) == (3, 0) for moment in local)
    assert [moment.utcoffset().total_seconds() / 3600 for moment in local] == [2] * 4 + [1] * 3
    seen = sorted(s["scheduled_at"] for s in _seen("dst"))
    assert seen == sorted(run.scheduled_at.isoformat() for run in runs)
    backfill.refresh_from_db()
    assert backfill.state == "done" and backfill.sent_count == 7
    by_task = {run.task_result_id: run for run in runs}
    for item in BackfillRun.objects.filter(backfill=backfill):
        assert item.state == "sent" and by_task[item.task_id].scheduled_at == item.scheduled_at


def test_a_backfill_is_throttled_to_its_rate(celery_processes, settings):
    rate, count = 2.0, 10
    job = _record_job("rate", cron_expression="0 * * * * *", timezone="UTC")
    celery_processes.start_worker(env={"SCHEDULING_BACKFILL_RATE": str(rate)})
    start = dt.datetime(2025, 3, 1, 8, tzinfo=UTC)
    settings.SCHEDULING = {**getattr(settings, "SCHEDULING", {}), "BACKFILL_RATE": rate}
    services.job_backfill(job=job, start=start, end=start + dt.timedelta(minutes=count))
    runs = _finished(celery_processes, count, job=job)
    assert all(run.status == "success" for run in runs)
    calls = sorted(s["at"] for s in _seen("rate"))
    span = calls[-1] - calls[0]
    measured = (count - 1) / span
    print(f"backfill of {count} runs at BACKFILL_RATE={rate}/s: measured {measured:.2f} runs/s")
    assert measured <= rate * 1.25
    assert span >= (count - 1) / rate * 0.8


def test_a_backfill_cancelled_half_way_sends_no_more_and_explains_every_fire_time(
    celery_processes,
):
    count = 12
    job = _record_job("cancel", cron_expression="0 0 * * * *", timezone="UTC")
    celery_processes.start_beat(ready=True)
    celery_processes.start_worker(env={"SCHEDULING_BACKFILL_RATE": "1"})
    start = dt.datetime(2025, 4, 1, tzinfo=UTC)
    backfill = services.job_backfill(job=job, start=start, end=start + dt.timedelta(hours=count))
    wait_for(
        lambda: Backfill.objects.get(pk=backfill.pk).sent_count >= 4,
        timeout=60,
        what="4 backfilled runs sent",
        processes=celery_processes,
    )
    backfill = services.backfill_cancel(backfill=backfill, by="alice")
    sent = backfill.sent_count
    assert backfill.state == "cancelled" and 4 <= sent < count
    assert backfill.cancelled_count == count - sent
    runs = _finished(celery_processes, sent, job=job)
    time.sleep(3)  # past three more sends at the rate: none comes
    assert JobExecution.objects.filter(job=job).count() == sent
    assert len(_seen("cancel")) == sent
    items = list(BackfillRun.objects.filter(backfill=backfill).order_by("scheduled_at"))
    by_task = {run.task_result_id: run for run in runs}
    # Oldest first: the first ones ran, the rest are recorded cancelled, with who did it.
    assert [item.state for item in items] == ["sent"] * sent + ["cancelled"] * (count - sent)
    for item in items[:sent]:
        assert by_task[item.task_id].status == "success"
    for item in items[sent:]:
        assert item.reason == "Cancelled by alice before it was sent."


def test_a_run_now_with_kwargs_is_retried_with_them_by_a_real_worker(celery_processes):
    key = f"override-retry-{time.time_ns()}"
    job = make_job(
        task="tests.flaky",
        kwargs={"key": key, "failures": 99},  # the job's own: never succeeds
        cron_expression="0 0 3 1 1 *",
        max_retries=2,
        retry_backoff=1,
        retry_jitter=False,
    )
    celery_processes.start_worker()
    task_id = services.job_run_now(job=job, kwargs={"failures": 1})  # fails once, then not
    runs = _finished(celery_processes, 2, job=job)
    assert [(run.attempt, run.status) for run in runs] == [(0, "failure"), (1, "success")], [
        run.reason or run.exception for run in runs
    ]
    assert {run.task_result_id for run in runs} == {task_id}
    assert all(run.kwargs == {"key": key, "failures": 1} for run in runs)
