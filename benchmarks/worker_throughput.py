"""Worker throughput: no-op runs drained per second by one worker with 2 processes.

Side by side, in one run, each with a real ``celery worker --concurrency 2 --pool
prefork`` process on Redis (db 13 of $BENCH_BROKER_URL, default
redis://127.0.0.1:6379/13) and PostgreSQL (``bench_worker`` on the server of
$BENCH_DATABASE_URL, created if missing); a) to b') run ``benchmarks/noop_worker.py``,
c) runs ``celery -A project worker`` with the project's settings:

a0) a plain no-op Celery task, no result backend, Celery's default worker settings
    (no task events, 4 messages prefetched per process, acknowledged on receipt);
a)  the same with the project's worker settings (task events for Flower, one message
    per process): a) to c) all run with these;
a') the same, acknowledged after the run (``acks_late``, as ``scheduling.run_job``):
    what Celery alone allows c);
b)  the no-op task with stock django-celery-results (extended results, STARTED tracked),
    which opens a database connection per task (Celery's Django fixup closes it after each);
b') the same, keeping the connection for 1,000 tasks (``CELERY_DB_REUSE_MAX``, as the
    project's workers do), to show how much of b)'s cost is the connection;
c)  our ``scheduling.run_job`` for a job running ``demo.noop``, with full recording: the
    execution row (fire time, start, end, duration, outcome, result, worker) and the Celery
    ``TaskResult`` row, under every execution rule (unique fire time, misfire, coalesce,
    max instances with leases), plus the daily statistics and the alert states;
c') the same with the settings of a worker dedicated to many short jobs: 4 messages
    prefetched per process and no task events (``CELERY_WORKER_PREFETCH_MULTIPLIER=4``,
    ``CELERY_WORKER_SEND_TASK_EVENTS=0``; a running Flower switches events back on).

Method: the tables hold ``--history`` past runs, analyzed (as in a system that has been
running); with the worker stopped, N messages are loaded into the queue; then the worker
starts, and the clock runs from the moment it takes the first message (so start-up is
excluded) to the last completion: the last recorded row for b) and c), the queue and its
unacknowledged set both empty for a). Every configuration runs ``--repeat`` times, in
turns; the table shows the best run and the spread. The recorded rows are checked and
counted. Workers run with ``DJANGO_DEBUG`` off, as in production (with it on, Django
keeps every query in memory).

    DJANGO_DEBUG=1 .venv/bin/python benchmarks/worker_throughput.py [--messages 5000]
        [--repeat 2] [--only a,b,c] [--jobs 1] [--history 20000]
"""

import argparse
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_worker")
BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
os.environ["DATABASE_URL"] = URL
os.environ["CELERY_BROKER_URL"] = BROKER
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("VAR_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

QUEUE = "celery"
JOB_NAME = "bench-noop"


@dataclass
class Config:
    key: str
    label: str
    app: str
    env: dict[str, str] = field(default_factory=dict)


CONFIGS = [
    Config(
        "a0",
        "a0) no-op task, no backend, Celery defaults",
        "benchmarks.noop_worker",
        {"BENCH_RESULTS": "none", "BENCH_CELERY_DEFAULTS": "1"},
    ),
    Config(
        "a",
        "a)  no-op task, no result backend",
        "benchmarks.noop_worker",
        {"BENCH_RESULTS": "none"},
    ),
    Config(
        "a'",
        "a') same, acks_late (as run_job)",
        "benchmarks.noop_worker",
        {"BENCH_RESULTS": "none", "BENCH_ACKS_LATE": "1"},
    ),
    Config(
        "a''",
        "a'') a0 acks_late (c')'s settings, no recording)",
        "benchmarks.noop_worker",
        {"BENCH_RESULTS": "none", "BENCH_CELERY_DEFAULTS": "1", "BENCH_ACKS_LATE": "1"},
    ),
    Config(
        "b",
        "b)  no-op task, stock django-celery-results",
        "benchmarks.noop_worker",
        {"BENCH_RESULTS": "stock"},
    ),
    Config(
        "b'",
        "b') same, DB connection kept",
        "benchmarks.noop_worker",
        {"BENCH_RESULTS": "stock", "BENCH_DB_REUSE_MAX": "1000"},
    ),
    Config("c", "c)  scheduling.run_job → demo.noop, ours", "project"),
    Config(
        "c'",
        "c') ours, 4 prefetched, no task events",
        "project",
        {"CELERY_WORKER_PREFETCH_MULTIPLIER": "4", "CELERY_WORKER_SEND_TASK_EVENTS": "0"},
    ),
]


@dataclass
class Outcome:
    rate: float
    seconds: float
    recorded: str


def ensure_database() -> None:
    import psycopg

    name = URL.rsplit("/", 1)[1]
    with psycopg.connect(URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def redis_client():
    import redis

    return redis.Redis.from_url(BROKER)


class QueueWatch(threading.Thread):
    """Samples the queue length and the unacknowledged set every few milliseconds."""

    def __init__(self, total: int) -> None:
        super().__init__(daemon=True)
        self.total = total
        self.first_taken: float | None = None
        self.drained: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        client = redis_client()
        while not self.stop.wait(0.005):
            pipe = client.pipeline()
            pipe.llen(QUEUE)
            pipe.hlen("unacked")
            waiting, unacked = pipe.execute()
            now = time.time()
            if self.first_taken is None and waiting < self.total:
                self.first_taken = now
            if self.first_taken is not None and waiting == 0 and unacked == 0:
                self.drained = self.drained or now
            else:
                self.drained = None


def reset_state(history: int) -> None:
    """Empty queue; tables holding ``history`` past runs of the bench job, analyzed.

    A system that has been running has history, and PostgreSQL plans its queries from
    statistics: measuring on freshly emptied tables would time plans no real system uses
    (on an empty, never analyzed table the planner may scan a whole index for a handful
    of rows).
    """
    from django.db import connection

    from scheduling.models import Job

    redis_client().flushdb()  # our own db (13): nothing else uses it
    job = Job.objects.get(name=JOB_NAME)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE django_celery_results_taskresult, scheduling_jobexecution, "
            "scheduling_jobdailystats, scheduling_jobalertstatus, scheduling_alert"
        )
        cursor.execute(
            """
            INSERT INTO scheduling_jobexecution (job_id, job_name, task, trigger, status,
                scheduled_at, started_at, finished_at, duration, result, exception, traceback,
                worker, reason, attempt, task_id)
            SELECT %s, %s, 'demo.noop', 'schedule', 'success', t, t, t, 0.001, 'null', '', '',
                'history', '', 0, 'history-' || i
            FROM generate_series(1, %s) i
            CROSS JOIN LATERAL (SELECT now() - (i || ' seconds')::interval AS t) x
            """,
            [job.pk, job.name, history],
        )
        cursor.execute(
            """
            INSERT INTO django_celery_results_taskresult (task_id, status, content_type,
                content_encoding, result, date_done, date_created, traceback, meta,
                task_name, periodic_task_name, worker, task_args, task_kwargs)
            SELECT 'history-' || i, 'SUCCESS', 'application/json', 'utf-8', 'null',
                now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval,
                NULL, '{"children": []}', 'history', %s, 'history', '"()"', '"{}"'
            FROM generate_series(1, %s) i
            """,
            [job.name, history],
        )
        cursor.execute("ANALYZE")
    Job.objects.filter(name__startswith=JOB_NAME).update(
        last_run_at=None, last_status="", last_duration=None, total_run_count=0
    )


def bench_job(name: str = JOB_NAME):
    from scheduling import services
    from scheduling.models import Job

    job = Job.objects.filter(name=name).first()
    if job is None:
        # A fire time a year away: only the messages loaded here run. A long grace, so the
        # pre-loaded fire times run (and are not recorded as missed) however slow the drain.
        job = services.job_register_cron(
            name=name,
            task="demo.noop",
            expression="0 0 0 1 1 *",
            misfire_grace_time=3600,
        )
    return job


def publish(config: Config, count: int, jobs: int = 1) -> None:
    from django.utils import timezone

    from project.celery import app
    from scheduling import services
    from scheduling.models import ExecutionTrigger

    with app.producer_pool.acquire(block=True) as producer:
        if config.key.startswith("c"):
            targets = [bench_job(JOB_NAME if i == 0 else f"{JOB_NAME}-{i}") for i in range(jobs)]
            base = timezone.now().replace(microsecond=0)
            for index in range(count):
                services.job_dispatch(
                    job=targets[index % jobs],
                    trigger=ExecutionTrigger.SCHEDULE,
                    scheduled_at=base + dt.timedelta(milliseconds=index),
                    producer=producer,
                )
        else:
            for _ in range(count):
                app.send_task("bench.noop", task_id=str(uuid.uuid4()), producer=producer)


def start_worker(config: Config, log: Path, hostname: str) -> subprocess.Popen:
    env = {
        **os.environ,
        **config.env,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "benchmark-only-secret-key-" + uuid.uuid4().hex,
        "PYTHONUNBUFFERED": "1",
        "C_FORCE_ROOT": "1",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            config.app,
            "worker",
            "--concurrency",
            "2",
            "--pool",
            "prefork",
            "-n",
            hostname,
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def recorded_end(config: Config, count: int) -> float | None:
    """When the last row was recorded, once all ``count`` are; None while some are missing."""
    from django.db.models import Max
    from django_celery_results.models import TaskResult

    from scheduling.models import JobExecution

    if config.key.startswith("a"):
        return None
    results = TaskResult.objects.filter(status="SUCCESS").exclude(task_name="history")
    if results.count() < count:
        return None
    last = results.aggregate(last=Max("date_done"))["last"]
    if config.key.startswith("c"):
        runs = JobExecution.objects.exclude(status="running").exclude(worker="history")
        if runs.count() < count:
            return None
        last = max(last, runs.aggregate(last=Max("finished_at"))["last"])
    return last.timestamp()


def verify(config: Config, count: int) -> str:
    """Check that every message was recorded as the configuration says; describe it."""
    from django_celery_results.models import TaskResult

    from scheduling.models import JobExecution

    results = TaskResult.objects.exclude(task_name="history")
    executions = JobExecution.objects.exclude(worker="history")
    if config.key.startswith("a"):
        assert results.count() == 0, "configuration a) must not record anything"
        return "nothing (no result backend)"
    assert results.filter(status="SUCCESS").count() == count
    if not config.key.startswith("c"):
        assert results.filter(task_name="bench.noop", date_started__isnull=False).count() == count
        assert not executions.exists()
        return f"{count:,} TaskResult (stock: STARTED, then SUCCESS)"
    runs = executions.filter(
        status="success",
        trigger="schedule",
        scheduled_at__isnull=False,
        started_at__isnull=False,
        finished_at__isnull=False,
        duration__isnull=False,
        result="null",
    ).exclude(worker="")
    assert runs.count() == count == executions.count(), executions.count()
    linked = runs.filter(task_result_id__in=results.values("task_id")).count()
    assert linked == count, f"only {linked} executions have their TaskResult row"
    assert (
        results.filter(
            task_name="scheduling.run_job", periodic_task_name__startswith=JOB_NAME
        ).count()
        == count
    )
    return f"{count:,} TaskResult + {count:,} JobExecution, linked"


def worker_total(hostname: str) -> int:
    from project.celery import app

    replies = app.control.inspect(destination=[hostname], timeout=2).stats() or {}
    return sum(replies.get(hostname, {}).get("total", {}).values())


def measure(
    config: Config, count: int, log_dir: Path, attempt: int, jobs: int, history: int
) -> Outcome:
    reset_state(history)
    publish(config, count, jobs)
    waiting = redis_client().llen(QUEUE)
    assert waiting == count, f"{waiting} messages in the queue, expected {count}"
    watch = QueueWatch(count)
    watch.start()
    hostname = f"bench-{config.key.replace(chr(39), 'x')}-{attempt}@{os.uname().nodename}"
    proc = start_worker(config, log_dir / f"worker-{config.key}-{attempt}.log", hostname)
    try:
        deadline = time.monotonic() + 600
        while True:
            time.sleep(0.2)
            if proc.poll() is not None:
                raise RuntimeError(f"worker {config.key} exited; see {log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {config.key} did not finish in 600 s")
            if watch.drained is None:
                continue
            if config.key.startswith("a"):
                end = watch.drained
                break
            end = recorded_end(config, count)
            if end is not None:
                break
        done = worker_total(hostname)
        assert done == count, f"the worker ran {done} tasks, expected {count}"
    finally:
        watch.stop.set()
        stop_worker(proc)
    seconds = end - watch.first_taken
    return Outcome(rate=count / seconds, seconds=seconds, recorded=verify(config, count))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000, help="messages per measurement")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per configuration")
    parser.add_argument(
        "--history", type=int, default=20000, help="past runs in the tables (analyzed)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="c): spread the messages over this many jobs"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated configurations to run, e.g. a,c (default all)"
    )
    args = parser.parse_args()
    # Stopped from outside: still stop the worker (in measure's finally) before leaving.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    chosen = [c for c in CONFIGS if not args.only or c.key in args.only.split(",")]

    ensure_database()
    import django

    django.setup()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    log_dir = Path(os.environ["VAR_DIR"]) / "worker-throughput"
    log_dir.mkdir(parents=True, exist_ok=True)
    bench_job()

    results: dict[str, list[Outcome]] = {}
    for attempt in range(1, args.repeat + 1):
        for config in chosen:
            outcome = measure(config, args.messages, log_dir, attempt, args.jobs, args.history)
            results.setdefault(config.key, []).append(outcome)
            print(
                f"  run {attempt} {config.label}: {outcome.rate:7.1f}/s "
                f"({args.messages:,} in {outcome.seconds:.2f}s)",
                flush=True,
            )

    best = {key: max(o.rate for o in outcomes) for key, outcomes in results.items()}
    print(
        f"\nWorker throughput: 1 worker, --concurrency 2 --pool prefork, Redis {BROKER}, "
        f"PostgreSQL {URL.rsplit('/', 1)[1]}; {args.messages:,} no-op messages pre-loaded; "
        f"best of {args.repeat} (spread = worst..best)\n"
    )
    width = max(len(c.label) for c in chosen)
    header = f"{'configuration':<{width}}  {'runs/s':>7}  {'spread':>15}  {'vs a)':>6}  {'vs b)':>6}  recorded (checked)"
    print(header)
    print("-" * len(header))
    for config in chosen:
        outcomes = results[config.key]
        rates = [o.rate for o in outcomes]
        spread = f"{min(rates):.0f}..{max(rates):.0f}"
        vs_a = f"{best[config.key] / best['a']:.2f}" if "a" in best else "-"
        vs_b = f"{best[config.key] / best['b']:.2f}" if "b" in best else "-"
        print(
            f"{config.label:<{width}}  {best[config.key]:7.1f}  {spread:>15}  {vs_a:>6}  "
            f"{vs_b:>6}  {outcomes[-1].recorded}"
        )
    if len(rates) > 1:
        print(
            "\n(median of all runs: "
            + ", ".join(
                f"{key} {statistics.median(o.rate for o in outs):.0f}/s"
                for key, outs in results.items()
            )
            + ")"
        )


if __name__ == "__main__":
    main()
