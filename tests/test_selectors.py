"""Reads: statistics over a window and the slow-jobs report."""

import datetime as dt

import pytest

from scheduling import selectors
from scheduling.models import Job
from tests.factories import make_finished_run, make_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_job_statistics_over_a_window():
    job = make_job(name="timed")
    for duration in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10):
        make_finished_run(job, duration)
    make_finished_run(job, 100, status="failure")
    make_finished_run(job, 1000, ago=dt.timedelta(days=3))  # outside a day's window
    since, until = selectors.window_bounds(window="day")
    result = selectors.job_statistics(job=job, since=since, until=until)
    assert (result["runs"], result["successes"], result["failures"]) == (11, 10, 1)
    assert result["success_rate"] == pytest.approx(10 / 11, abs=1e-4)
    assert (result["min"], result["max"]) == (1, 100)
    assert result["avg"] == pytest.approx(155 / 11)
    assert result["p50"] == pytest.approx(6)
    assert result["p95"] == pytest.approx(10 + 0.5 * 90)
    assert result["p99"] == pytest.approx(10 + 0.9 * 90)
    assert result["last_status"] == "failure"
    week = selectors.job_statistics(
        job=job,
        **dict(zip(("since", "until"), selectors.window_bounds(window="week"), strict=True)),
    )
    assert week["runs"] == 12


def test_slow_jobs_use_the_job_threshold_or_the_global_one(settings):
    settings.SCHEDULING = {**settings.SCHEDULING, "SLOW_THRESHOLD": 5}
    fast, slow, slower, strict = (make_job(name=n) for n in ("fast", "slow", "slower", "strict"))
    Job.objects.filter(pk=strict.pk).update(slow_threshold=0.5)
    for job, duration in ((fast, 1), (slow, 6), (slower, 9), (strict, 1)):
        make_finished_run(job, duration)
    since, until = selectors.window_bounds(window="hour")
    report = selectors.slow_jobs(since=since, until=until)
    assert [(r["job"], r["threshold"]) for r in report] == [
        ("slower", 5),
        ("slow", 5),
        ("strict", 0.5),
    ]
    assert [r["job"] for r in selectors.slow_jobs(since=since, until=until, threshold=8)] == [
        "slower"
    ]
