"""The daily statistics rollup (scheduling.stats)."""

import datetime as dt

import pytest
from django.utils import timezone

from scheduling import runs, selectors, stats
from scheduling.models import JobDailyStats
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_rollup_follows_the_run_events_and_rebuilds_the_same():
    job = make_job(task="demo.sleep", kwargs={"seconds": 0})
    for _ in range(3):
        runs.execution_run(
            job_id=job.pk, trigger="manual", scheduled_at=timezone.now(), task_id=None, worker="w"
        )
    runs.execution_record_missed(
        job=job, fire_times=[timezone.now() - dt.timedelta(hours=1)], reason="x"
    )
    live = {(r.status, r.count, r.duration_count) for r in JobDailyStats.objects.all()}
    assert live == {("success", 3, 3), ("missed", 1, 0)}
    assert stats.stats_rebuild() == 4
    assert {(r.status, r.count, r.duration_count) for r in JobDailyStats.objects.all()} == live
    days = selectors.outcomes_per_day(days=2)
    assert sum(r["runs"] for r in days if r["status"] == "success") == 3


def test_a_summary_of_missed_fire_times_counts_each_of_them_and_rebuilds_the_same():
    from scheduling.runs.rules import Missed

    job = make_job(trigger_type="interval", interval_every=10, interval_period="seconds")
    before = job.next_run_at
    runs.execution_record_missed_summaries(
        missed=[(job, job.trigger(), Missed(first=before - dt.timedelta(hours=1), before=before))],
        reason="Not sent.",
    )
    live = {(r.status, r.count) for r in JobDailyStats.objects.all()}
    assert live == {("missed", 360)}
    assert stats.stats_rebuild() == 360
    assert {(r.status, r.count) for r in JobDailyStats.objects.all()} == live
    since = before - dt.timedelta(days=1)
    assert selectors.job_statistics(job=job, since=since, until=before)["missed"] == 360
