"""Catch-up after beat was down: N interval jobs (every 10 s) after a 1-hour outage.

The outage is simulated, not waited for: every job's stored next fire time (and its
interval's anchor) is set an hour in the past, then a real ``celery beat`` starts on
PostgreSQL and a real Redis, and every message is taken off Redis's ``celery`` list as it
arrives (``benchmarks.beat``'s consumer). Printed, for ``JobScheduler`` and for
django-celery-beat's stock ``DatabaseScheduler`` (N interval tasks of 10 s whose
``last_run_at`` is an hour old):

- launch -> the first and the last job's current fire time arriving (one message per
  job: the first fire time within the misfire grace; stock sends each task once), and
  (ours) from the leader's first pass, by its lease row, to the last;
- rows written (execution rows, and the fire times they account for) by then, and once
  beat has finished recording;
- beat's peak memory (VmHWM);
- how long beat takes to exit after SIGTERM sent mid-catch-up (a second beat, stopped 2 s
  after its first message arrived), and at the end of the measurement.

    DJANGO_DEBUG=1 .venv/bin/python benchmarks/catch_up.py [--jobs 10000] [--only ours|stock]

``--jobs 1000`` is the short mode for CI. Uses the database of $BENCH_DATABASE_URL
(default ``bench_catchup``, created and migrated when missing; ``--recreate`` drops it
first) and Redis $BENCH_REDIS_URL (default db 6); both are emptied as it goes.
"""

import argparse
import base64
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_catchup")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
sys.path.insert(0, str(ROOT))

from benchmarks import beat as bench  # noqa: E402 - reads the two URLs above

EVERY = 10  # seconds between fire times
OUTAGE = 3600.0  # seconds beat was down
GRACE = 15  # the default misfire grace
STOP_CAP = 30.0  # longest wait for beat to exit after SIGTERM (then SIGKILL)
SIGTERM_AFTER = 2.0  # mid-catch-up: this long after the first message arrived


class Ours:
    label = "ours"
    records = True  # the fire times it did not send, and alerts
    scheduler = "scheduling.scheduler:JobScheduler"

    def seed(self, size: int) -> None:
        from scheduling import services
        from scheduling.models import Job

        services.job_bulk_create(
            jobs=[
                Job(
                    name=bench.job_name(i),
                    task="demo.echo",
                    trigger_type="interval",
                    interval_every=EVERY,
                    interval_period="seconds",
                    misfire_grace_time=GRACE,
                )
                for i in range(size)
            ]
        )

    def outage(self) -> None:
        """Every job was last sent an hour ago: its next fire time is an hour old."""
        from scheduling.models import Alert, Job, JobAlertStatus, JobDailyStats, JobExecution

        bench._truncate(
            [m._meta.db_table for m in (JobExecution, JobDailyStats, JobAlertStatus, Alert)]
        )
        fire = dt.datetime.fromtimestamp(int(time.time() - OUTAGE), dt.UTC)
        Job.objects.update(
            next_run_at=fire,
            dispatch_at=fire,
            schedule_anchor=fire - dt.timedelta(seconds=EVERY),
        )

    def first_pass(self) -> float | None:
        """When the beat became the leader (its first pass that sends), by the lease row."""
        from scheduling.models import SchedulerLease

        acquired = SchedulerLease.objects.values_list("acquired_at", flat=True).first()
        return None if acquired is None else acquired.timestamp()

    def rows(self) -> tuple[int, int]:
        """Execution rows, and the fire times they stand for."""
        from django.db.models import Count, Sum
        from django.db.models.functions import Coalesce

        from scheduling.models import JobExecution

        fields = {f.name for f in JobExecution._meta.get_fields()}
        times = Coalesce("missed_count", 1) if "missed_count" in fields else 1
        totals = JobExecution.objects.aggregate(
            rows=Count("pk"), times=Sum(times) if times != 1 else Count("pk")
        )
        return totals["rows"], totals["times"] or 0

    def settled(self, size: int) -> bool:
        """Whether beat has recorded the outage of every job, and announced it."""
        from scheduling.models import JobAlertStatus

        return JobAlertStatus.objects.filter(kind="missed", firing=True).count() >= size


class Stock:
    label = "stock"
    records = False
    scheduler = "django_celery_beat.schedulers:DatabaseScheduler"

    def seed(self, size: int) -> None:
        from django_celery_beat import models

        every, _ = models.IntervalSchedule.objects.get_or_create(
            every=EVERY, period=models.IntervalSchedule.SECONDS
        )
        models.PeriodicTask.objects.bulk_create(
            [
                models.PeriodicTask(name=bench.job_name(i), task="bench.noop", interval=every)
                for i in range(size)
            ],
            batch_size=5000,
        )

    def outage(self) -> None:
        from django_celery_beat import models

        last = dt.datetime.fromtimestamp(time.time() - OUTAGE, dt.UTC)
        models.PeriodicTask.objects.update(last_run_at=last, total_run_count=0)
        models.PeriodicTasks.update_changed()

    def first_pass(self) -> float | None:
        return None  # no lease: its first pass is not on record (see "launch ->")

    def rows(self) -> tuple[int, int]:
        return 0, 0  # stock records nothing of the fire times it did not send


def first_arrivals(consumer: bench.Consumer) -> dict[str, float]:
    """When each job's first message arrived: ours by the job id in the message, stock by
    its periodic task's name."""
    arrivals: dict[str, float] = consumer.__dict__.setdefault("first_arrivals", {})
    done = consumer.__dict__.get("parsed", 0)
    fresh = consumer._raw[done:]
    consumer.parsed = done + len(fresh)
    for arrived, raw in fresh:
        envelope = json.loads(raw)
        headers = envelope.get("headers") or {}
        key = headers.get("periodic_task_name")
        if headers.get("task") == "scheduling.run_job":
            key = str(json.loads(base64.b64decode(envelope["body"]))[1]["job_id"])
        arrivals.setdefault(key or "?", arrived)
    return arrivals


def measure(kind, size: int, cap: float) -> dict:
    """One beat after the outage: first / last current fire time, rows, memory."""
    kind.outage()
    bench.empty_broker_and_leases()
    consumer = bench.Consumer()
    consumer.start()
    beat = bench.Beat(kind.scheduler, f"catch-up-{kind.label}-{size}")
    beat.start()
    result: dict = {}
    try:

        def all_sent() -> bool:
            return len(consumer._raw) >= size and len(first_arrivals(consumer)) >= size

        bench.wait_until(all_sent, beat.launched + cap, beat)
        arrivals = first_arrivals(consumer)
        if arrivals:
            result["first_s"] = min(arrivals.values()) - beat.launched
            result["last_s"] = max(arrivals.values()) - beat.launched
            started = kind.first_pass()
            if started is not None and len(arrivals) >= size:
                result["pass_to_last_s"] = max(arrivals.values()) - started
        result["sent"] = len(arrivals)
        result["rows_at_last"] = kind.rows()
        if kind.records:
            bench.wait_until(lambda: kind.settled(size), time.time() + cap, beat)
            result["settled_s"] = time.time() - beat.launched if kind.settled(size) else None
        result["rows"] = kind.rows()
        beat.read_peak_rss()
        result["memory_mb"] = beat.peak_rss_mb
    finally:
        result["stop_idle_s"] = stop(beat)
        consumer.stop()
    return result


def stop_mid_catch_up(kind, size: int, cap: float) -> float | None:
    """A second beat after the same outage, sent SIGTERM 2 s after its first message."""
    kind.outage()
    bench.empty_broker_and_leases()
    consumer = bench.Consumer()
    consumer.start()
    beat = bench.Beat(kind.scheduler, f"catch-up-{kind.label}-{size}-sigterm")
    beat.start()
    try:
        bench.wait_until(lambda: bool(consumer._raw), beat.launched + cap, beat)
        time.sleep(SIGTERM_AFTER)
        return stop(beat)
    finally:
        consumer.stop()


def stop(beat: bench.Beat) -> float | None:
    """SIGTERM beat's process group; seconds until it exited (None: killed after the cap)."""
    if not beat.alive():
        print(f"  beat exited by itself ({beat.proc.returncode}): see {beat.log_path}")
        return None
    sent = time.time()
    os.killpg(beat.proc.pid, signal.SIGTERM)
    try:
        beat.proc.wait(STOP_CAP)
    except subprocess.TimeoutExpired:
        os.killpg(beat.proc.pid, signal.SIGKILL)
        beat.proc.wait(10)
        return None
    return time.time() - sent


def fmt_s(value: float | None, cap: float) -> str:
    return f"> {cap:.0f} s" if value is None else f"{value:.2f} s"


def table(size: int, cap: float, results: dict[str, dict]) -> str:
    lines = []

    def rows_cell(pair: tuple[int, int] | None) -> str:
        if pair is None:
            return "-"
        rows, times = pair
        return f"{rows:,} rows ({times:,} fire times)"

    def cells(r: dict) -> list[str]:
        sent = r.get("sent", 0)
        last = fmt_s(r.get("last_s"), cap) if sent >= size else f"> {cap:.0f} s ({sent:,} sent)"
        return [
            fmt_s(r.get("first_s"), cap),
            last,
            "-" if r.get("pass_to_last_s") is None else fmt_s(r["pass_to_last_s"], cap),
            rows_cell(r.get("rows_at_last")),
            rows_cell(r.get("rows")),
            fmt_s(r["settled_s"], cap) if "settled_s" in r else "-",
            "-" if r.get("memory_mb") is None else f"{r['memory_mb']:.0f} MB",
            fmt_s(r.get("stop_mid_s"), STOP_CAP),
            fmt_s(r.get("stop_idle_s"), STOP_CAP),
        ]

    labels = [
        "launch -> first job's current fire time",
        "launch -> last job's current fire time",
        "leader's first pass -> last current fire time",
        "rows written by then",
        "rows written in all",
        "launch -> outage recorded and alerted",
        "memory: peak RSS (VmHWM)",
        "SIGTERM mid-catch-up -> exit",
        "SIGTERM at the end -> exit",
    ]
    columns = [(label, cells(r)) for label, r in results.items()]
    grid = [["", *(label for label, _ in columns)]]
    for index, label in enumerate(labels):
        grid.append([label, *(c[index] for _, c in columns)])
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    lines.append(
        f"\n{size:,} interval jobs every {EVERY} s, beat down for {OUTAGE / 3600:g} h "
        f"(grace {GRACE} s), PostgreSQL + Redis"
    )
    for number, row in enumerate(grid):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--only", choices=["ours", "stock"])
    parser.add_argument("--cap", type=float, default=300.0, help="longest wait for each step (s)")
    parser.add_argument("--recreate", action="store_true", help="drop and recreate the database")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = bench.DATABASE_URL
    os.environ["CELERY_BROKER_URL"] = bench.REDIS_URL
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    bench.ensure_database(args.recreate)
    import django

    django.setup()
    import logging

    logging.getLogger("scheduling").setLevel(logging.WARNING)

    kinds = [Ours(), Stock()]
    if args.only:
        kinds = [k for k in kinds if k.label == args.only]
    results: dict[str, dict] = {}
    for kind in kinds:
        bench.empty_database()
        started = time.perf_counter()
        kind.seed(args.jobs)
        print(f"[{kind.label}] {args.jobs:,} jobs created in {time.perf_counter() - started:.1f} s")
        result = measure(kind, args.jobs, args.cap)
        print(f"[{kind.label}] {result}", flush=True)
        result["stop_mid_s"] = stop_mid_catch_up(kind, args.jobs, args.cap)
        print(f"[{kind.label}] SIGTERM mid-catch-up: {fmt_s(result['stop_mid_s'], STOP_CAP)}")
        results[kind.label] = result
    print(table(args.jobs, args.cap, results))


if __name__ == "__main__":
    main()
