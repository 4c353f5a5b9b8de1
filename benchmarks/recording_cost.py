"""Recording cost: what one worker process spends recording a run, in process.

Companion to ``benchmarks/worker_throughput.py``: there, a worker with 2 processes drains
no-op runs and the figure is runs per second; here one process calls the execution
service itself (``scheduling.runs.execution_run``, as ``scheduling.run_job`` does, for a job
running ``demo.noop``), with no Celery around it, and the figures say where a run's time
goes: CPU in the process, time spent waiting for PostgreSQL, statements sent, round trips
(waits for PostgreSQL's answer, ``sql.round_trips``), and how much of the wait is the
commits waiting for the write-ahead log to reach the disk (the same runs with
``synchronous_commit = off`` for the session: a reference only, the product never turns
it off).

Same database as the throughput benchmark ($BENCH_DATABASE_URL, default
``bench_worker`` on 127.0.0.1), reset the same way (20,000 past runs, analyzed).

    DJANGO_DEBUG=1 .venv/bin/python benchmarks/recording_cost.py [--runs 2000] [--repeat 3]
"""

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import worker_throughput as bench  # sets the environment

os.environ["DJANGO_DEBUG"] = "0"  # as the workers run: Django keeps no query log
os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-secret-key-" + uuid.uuid4().hex)


def measure(runs: int, synchronous: bool) -> dict[str, float]:
    from django.db import connection

    from scheduling import sql
    from scheduling.models import ExecutionTrigger, JobExecution
    from scheduling.runs import execution_run
    from scheduling.task_results import TaskMessage

    job = bench.bench_job()  # first: reset_state needs the job (a fresh database has none)
    bench.reset_state(20_000)
    connection.close()
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"SET synchronous_commit = {'on' if synchronous else 'off'}")
    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    base = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def run(index: int) -> None:
        task_id = str(uuid.uuid4())
        execution_run(
            job_id=job.pk,
            trigger=ExecutionTrigger.SCHEDULE,
            scheduled_at=base + dt.timedelta(milliseconds=index),
            task_id=task_id,
            worker="bench@recording",
            message=TaskMessage(
                task_id=task_id,
                worker="bench@recording",
                periodic_task_name=job.name,
                args_repr="()",
                kwargs_repr="{}",
            ),
        )

    for index in range(100):  # warm up: statements prepared, caches filled
        run(index)
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(100, 100 + runs):
        run(index)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    counted = 100  # statements and round trips counted apart: counting costs time too
    with connection.execute_wrapper(count), sql.round_trips() as trips:
        for index in range(100 + runs, 100 + runs + counted):
            run(index)
    recorded = JobExecution.objects.filter(worker="bench@recording", status="success").count()
    assert recorded == runs + 100 + counted, recorded
    with connection.cursor() as cursor:
        cursor.execute("RESET synchronous_commit")
    return {
        "wall": wall / runs * 1000,
        "cpu": cpu / runs * 1000,
        "wait": (wall - cpu) / runs * 1000,
        "statements": statements / counted,
        "trips": trips[0] / counted,
        "rate": runs / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000, help="runs per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per configuration")
    args = parser.parse_args()

    bench.ensure_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    configs = [
        ("ours, as a worker records a run", True),
        ("same, synchronous_commit off (reference)", False),
    ]
    found: dict[str, list[dict[str, float]]] = {label: [] for label, _ in configs}
    for attempt in range(args.repeat):
        for label, synchronous in configs:
            figures = measure(args.runs, synchronous)
            found[label].append(figures)
            print(
                f"  run {attempt + 1} {label}: {figures['wall']:.2f} ms/run "
                f"({figures['cpu']:.2f} CPU)",
                flush=True,
            )

    print()
    print(
        f"Recording cost in one process: {args.runs:,} runs of demo.noop per measurement, "
        f"PostgreSQL {bench.URL.rsplit('/', 1)[1]}; median of {args.repeat}"
    )
    print()
    header = (
        f"{'configuration':<42} {'wall ms/run':>11} {'CPU ms':>7} {'wait ms':>8} "
        f"{'statements':>10} {'round trips':>11} {'runs/s':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, _ in configs:
        rows = found[label]

        def median(key: str, rows=rows) -> float:
            return statistics.median(row[key] for row in rows)

        print(
            f"{label:<42} {median('wall'):>11.2f} {median('cpu'):>7.2f} {median('wait'):>8.2f} "
            f"{median('statements'):>10.1f} {median('trips'):>11.1f} {median('rate'):>7.0f}"
        )


if __name__ == "__main__":
    main()
