"""Monitoring at size: 1,000,000 execution rows on PostgreSQL.

Seeds a scratch database (``bench_monitoring`` on the server of $BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/bench_monitoring), then times, median of 5 runs:
one job's statistics over 30 days, the slow-jobs report, the dashboard page, the first and
a deep page of our admin executions list — and, side by side, the stock
django-celery-results TaskResult admin list over 1,000,000 task results.

    DJANGO_DEBUG=1 .venv/bin/python benchmarks/monitoring.py [--rows 1000000]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_monitoring")
os.environ["DATABASE_URL"] = URL
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("VAR_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")


def recreate_database() -> None:
    import psycopg

    name = URL.rsplit("/", 1)[1]
    with psycopg.connect(URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def seed(rows: int, jobs: int = 50) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduling_job (name, title, description, "group", task, args, kwargs,
                enabled, trigger_type, cron_expression, interval_period, timezone, coalesce,
                max_instances, misfire_grace_time, jitter, max_retries, retry_backoff,
                retry_backoff_max, retry_jitter, retry_on, alert_emails, alert_webhooks,
                alert_grace, schedule_anchor, next_run_at, version, last_status,
                total_run_count, created_at, updated_at)
            SELECT 'job-' || i, '', '', 'bench', 'demo.echo', '[]', '{}', true, 'cron',
                '0 * * * * *', 'minutes', 'UTC', false, 3, 15, 0, 0, 2, 300, true, '[]', '', '',
                300, now(), now() + (i || ' seconds')::interval, 1, '', 0, now(), now()
            FROM generate_series(1, %s) i
            """,
            [jobs],
        )
        # Spread over 30 days; 95 % success; durations 0-5 s, a few slow jobs up to 20 s.
        cursor.execute(
            """
            INSERT INTO scheduling_jobexecution (job_id, job_name, task, trigger, status,
                scheduled_at, started_at, finished_at, duration, result, exception, traceback,
                worker, reason, attempt, task_id)
            SELECT j.id, j.name, 'demo.echo', 'schedule',
                CASE WHEN random() < 0.95 THEN 'success' ELSE 'failure' END,
                t, t + interval '0.05 s', t + interval '1 s',
                random() * CASE WHEN j.id %% 10 = 0 THEN 20 ELSE 5 END,
                '', '', '', 'worker@bench', '', 0, md5(i::text)
            FROM generate_series(1, %s) i
            JOIN scheduling_job j ON j.id = 1 + (i %% %s)
            CROSS JOIN LATERAL (SELECT now() - (i * (2592000.0 / %s) || ' seconds')::interval AS t) x
            """,
            [rows, jobs, rows],
        )
        cursor.execute(
            """
            INSERT INTO django_celery_results_taskresult (task_id, status, content_type,
                content_encoding, result, date_done, date_created, traceback, meta,
                task_name, periodic_task_name, worker, task_args, task_kwargs)
            SELECT md5(i::text), CASE WHEN i %% 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
                'application/json', 'utf-8', '{}',
                now() - (i * (2592000.0 / %s) || ' seconds')::interval,
                now() - (i * (2592000.0 / %s) || ' seconds')::interval, NULL, '{}',
                'scheduling.run_job', 'job-' || (1 + i %% 50), 'worker@bench', '[]', '{}'
            FROM generate_series(1, %s) i
            """,
            [rows, rows, rows],
        )
        cursor.execute("ANALYZE")
    from scheduling import stats

    stats.stats_rebuild()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def timed(label: str, action, repeat: int = 5) -> tuple[str, float]:
    action()  # warm up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return label, statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true", help="keep an already seeded database")
    args = parser.parse_args()

    if not args.reuse:
        recreate_database()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    from scheduling import selectors
    from scheduling.models import Job, JobExecution

    if not args.reuse:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
        started = time.perf_counter()
        seed(args.rows)
        print(
            f"seeded {args.rows:,} executions and task results in {time.perf_counter() - started:.0f}s"
        )
    setup_test_environment()
    user_model = get_user_model()
    user = user_model.objects.filter(
        username="bench"
    ).first() or user_model.objects.create_superuser("bench", "bench@localhost", "bench")
    client = Client()
    client.force_login(user)
    job = Job.objects.order_by("pk")[9]
    since, until = selectors.window_bounds(window="month")
    day_since, _ = selectors.window_bounds(window="day")
    deep = JobExecution.objects.count() // 100 // 2

    def page(url: str):
        def fetch():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        return fetch

    results = [
        timed(
            "statistics: one job, 30 days (count, rate, min/avg/max, p50/p95/p99)",
            lambda: selectors.job_statistics(job=job, since=since, until=until),
        ),
        timed("slow-jobs report, 30 days", lambda: selectors.slow_jobs(since=since, until=until)),
        timed("slow-jobs report, 1 day", lambda: selectors.slow_jobs(since=day_since, until=until)),
        timed(
            "dashboard page (charts, stats, slow jobs, upcoming)",
            page("/admin/scheduling/job/dashboard/"),
        ),
        timed("our executions admin list, first page", page("/admin/scheduling/jobexecution/")),
        timed(
            f"our executions admin list, page {deep:,} (deep)",
            page(f"/admin/scheduling/jobexecution/?p={deep}"),
        ),
        timed(
            "our executions admin list, filtered by job",
            page(f"/admin/scheduling/jobexecution/?job__id__exact={job.pk}"),
        ),
        timed(
            "stock TaskResult admin list (django-celery-results), first page",
            page("/admin/django_celery_results/taskresult/"),
            repeat=3,
        ),
        timed(
            f"stock TaskResult admin list, page {deep:,} (deep)",
            page(f"/admin/django_celery_results/taskresult/?p={deep}"),
            repeat=3,
        ),
    ]
    rows = JobExecution.objects.count()
    print(f"\n{rows:,} execution rows, PostgreSQL; median of 5 (stock: of 3) after a warm-up\n")
    width = max(len(label) for label, _ in results)
    for label, ms in results:
        print(f"{label:<{width}}  {ms:8.1f} ms")


if __name__ == "__main__":
    main()
